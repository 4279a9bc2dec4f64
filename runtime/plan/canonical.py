"""Canonical JSON for plans: dump, load (with validation of shape and digest), and the digest.

The canonical form is sorted keys, no insignificant whitespace, UTF-8; the digest is the sha256 of
the canonical form of the plan body. Files are written indented for diffing; the digest does not
depend on formatting or key order.
"""

from __future__ import annotations

import dataclasses
import enum
import hashlib
import json
import types
import typing
from collections.abc import Mapping
from typing import Any, Union, get_args, get_origin, get_type_hints

from sidegate.runtime.plan import PLAN_VERSION, JSONValue, Plan

__all__ = ["PlanFormatError", "digest", "dumps", "loads", "to_json_obj"]


class PlanFormatError(ValueError):
    """A plan file that is not a plan this runtime can execute."""


def to_json_obj(value: object) -> Any:
    """Turn a plan value into plain JSON data (dicts, lists, scalars)."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: to_json_obj(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, tuple):
        return [to_json_obj(v) for v in value]
    if isinstance(value, Mapping):
        return {str(k): to_json_obj(v) for k, v in value.items()}
    return value


def _canonical(obj: Any) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def digest(plan: Plan) -> str:
    """sha256 of the plan's canonical JSON, as `sha256:<hex>`."""
    return "sha256:" + hashlib.sha256(_canonical(to_json_obj(plan))).hexdigest()


def dumps(plan: Plan) -> str:
    """The plan file: `{"digest": ..., "plan": {...}}`, indented, keys sorted, newline-terminated."""
    body = to_json_obj(plan)
    doc = {"digest": digest(plan), "plan": body}
    return json.dumps(doc, sort_keys=True, indent=2, ensure_ascii=False) + "\n"


def loads(text: str | bytes) -> Plan:
    """Read a plan file; checks its version, every field's type, and the digest."""
    try:
        doc = json.loads(text)
    except ValueError as exc:
        raise PlanFormatError(f"not JSON: {exc}") from None
    if not isinstance(doc, dict) or "plan" not in doc:
        raise PlanFormatError("not a plan file: expected an object with 'plan' and 'digest'")
    body = doc["plan"]
    if not isinstance(body, dict) or body.get("version") != PLAN_VERSION:
        found = body.get("version") if isinstance(body, dict) else None
        raise PlanFormatError(f"plan version {found!r} is not {PLAN_VERSION}; recompile the spec")
    plan = _decode(Plan, body, "/plan")
    assert isinstance(plan, Plan)
    if doc.get("digest") != digest(plan):
        raise PlanFormatError("digest mismatch: the plan was edited after it was compiled")
    return plan


def _freeze_json(value: Any, where: str) -> JSONValue:
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, list):
        return tuple(_freeze_json(v, f"{where}/{i}") for i, v in enumerate(value))
    if isinstance(value, dict):
        return types.MappingProxyType({str(k): _freeze_json(v, f"{where}/{k}") for k, v in value.items()})
    raise PlanFormatError(f"{where}: not a JSON value")


_HINTS: dict[type, dict[str, Any]] = {}


def _is_json_value(tp: Any) -> bool:
    # get_type_hints evaluates JSONValue's self-reference only one level deep: nested levels are a
    # copy of the union (not `JSONValue` itself) or a bare ForwardRef('JSONValue').
    if tp is JSONValue or (isinstance(tp, typing.ForwardRef) and tp.__forward_arg__ == "JSONValue"):
        return True
    return get_origin(tp) in (Union, types.UnionType) and {type(None), bool, int, float, str} <= set(get_args(tp))


def _decode(tp: Any, value: Any, where: str) -> Any:
    if _is_json_value(tp):
        return _freeze_json(value, where)
    origin = get_origin(tp)
    if origin in (Union, types.UnionType):
        options = get_args(tp)
        if value is None and type(None) in options:
            return None
        errors = []
        for option in options:
            if option is type(None):
                continue
            try:
                return _decode(option, value, where)
            except PlanFormatError as exc:
                errors.append(str(exc))
        raise PlanFormatError(errors[0] if errors else f"{where}: unexpected null")
    if origin is tuple:
        if not isinstance(value, list):
            raise PlanFormatError(f"{where}: expected an array")
        (item,) = get_args(tp)[:1]
        return tuple(_decode(item, v, f"{where}/{i}") for i, v in enumerate(value))
    if origin in (Mapping, typing.Mapping):
        if not isinstance(value, dict):
            raise PlanFormatError(f"{where}: expected an object")
        _, item = get_args(tp)
        return types.MappingProxyType({k: _decode(item, v, f"{where}/{k}") for k, v in value.items()})
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        try:
            return tp(value)
        except ValueError:
            raise PlanFormatError(f"{where}: {value!r} is not a {tp.__name__}") from None
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise PlanFormatError(f"{where}: expected an object")
        hints = _HINTS.get(tp)
        if hints is None:
            hints = _HINTS[tp] = get_type_hints(tp)
        names = {f.name for f in dataclasses.fields(tp)}
        extra = set(value) - names
        missing = names - set(value)
        if extra or missing:
            raise PlanFormatError(f"{where}: unknown {sorted(extra)} / missing {sorted(missing)}")
        return tp(**{n: _decode(hints[n], value[n], f"{where}/{n}") for n in names})
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise PlanFormatError(f"{where}: expected a number")
        return float(value)
    if tp in (int, str, bool):
        if not isinstance(value, tp) or (tp is int and isinstance(value, bool)):
            raise PlanFormatError(f"{where}: expected {tp.__name__}")
        return value
    raise PlanFormatError(f"{where}: cannot decode {tp!r}")
