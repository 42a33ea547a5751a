"""An S3-compatible bucket (docs/storage.md): its settings, and ``ObjectStore``, the one place
boto3 is called.

boto3 is optional (the ``s3`` extra) and imported only when a run uses storage. It is
synchronous, so every call runs in a worker thread, at most ``MAX_CALLS`` at a time (one
``CapacityLimiter``): the event loop never waits on the bucket. Credentials come only from
boto3's standard chain (``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``/``AWS_SESSION_TOKEN``,
profiles, instance roles); the secret key and session token it finds are registered with
``flux_pipeline.redact``, so no output ever shows them (docs/secrets.md).

Keys are content-addressed (``<prefix>/refs/sha256/<hex>.<ext>``,
``<prefix>/outputs/sha256/<hex>.<ext>``): an object, once there, is never written again.
"""

from __future__ import annotations

import functools
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

import anyio
from pydantic import ValidationError

from flux_pipeline import redact
from flux_pipeline.errors import OutputsNotWritableError, UsageError
from flux_pipeline.manifest.models import Storage

EXTRA_HINT = "storage needs the s3 extra: pip install 'flux-kontext-pipeline[s3]'"
MAX_CALLS = 8  # boto3 calls in flight at once (worker threads)
PRESIGN_REUSE = 0.1  # a presigned URL is handed out again while this share of its life is gone
PROBE_NAME = ".flux-pipeline-write-check"
# flag or environment variable -> the setting it overrides (docs/storage.md: precedence)
ENVIRONMENT = {
    "bucket": "FLUX_PIPELINE_S3_BUCKET",
    "prefix": "FLUX_PIPELINE_S3_PREFIX",
    "endpoint_url": "FLUX_PIPELINE_S3_ENDPOINT",
}
MIME = {"jpg": "image/jpeg", "png": "image/png", "webp": "image/webp"}
EXTENSION = {"jpeg": "jpg", "png": "png", "webp": "webp"}

T = TypeVar("T")


class StorageError(OutputsNotWritableError):
    """The bucket could not be read or written (exit 2, one line)."""


@dataclass(frozen=True, kw_only=True)
class StorageSettings:
    bucket: str
    prefix: str = ""
    endpoint_url: str | None = None
    region: str | None = None
    url_lifetime: int = 6 * 3600
    publish: bool = False

    def key(self, *parts: str) -> str:
        return "/".join(p for p in (self.prefix, *parts) if p)

    def ref_key(self, sha256: str, extension: str) -> str:
        """Where a reference image (a local file, a stale parent's output) is stored."""
        return self.key("refs", "sha256", f"{sha256}.{extension}")

    def output_key(self, sha256: str, extension: str) -> str:
        """Where a published output image is stored."""
        return self.key("outputs", "sha256", f"{sha256}.{extension}")

    def report_key(self, manifest: str, name: str) -> str:
        """Where a published report file (or the lock) of ``manifest`` is stored."""
        return self.key("reports", manifest, name)

    @property
    def where(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}".rstrip("/")


def storage_settings(
    section: Storage | None,
    *,
    flags: Mapping[str, str | None],
    environ: Mapping[str, str],
    publish: bool = False,
) -> StorageSettings | None:
    """The run's storage: the manifest's ``storage`` section, each of bucket, prefix and
    endpoint overridden by its environment variable, and that by its flag. None: no storage
    (no section, no bucket given). Raises ``UsageError`` (one line) for a bad value."""
    values: dict[str, Any] = section.model_dump() if section is not None else {}
    given = section is not None
    for name, variable in ENVIRONMENT.items():
        value = flags.get(name) or environ.get(variable, "").strip() or None
        if value is not None:
            values[name], given = value, True
    if not given:
        if publish:
            raise UsageError("--publish needs storage: a `storage:` section or --storage-bucket")
        return None
    try:
        checked = Storage.model_validate(values)
    except ValidationError as exc:
        error = exc.errors()[0]
        where = ".".join(str(p) for p in error["loc"])
        raise UsageError(f"storage: {where}: {error['msg']}") from None
    if checked.bucket is None:
        raise UsageError(
            f"storage needs a bucket: storage.bucket, --storage-bucket or ${ENVIRONMENT['bucket']}"
        )
    return StorageSettings(
        bucket=checked.bucket,
        prefix=checked.prefix,
        endpoint_url=checked.endpoint_url,
        region=checked.region,
        url_lifetime=checked.url_lifetime,
        publish=checked.publish or publish,
    )


def require_boto3() -> Any:
    """The boto3 module, or ``UsageError`` with the extra to install."""
    try:
        import boto3
    except ImportError:
        raise UsageError(EXTRA_HINT) from None
    return boto3


def _problem(exc: Exception) -> str:
    """One line for a boto3 error (never its request: that carries no secret, but is long)."""
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return redact.scrub(f"{type(exc).__name__}: {text}")


def _missing(exc: Exception) -> bool:
    response = getattr(exc, "response", None)
    if not isinstance(response, dict):
        return False
    code = str(response.get("Error", {}).get("Code", ""))
    status = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    return code in ("404", "NoSuchKey", "NotFound") or status == 404


class ObjectStore:
    """The bucket of ``settings``: existence checks, uploads, downloads, presigned URLs."""

    def __init__(self, settings: StorageSettings, client: Any) -> None:
        self.settings = settings
        self._client = client
        self.limiter = anyio.CapacityLimiter(MAX_CALLS)
        self._urls: dict[str, tuple[str, float]] = {}  # key -> (URL, when it was made)
        self.uploaded = 0  # objects this run wrote (the write check not counted)
        self._counting = threading.Lock()

    def __repr__(self) -> str:
        return f"ObjectStore({self.settings.where})"

    @classmethod
    async def connect(cls, settings: StorageSettings) -> ObjectStore:
        """A client from boto3's credential chain (read in a worker thread: it reads files)."""
        boto3 = require_boto3()
        return cls(settings, await anyio.to_thread.run_sync(_client, boto3, settings))

    async def call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """``fn(*args, **kwargs)`` in a worker thread, bounded with every other boto3 call."""
        call = functools.partial(fn, *args, **kwargs)
        return await anyio.to_thread.run_sync(call, limiter=self.limiter)

    # --- in a worker thread (``call``) ---------------------------------------------------

    def exists(self, key: str) -> bool:
        try:
            self._client.head_object(Bucket=self.settings.bucket, Key=key)
        except Exception as exc:
            if _missing(exc):
                return False
            raise StorageError(f"storage {self.settings.where}: {_problem(exc)}") from None
        return True

    def put(self, key: str, body: bytes, content_type: str) -> None:
        try:
            self._client.put_object(
                Bucket=self.settings.bucket, Key=key, Body=body, ContentType=content_type
            )
        except Exception as exc:
            raise StorageError(f"storage: cannot write {key}: {_problem(exc)}") from None
        with self._counting:
            self.uploaded += 1

    def put_once(self, key: str, body: Callable[[], bytes], content_type: str) -> bool:
        """Upload ``body()`` unless ``key`` is there already (content-addressed: the same
        bytes). True if uploaded."""
        if self.exists(key):
            return False
        self.put(key, body(), content_type)
        return True

    def get(self, key: str, max_bytes: int) -> bytes:
        try:
            answer = self._client.get_object(Bucket=self.settings.bucket, Key=key)
            body = answer["Body"]
            content: bytes = body.read(max_bytes + 1)
            body.close()
        except Exception as exc:
            raise StorageError(f"storage: cannot read {key}: {_problem(exc)}") from None
        if len(content) > max_bytes:
            raise StorageError(f"storage: {key} is larger than {max_bytes} bytes")
        return content

    def check_writable(self) -> None:
        """Write a small object: the bucket is reachable, and these credentials may write."""
        self.put(self.settings.key(PROBE_NAME), b"flux-pipeline write check\n", "text/plain")
        with self._counting:
            self.uploaded -= 1

    def presign(self, key: str) -> str:
        """A GET URL of ``key`` valid for ``url_lifetime``; one made lately is reused."""
        lifetime = self.settings.url_lifetime
        now = time.monotonic()
        made = self._urls.get(key)
        if made is not None and now - made[1] < lifetime * PRESIGN_REUSE:
            return made[0]
        url: str = self._client.generate_presigned_url(
            "get_object",
            Params={"Bucket": self.settings.bucket, "Key": key},
            ExpiresIn=lifetime,
        )
        self._urls[key] = (url, now)
        return url


def _client(boto3: Any, settings: StorageSettings) -> Any:
    from botocore.config import Config

    session = boto3.session.Session()
    credentials = session.get_credentials()
    if credentials is not None:
        frozen = credentials.get_frozen_credentials()
        redact.register(frozen.secret_key or "", frozen.token or "")
    config = Config(
        signature_version="s3v4",
        s3={"addressing_style": "path" if settings.endpoint_url else "auto"},
        retries={"max_attempts": 5, "mode": "standard"},
        connect_timeout=10,
        read_timeout=60,
    )
    return session.client(
        "s3", endpoint_url=settings.endpoint_url, region_name=settings.region, config=config
    )
