"""Finding and reading the spec's JSON Schema (``gateway.schema.json``) without importing jsonschema.

The wheel carries the schema inside the package (``compiler/schema/gateway.schema.json``); in a
source checkout or an editable install it is the repository's ``schema/gateway.schema.json``.
"""

from __future__ import annotations

import functools
import importlib.resources
import json
from pathlib import Path
from typing import Any

__all__ = ["SCHEMA_NAME", "load_schema", "schema_text"]

SCHEMA_NAME = "gateway.schema.json"
"""The schema's file name, inside the package and in the repository."""


@functools.cache
def schema_text() -> str:
    """The schema file's text, exactly as shipped."""
    packaged = importlib.resources.files("sidegate.compiler") / "schema" / SCHEMA_NAME
    if packaged.is_file():
        return packaged.read_text(encoding="utf-8")
    return (Path(__file__).resolve().parent.parent / "schema" / SCHEMA_NAME).read_text(encoding="utf-8")


@functools.cache
def load_schema() -> dict[str, Any]:
    """The schema as JSON data (parsed once; treat it as read-only)."""
    schema: dict[str, Any] = json.loads(schema_text())
    return schema
