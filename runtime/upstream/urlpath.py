"""Client input is data, never URL syntax: the one helper every adapter uses to put a client-chosen
value (a wildcard group's model name) into an upstream URL, and the check that refuses model names
no upstream could take before a request is routed."""

from __future__ import annotations

import re
from urllib.parse import quote

from sidegate.runtime.errors import BadRequest

__all__ = ["MAX_MODEL_NAME", "check_model_name", "path_segment"]

MAX_MODEL_NAME = 512
"""Characters a client's model name may have (Bedrock ARNs and inference profiles fit easily)."""

_REFUSED = re.compile(r"[\x00-\x20\x7f-\x9f\u2028\u2029]|\s")


def path_segment(value: str) -> str:
    """`value` as exactly one URL path segment: everything but unreserved characters and `@`
    percent-encoded (`/`, `?`, `#`, `%`, `:`, spaces, CR/LF...), and the dot segments `.` and `..`
    encoded too, so no value can climb the path, start a query or a fragment, or split the line."""
    out = quote(value, safe="@")
    if out in (".", ".."):
        return out.replace(".", "%2E")
    return out


def check_model_name(name: str, param: str = "model") -> None:
    """Refuse (400, `param: model`) a name longer than :data:`MAX_MODEL_NAME` or holding control
    characters or whitespace; the message never repeats the name."""
    if len(name) > MAX_MODEL_NAME:
        raise BadRequest(f"'{param}' is {len(name):,} characters long; the limit is {MAX_MODEL_NAME}",
                         param=param, code="invalid_model")
    if _REFUSED.search(name) is not None:
        raise BadRequest(f"'{param}' must not contain whitespace or control characters", param=param,
                         code="invalid_model")
