"""When is a downloaded task done? The one rule, for ``run``, ``plan`` and ``merge``
(docs/resume.md, "When is a task done?").

A downloaded task is done when every output it recorded is a file at its path, of the
recorded size, whose content has the recorded SHA-256. Reading a whole file to hash it is
skipped when the output's memo (``OutputRecord.mtime_ns``, the ``mtime_ns`` column of the
state DB's ``outputs`` table) equals the file's ``st_mtime_ns`` and the size is right: the
file is then the one we wrote (the downloader records the ``st_mtime_ns`` of the file it just
renamed into place) or the one a previous check hashed and found right. A NULL memo (a row of
an older DB, a row ``merge`` wrote) or a different ``mtime_ns`` means one hash; when that
hash is right, the check hands back a new memo for the caller to record.

The memo's limit: a file replaced by one of the same size and the same ``st_mtime_ns`` (set
by ``os.utime`` or ``touch -r``, or copied with its timestamps kept, as ``cp -p``,
``rsync -t`` or an archive can do) is taken as intact without being read. ``merge`` never
trusts a memo (its rows' memos describe files of other directories) and always hashes.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

from flux_pipeline import media
from flux_pipeline.states import OutputRecord, TaskRecord, TaskState

Hasher = Callable[[Path], str]  # a file's SHA-256, hex


class Memo(NamedTuple):
    """Output ``output_index`` of task ``key`` was found right while its file had
    ``mtime_ns`` (the parameters of ``Store.refresh_memos``)."""

    key: str
    output_index: int
    mtime_ns: int


@dataclass(slots=True)
class Verifier:
    """Applies the rule to outputs under ``out``; counts the files it hashed and collects the
    memos to record. ``use_memo=False`` hashes every file of the right size; ``hasher``
    defaults to ``media.sha256_file`` (looked up at each call)."""

    out: Path
    use_memo: bool = True
    hasher: Hasher | None = None
    hashed: int = 0
    memos: list[Memo] = field(default_factory=list)

    def output(self, path: Path, key: str, output: OutputRecord) -> bool:
        """Is ``path`` the file ``output`` recorded (size, then memo or SHA-256)?

        The memo's limit: a file of the recorded size whose ``st_mtime_ns`` equals the memo
        (forced with ``os.utime``, or copied with its timestamps) is not read, so other bytes
        there pass; ``use_memo=False`` reads it."""
        try:
            seen = os.stat(path)
        except OSError:
            return False
        if not stat.S_ISREG(seen.st_mode) or seen.st_size != output.bytes:
            return False
        if self.use_memo and output.mtime_ns is not None and seen.st_mtime_ns == output.mtime_ns:
            return True
        self.hashed += 1
        hasher = self.hasher or media.sha256_file
        try:
            right = hasher(path) == output.sha256
        except OSError:
            return False
        if right and seen.st_mtime_ns != output.mtime_ns:
            # the mtime seen before reading: a file changed while hashed is hashed again
            self.memos.append(Memo(key, output.index, seen.st_mtime_ns))
        return right

    def task(self, key: str, outputs: Sequence[OutputRecord]) -> bool:
        """Are all of a downloaded task's outputs intact (and is there at least one)?"""
        return bool(outputs) and all(self.output(self.out / o.path, key, o) for o in outputs)


@dataclass(frozen=True, slots=True)
class Verification:
    intact: set[str]  # keys of the downloaded tasks that are done
    memos: list[Memo]  # for the store to record (``Store.refresh_memos``)
    hashed: int  # files read in full


def verify_downloaded(
    records: Iterable[TaskRecord], out: Path, *, hasher: Hasher | None = None
) -> Verification:
    """The rule over every downloaded task of ``records``; synchronous (a worker thread)."""
    verifier = Verifier(out, hasher=hasher)
    intact = {
        r.key
        for r in records
        if r.state is TaskState.DOWNLOADED and verifier.task(r.key, r.outputs)
    }
    return Verification(intact, verifier.memos, verifier.hashed)


def written_mtime_ns(path: Path) -> int | None:
    """The memo of a file we just wrote: its ``st_mtime_ns``, None if it cannot be read."""
    try:
        return os.stat(path).st_mtime_ns
    except OSError:
        return None
