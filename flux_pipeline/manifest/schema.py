"""The manifest's JSON Schema, generated from the pydantic models (docs/manifest.md).

A copy is published as ``flux_pipeline/manifest.schema.json`` (editors point at it with a
``# yaml-language-server: $schema=...`` modeline); a test keeps it equal to ``schema_text()``.
Regenerate it with ``flux-pipeline schema > flux_pipeline/manifest.schema.json``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from flux_pipeline.manifest.models import Manifest

PUBLISHED = Path(__file__).parents[1] / "manifest.schema.json"
DRAFT = "https://json-schema.org/draft/2020-12/schema"


def manifest_schema() -> dict[str, Any]:
    schema = Manifest.model_json_schema(by_alias=True, mode="validation")
    return {"$schema": DRAFT, **schema}


def schema_text() -> str:
    return json.dumps(manifest_schema(), indent=2, ensure_ascii=False) + "\n"
