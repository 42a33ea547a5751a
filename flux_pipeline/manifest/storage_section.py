"""The manifest's ``storage`` section (docs/storage.md): an S3-compatible bucket, validated
like the rest of the manifest (``flux_pipeline/manifest/models.py`` uses it)."""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictInt,
    StringConstraints,
    WithJsonSchema,
)
from pydantic_core import PydanticCustomError


class _Model(BaseModel):  # as manifest/models.py's: unknown keys refused, frozen
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


MAX_URL_LIFETIME = 7 * 24 * 3600  # S3's longest presigned URL (SigV4)
DEFAULT_URL_LIFETIME = 6 * 3600
_DURATION = re.compile(r"^(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?$")
DURATION_HINT = "a duration such as 90s, 30m, 6h, 1d12h (at most 7d), or seconds"


def duration_seconds(value: Any) -> Any:
    """``"1d12h"``, ``"90m"``, ``3600`` -> seconds (an int); anything else is left for the
    type check to refuse."""
    if isinstance(value, bool) or not isinstance(value, int | str):
        return value
    if isinstance(value, int):
        return value
    match = _DURATION.match(value.strip())
    if not value.strip() or match is None or not any(match.groups()):
        raise PydanticCustomError("duration", "expected {hint}", {"hint": DURATION_HINT})
    days, hours, minutes, seconds = (int(g) if g else 0 for g in match.groups())
    return ((days * 24 + hours) * 60 + minutes) * 60 + seconds


Lifetime = Annotated[
    StrictInt,
    BeforeValidator(duration_seconds),
    Field(ge=1, le=MAX_URL_LIFETIME),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "integer", "minimum": 1, "maximum": MAX_URL_LIFETIME},
                {"type": "string", "pattern": _DURATION.pattern},
            ],
            "description": DURATION_HINT,
        }
    ),
]


class Storage(_Model):
    """An S3-compatible bucket (docs/storage.md): local reference images are uploaded there and
    sent as presigned URLs; with ``publish`` the outputs and reports are copied there too.
    Credentials never go here: boto3's standard chain (environment, profiles) provides them."""

    bucket: (
        Annotated[
            str,
            StringConstraints(pattern=r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$"),
            Field(description="the bucket's name (S3 rules: 3-63 lowercase letters, digits, . -)"),
        ]
        | None
    ) = Field(default=None, description="or --storage-bucket / $FLUX_PIPELINE_S3_BUCKET")
    prefix: Annotated[
        str,
        StringConstraints(pattern=r"^([A-Za-z0-9._-]+(/[A-Za-z0-9._-]+)*)?$", max_length=200),
    ] = Field(
        default="flux-pipeline",
        description="where in the bucket, without a leading or trailing slash",
    )
    endpoint_url: (
        Annotated[str, StringConstraints(pattern=r"^https?://[^\s/?#]+(/[^\s?#]*)?$")] | None
    ) = Field(
        default=None,
        description="an S3-compatible service (R2, MinIO, ...); default: AWS S3",
    )
    region: Annotated[str, StringConstraints(min_length=1, max_length=50)] | None = Field(
        default=None, description="the bucket's region (R2: auto)"
    )
    url_lifetime: Lifetime = Field(
        default=DEFAULT_URL_LIFETIME,
        description="how long a presigned URL of a reference image lives (default 6h, max 7d)",
    )
    publish: bool = Field(
        default=False, description="copy every downloaded image and the reports to the bucket"
    )
