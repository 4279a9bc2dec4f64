"""Schema phase: check the parsed data against ``gateway.schema.json`` and explain each failure.

Every error jsonschema finds is reported (not just the first), each at the exact node, in words a
person can act on: unknown keys with a "did you mean", durations and sizes with their syntax,
``oneOf`` failures collapsed to the branch the value was evidently meant for.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from jsonschema import Draft202012Validator, ValidationError

from sidegate.compiler.diagnostics import Collector, did_you_mean, join_pointer
from sidegate.compiler.schemafile import load_schema
from sidegate.runtime.observe.scrub import Scrubber

__all__ = ["validate"]


@functools.cache
def _validator() -> Draft202012Validator:
    return Draft202012Validator(load_schema())


@functools.cache
def _def_patterns() -> tuple[str, str]:
    defs = load_schema()["$defs"]
    return defs["duration"]["pattern"], defs["size"]["pattern"]


_TYPE_NAMES = {
    "object": "a mapping",
    "array": "a list",
    "string": "a string",
    "integer": "an integer",
    "number": "a number",
    "boolean": "a boolean",
    "null": "null",
}

_FIELD_PATTERNS = {
    "listen": "is not a listen address (use host:port, e.g. 127.0.0.1:4000, 0.0.0.0:8080 or [::1]:4000)",
    "base_url": "is not a base URL (http:// or https://, without a trailing slash)",
    "api_version": "is not an Azure api-version (a date like 2024-10-21, optionally with -preview)",
    "type": "is not a provider type (lowercase letters, digits and '-'; see `sidegate providers`)",
    "env": "is not an environment variable name (letters, digits and '_', not starting with a digit)",
    "database": "is not a database URL (use sqlite:///path/to/file.db, sqlite://:memory:, postgresql://user@host/db "
                "or a whole reference such as ${DATABASE_URL})",
    "path": "is not an HTTP path (it starts with '/')",
    "aliases": "is not a valid model name (letters, digits and _ . : @ / -, starting with a letter or digit)",
}

_NAME_PATTERNS = {
    "providers": "is not a valid provider name (letters, digits, '_', '.' and '-', starting with a letter or digit)",
    "models": "is not a valid model name (letters, digits and _ . : @ / -, optionally ending in /*)",
    "headers": "is not a valid HTTP header name",
}


_USERINFO = re.compile(r"(://)[^/@\s]*@")
_SHAPES = Scrubber()


def _masked(text: str) -> str:
    """An echoed value without what may be a credential (a URL's user part, a key-shaped token):
    diagnostics are printed in CI logs."""
    return _SHAPES.text(_USERINFO.sub(r"\1***@", text))


def _show(value: Any) -> str:
    if isinstance(value, str):
        return f"'{_masked(value)}'"
    if isinstance(value, (dict, list)):
        return _kind(value)
    return json.dumps(value)


def _kind(value: Any) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return "null"


def _got(value: Any) -> str:
    if isinstance(value, (dict, list)) or value is None:
        return _kind(value)
    return f"{_kind(value)} ({_show(value)})"


def _schema(error: ValidationError) -> Mapping[str, Any]:
    return error.schema if isinstance(error.schema, Mapping) else {}


def _inst(error: ValidationError) -> Any:
    """The failing instance (typed loosely: the stubs allow an "unset" marker)."""
    return error.instance


def _arg(error: ValidationError) -> Any:
    """The keyword's value in the schema (e.g. the pattern, the minimum)."""
    return error.validator_value


def _field(error: ValidationError) -> str:
    for part in reversed(error.absolute_path):
        if isinstance(part, str):
            return part
    return "value"


def _matches(schema: Any, value: Any) -> bool:
    """Whether ``value`` has a type ``schema`` allows (a schema without ``type`` allows all)."""
    if not isinstance(schema, dict) or "type" not in schema:
        return True
    types = schema["type"] if isinstance(schema["type"], list) else [schema["type"]]
    return any(_validator().is_type(value, t) for t in types)


class _Explainer:
    def __init__(self, out: Collector) -> None:
        self.out = out
        self.required_done: set[str] = set()

    def report(self, error: ValidationError) -> None:
        pointer = join_pointer("", *error.absolute_path)
        if "propertyNames" in error.absolute_schema_path:
            self.on_name(error, pointer)
            return
        handler = getattr(self, "on_" + str(error.validator), None)
        if handler is not None:
            handler(error, pointer)
        else:
            self.out.error(f"schema.{error.validator}", pointer, error.message)

    def on_additionalProperties(self, error: ValidationError, pointer: str) -> None:
        allowed = _schema(error).get("properties", {})
        instance = _inst(error)
        for key in instance:
            if key not in allowed:
                message = f"unknown field '{key}'{did_you_mean(key, allowed)}"
                self.out.error("schema.unknown-field", join_pointer(pointer, key), message, at_key=True)

    def on_required(self, error: ValidationError, pointer: str) -> None:
        if pointer in self.required_done:
            return
        self.required_done.add(pointer)
        for name in _arg(error):
            if name not in _inst(error):
                self.out.error("schema.required", pointer, f"missing required field '{name}'")

    def on_type(self, error: ValidationError, pointer: str) -> None:
        duration, size = _def_patterns()
        pattern = _schema(error).get("pattern")
        if pattern in (duration, size) and isinstance(_inst(error), (int, float)):
            self.on_pattern(error, pointer)
            return
        expected = _arg(error) if isinstance(_arg(error), list) else [_arg(error)]
        wanted = " or ".join(_TYPE_NAMES.get(t, t) for t in expected)
        self.out.error("schema.type", pointer, f"expected {wanted}, got {_got(_inst(error))}")

    def on_pattern(self, error: ValidationError, pointer: str) -> None:
        duration, size = _def_patterns()
        pattern = _schema(error).get("pattern")
        value = _inst(error)
        if pattern == duration:
            hint = "use 250ms, 30s, 10m, 1h, 1d"
            self.out.error("schema.duration", pointer, f"{_show(value)} is not a duration ({hint})")
        elif pattern == size:
            hint = "use 512KiB, 8MiB, 1GB; units B, KB, KiB, MB, MiB, GB, GiB"
            self.out.error("schema.size", pointer, f"{_show(value)} is not a size ({hint})")
        else:
            hint = _FIELD_PATTERNS.get(_field(error), f"does not match {pattern}")
            self.out.error("schema.pattern", pointer, f"{_show(value)} {hint}")

    def on_name(self, error: ValidationError, pointer: str) -> None:
        """A mapping key that breaks ``propertyNames`` (reported at the key)."""
        name = str(_inst(error))
        hint = _NAME_PATTERNS.get(_field(error), "is not a valid name")
        self.out.error("schema.pattern", join_pointer(pointer, name), f"'{name}' {hint}", at_key=True)

    def on_enum(self, error: ValidationError, pointer: str) -> None:
        options = list(dict.fromkeys(str(o) for o in _arg(error)))
        listed = ", ".join(f"'{o}'" for o in options)
        suggestion = did_you_mean(_inst(error), options) if isinstance(_inst(error), str) else ""
        self.out.error("schema.enum", pointer, f"{_show(_inst(error))} is not one of {listed}{suggestion}")

    def on_const(self, error: ValidationError, pointer: str) -> None:
        const = json.dumps(_arg(error))
        if pointer == "/version":
            message = f"unsupported version {_show(_inst(error))}; this sidegate reads version {const}"
        else:
            message = f"must be {const}, got {_show(_inst(error))}"
        self.out.error("schema.const", pointer, message)

    def _range(self, error: ValidationError, pointer: str, relation: str) -> None:
        message = f"{_field(error)} must be {relation} {_arg(error)}, got {_show(_inst(error))}"
        self.out.error("schema.range", pointer, message)

    def on_minimum(self, error: ValidationError, pointer: str) -> None:
        self._range(error, pointer, "at least")

    def on_maximum(self, error: ValidationError, pointer: str) -> None:
        self._range(error, pointer, "at most")

    def on_exclusiveMinimum(self, error: ValidationError, pointer: str) -> None:
        self._range(error, pointer, "greater than")

    def on_exclusiveMaximum(self, error: ValidationError, pointer: str) -> None:
        self._range(error, pointer, "less than")

    def on_minItems(self, error: ValidationError, pointer: str) -> None:
        n = _arg(error)
        message = f"{_field(error)} must have at least {n} item{'s' if n != 1 else ''}, got {len(_inst(error))}"
        self.out.error("schema.min-items", pointer, message)

    def on_minProperties(self, error: ValidationError, pointer: str) -> None:
        n = _arg(error)
        message = f"{_field(error)} must have at least {n} entr{'ies' if n != 1 else 'y'}, got none"
        self.out.error("schema.min-properties", pointer, message)

    def on_minLength(self, error: ValidationError, pointer: str) -> None:
        n = _arg(error)
        message = "must not be empty" if n == 1 else f"must be at least {n} characters long"
        self.out.error("schema.min-length", pointer, f"{_field(error)} {message}")

    def on_uniqueItems(self, error: ValidationError, pointer: str) -> None:
        seen: list[Any] = []
        repeated: list[str] = []
        for item in _inst(error):
            if item in seen and _show(item) not in repeated:
                repeated.append(_show(item))
            seen.append(item)
        message = f"{_field(error)} lists {', '.join(repeated)} more than once"
        self.out.error("schema.unique-items", pointer, message)

    def on_oneOf(self, error: ValidationError, pointer: str) -> None:
        self._alternatives(error, pointer)

    def on_anyOf(self, error: ValidationError, pointer: str) -> None:
        self._alternatives(error, pointer)

    def _alternatives(self, error: ValidationError, pointer: str) -> None:
        """Explain a failed ``oneOf``/``anyOf`` by the branch the value was evidently meant for."""
        branches: Sequence[Any] = _arg(error)
        instance = _inst(error)
        by_branch: dict[int, list[ValidationError]] = {}
        for sub in error.context or ():
            by_branch.setdefault(int(sub.relative_schema_path[0]), []).append(sub)
        candidates = [i for i, b in enumerate(branches) if _matches(b, instance)]
        if not candidates:
            wanted = " or ".join(dict.fromkeys(_TYPE_NAMES.get(str(b.get("type")), "a value") for b in branches))
            self.out.error("schema.type", pointer, f"expected {wanted}, got {_got(instance)}")
            return
        if not error.context:
            self.out.error("schema.one-of", pointer, "matches more than one of the allowed forms")
            return
        if isinstance(instance, dict) and len(candidates) > 1:
            self._pick_object_branch(branches, candidates, by_branch, instance, pointer)
            return
        for sub in by_branch.get(candidates[0], []):
            self.report(sub)

    def _pick_object_branch(
        self,
        branches: Sequence[Any],
        candidates: list[int],
        by_branch: dict[int, list[ValidationError]],
        instance: dict[str, Any],
        pointer: str,
    ) -> None:
        def required(i: int) -> list[str]:
            return list(branches[i].get("required", []))

        complete = [i for i in candidates if required(i) and all(k in instance for k in required(i))]
        if len(complete) > 1:
            names = ", ".join(f"'{k}'" for i in complete for k in required(i))
            self.out.error("schema.one-of", pointer, f"use only one of {names}")
            return
        chosen = complete or [i for i in candidates if any(k in instance for k in required(i))]
        if chosen:
            for sub in by_branch.get(chosen[0], []):
                self.report(sub)
            return
        known = {k for i in candidates for k in branches[i].get("properties", {})}
        for key in instance:
            if key not in known:
                message = f"unknown field '{key}'{did_you_mean(key, sorted(known))}"
                self.out.error("schema.unknown-field", join_pointer(pointer, key), message, at_key=True)
        names = ", ".join(f"'{k}'" for i in candidates for k in required(i))
        self.out.error("schema.required", pointer, f"missing one of {names}")


def validate(data: Any, out: Collector) -> None:
    """Report every way ``data`` breaks the schema to ``out``."""
    explainer = _Explainer(out)
    errors: Iterable[ValidationError] = _validator().iter_errors(data)
    for error in errors:
        explainer.report(error)
