"""Downloading a finished task's images (docs/engine.md): a bounded number at once, each
output retried a few times, the outputs recorded once every one of them is on disk.

An expired result URL expires the task; an invalid image fails it, and so does an output path
that leads outside the output directory when it is written (``OUTPUT_OUTSIDE``: every path is
resolved against the output directory, links included, right before each attempt; nothing is
written outside), and a result URL that cannot be fetched at all (``INVALID_RESULT_URL``: a
rerun does not try it again unless told to retry failed tasks); a download that keeps
failing leaves the task ``succeeded`` (in flight: a rerun downloads it again), and so does any
exception nobody expected, recorded as the task's reason and counted (``Ledger.unexpected``).
Cancellation always goes through.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import anyio
import httpx
from anyio.abc import TaskGroup

from flux_pipeline.errors import DownloadError, InvalidResultError, ResultExpiredError
from flux_pipeline.layout import inside as safe_join
from flux_pipeline.outcome import Bucket
from flux_pipeline.plan.tasks import TaskSpec
from flux_pipeline.report.thumbs import ensure_thumb_in_thread
from flux_pipeline.run.downloads import (
    INVALID_RESULT_URL,
    OUTPUT_OUTSIDE,
    Downloaded,
    InvalidResultUrlError,
    OutputOutsideError,
    download,
)
from flux_pipeline.run.ledger import Control, Ledger, describe
from flux_pipeline.run.state_store import StateStore
from flux_pipeline.run.verify import written_mtime_ns
from flux_pipeline.states import OutputRecord

RETRY_PAUSE_BASE = 0.25  # seconds x 2^attempt between two attempts at one output
RETRY_PAUSE_CAP = 10.0

Fetch = Callable[[httpx.AsyncClient, str, Path], Awaitable[Downloaded]]


@dataclass(frozen=True, kw_only=True)
class DownloadSettings:
    out_dir: Path
    max_downloads: int = 16
    attempts: int = 5
    # every download failed for this long (the result host unreachable): stop, resumable.
    # Each failed task holds a slot through its attempts (about 8 s), so without it a run
    # with thousands of results to fetch from a host that is gone would take hours.
    down_after: float = 120.0


def _confined(out_dir: Path, path: str, spec: TaskSpec, url: str) -> Path:
    """``out_dir / path``, checked at write time with the links now in ``out_dir`` resolved;
    ``OutputOutsideError`` (the task fails, nothing is written) when it leads outside."""
    try:
        return safe_join(out_dir, path)
    except ValueError as exc:
        raise OutputOutsideError(
            f"{spec.readable_id}: {exc} {out_dir} (a link there points elsewhere); "
            "nothing was written",
            url=url,
        ) from None


class Downloader:
    def __init__(
        self,
        *,
        ledger: Ledger,
        store: StateStore,
        http: httpx.AsyncClient,
        settings: DownloadSettings,
        control: Control,
        on_done: Callable[[TaskSpec, tuple[str, ...]], Awaitable[None]],
        fetch: Fetch = download,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._ledger = ledger
        self._store = store
        self._http = http
        self._settings = settings
        self._control = control
        self._on_done = on_done
        self._fetch = fetch
        self._slots = anyio.CapacityLimiter(settings.max_downloads)
        self._deferred: list[tuple[TaskSpec, tuple[str, ...]]] = []
        self._tg: TaskGroup | None = None
        self._clock = clock
        self._failing_since: float | None = None  # the first failure since the last success

    def start(self, spec: TaskSpec, urls: tuple[str, ...]) -> None:
        """Download ``spec``'s results now, or as soon as ``run`` gives a task group."""
        self._ledger.downloading[spec.key] = (spec, urls)
        if self._tg is None:  # while resuming: the task group starts right after
            self._deferred.append((spec, urls))
            return
        self._tg.start_soon(self._download, spec, urls)

    def attach(self, tg: TaskGroup | None) -> None:
        """Start downloads in ``tg`` from now on (None: defer them again)."""
        self._tg = tg
        if tg is not None:
            for spec, urls in self._deferred:
                tg.start_soon(self._download, spec, urls)
            self._deferred.clear()

    async def _download(self, spec: TaskSpec, urls: tuple[str, ...]) -> None:
        """Cancelled (the run's hard stop), the task stays counted as downloading."""
        ledger = self._ledger
        started = self._clock()
        try:
            outputs = await self._fetch_all(spec, urls)
        except ResultExpiredError as exc:
            self._store.mark_expired(spec.key, str(exc))
            del ledger.downloading[spec.key]
            ledger.settle(Bucket.EXPIRED, spec, urls)
        except OutputOutsideError as exc:
            self._store.mark_failed(spec.key, OUTPUT_OUTSIDE, str(exc))
            del ledger.downloading[spec.key]
            ledger.settle(Bucket.FAILED, spec, urls)
            self._control.note_error(exc)
        except InvalidResultUrlError as exc:
            self._store.mark_failed(spec.key, INVALID_RESULT_URL, str(exc))
            del ledger.downloading[spec.key]
            ledger.settle(Bucket.FAILED, spec, urls)
            self._control.note_error(exc)
        except InvalidResultError as exc:
            self._store.mark_failed(spec.key, "INVALID_RESULT", str(exc))
            del ledger.downloading[spec.key]
            ledger.settle(Bucket.FAILED, spec, urls)
        except DownloadError as exc:
            del ledger.downloading[spec.key]
            ledger.settle(Bucket.IN_FLIGHT, spec, urls)  # succeeded: a rerun downloads it
            self._control.note_error(exc)
            self._failed(exc, started)
        except Exception as exc:  # a bug or a surprise: this task only, recorded and counted
            del ledger.downloading[spec.key]
            ledger.unexpected += 1
            reason = f"unexpected {describe(exc)}"
            ledger.hold(spec, f"download: {reason}", urls)  # succeeded: a rerun tries again
            self._control.note_error(DownloadError(f"{spec.readable_id}: held: {reason}"))
        else:
            self._failing_since = None
            self._store.mark_downloaded(spec.key, outputs)
            ledger.settle(Bucket.DONE, spec, urls)
            # still counted as downloading until its chained tasks are queued, all of them:
            # the run must not see nothing left to do in between
            with anyio.CancelScope(shield=True):
                await self._on_done(spec, urls)
            del ledger.downloading[spec.key]
        ledger.notify()

    def _failed(self, exc: DownloadError, started: float) -> None:
        """A task's download, begun at ``started``, failed after all its attempts: once no
        download has succeeded for ``down_after`` seconds since the first failing one began,
        the run stops (resumable). The tasks not downloaded stay succeeded at the API, and a
        rerun fetches them."""
        if self._failing_since is None:
            self._failing_since = started
        failing = self._clock() - self._failing_since
        if failing > self._settings.down_after:
            self._control.request_stop(f"every download failed for {failing:.0f}s: {exc}")

    async def _fetch_all(self, spec: TaskSpec, urls: tuple[str, ...]) -> list[OutputRecord]:
        outputs = []
        attempts = self._settings.attempts
        paths = spec.output_paths(len(urls))
        async with self._slots:
            for index, (url, path) in enumerate(zip(urls, paths, strict=True)):
                for attempt in range(1, attempts + 1):
                    dest = _confined(self._settings.out_dir, path, spec, url)  # at write time
                    try:
                        got = await self._fetch(self._http, url, dest)
                        break
                    except (ResultExpiredError, InvalidResultError):
                        raise
                    except DownloadError:
                        if attempt == attempts:
                            raise
                        await anyio.sleep(min(RETRY_PAUSE_CAP, RETRY_PAUSE_BASE * 2**attempt))
                memo = written_mtime_ns(dest)  # the file we just wrote (run/verify.py)
                # the gallery's thumbnail, off the event loop; a bad image just gets none
                await ensure_thumb_in_thread(self._settings.out_dir, dest, got.sha256)
                outputs.append(
                    OutputRecord(
                        index=index,
                        path=path,
                        url=url,
                        bytes=got.bytes,
                        sha256=got.sha256,
                        mtime_ns=memo,
                    )
                )
        return outputs
