"""Printing diagnostics: ``--format text|json|github|sarif``.

- text: ``file:line:col: severity[code] /pointer: message``, one per line;
- json: a list of ``{file, line, column, severity, code, pointer, message}``;
- github: GitHub Actions workflow commands (``::error file=...,line=...::message``), which
  annotate the pull request;
- sarif: a SARIF 2.1.0 log, for code-scanning dashboards.
"""

from __future__ import annotations

import json
import os
import urllib.parse
from collections.abc import Callable, Mapping, Sequence

from sidegate.compiler.diagnostics import Diagnostic

__all__ = ["CODES", "FORMATS", "format_diagnostics", "github", "json_list", "sarif", "text"]

CODES: Mapping[str, str] = {
    "io.read": "The spec file cannot be read or is not UTF-8.",
    "yaml.syntax": "The text is not valid YAML (or holds more than one document).",
    "yaml.empty": "The spec is empty.",
    "yaml.duplicate-key": "A mapping has the same key twice.",
    "yaml.alias-bomb": "Aliases expand the document beyond the node limit ('billion laughs').",
    "yaml.recursive-alias": "An alias refers to a node that contains it.",
    "yaml.too-deep": "The document nests deeper than the limit.",
    "yaml.tag": "A YAML tag other than plain data (!!binary, !custom...).",
    "yaml.key-type": "A mapping key is a collection, not a string.",
    "yaml.merge": "A '<<' merge key whose value is not a mapping or list of mappings.",
    "yaml.non-finite": "A number that is .inf or .nan.",
    "schema.unknown-field": "A field the schema does not define.",
    "schema.required": "A required field is missing.",
    "schema.type": "A value of the wrong type.",
    "schema.enum": "A value outside the allowed set.",
    "schema.const": "A value other than the only allowed one (e.g. version).",
    "schema.duration": "A malformed duration (250ms, 30s, 10m, 1h, 1d).",
    "schema.size": "A malformed size (512KiB, 8MiB, 1GB).",
    "schema.pattern": "A string or name in the wrong form.",
    "schema.range": "A number out of range.",
    "schema.min-items": "A list with too few items.",
    "schema.min-properties": "A mapping with too few entries.",
    "schema.min-length": "A string that is too short (empty).",
    "schema.unique-items": "A list that repeats an item.",
    "schema.one-of": "A value that matches several alternative forms, or mixes them.",
    "secret.bad-reference": "A malformed ${NAME} reference in a string.",
    "secret.literal": "An api_key written as a literal instead of a reference.",
    "secret.url-credentials": "A literal password or token in a URL's user part or query (database, redis, "
                              "base_url, MCP/A2A URLs).",
    "secret.literal-header": "A credential-bearing header (Authorization, X-Api-Key...) or a key-shaped value "
                             "written literally.",
    "server.bad-listen": "A listen address with an invalid host or port.",
    "server.limit-range": "An upstream size limit too small to be usable.",
    "realtime.limit-range": "A realtime session limit too small to be usable.",
    "ref.unknown-provider-type": "A provider type that is not in the catalog.",
    "ref.unknown-provider": "A target names a provider that is not declared.",
    "ref.unknown-model": "A fallback, key or team names a model group that is not declared.",
    "ref.unknown-team": "A key names a team that is not declared under teams.",
    "auth.duplicate-key-name": "Two static keys with the same name.",
    "auth.jwt-key-source": "auth.jwt needs exactly one of secret or jwks_url.",
    "store.redis-sync-range": "store.redis_sync outside 50ms..10s.",
    "store.redis-url": "store.redis is not a redis://, rediss:// or unix:// URL.",
    "store.archive-every": "store.archive.every outside 5m..1d or not dividing a day evenly.",
    "store.archive-grace": "store.archive.grace longer than 1d.",
    "store.archive-keep-days": "store.archive.keep_days shorter than a budget period of the spec.",
    "store.archive-credentials": "store.archive has only one of access_key_id and secret_access_key.",
    "ref.unknown-agent": "An a2a allow/deny pattern of a key or team that matches no agent under a2a.agents.",
    "cache.unknown-embedding-group": "cache.semantic.embedding names no model group or alias.",
    "cache.semantic-missing": "Semantic cache mode without a cache.semantic section.",
    "cache.redis-missing": "The redis cache backend without cache.redis or store.redis.",
    "cache.redis-unused": "cache.redis set for a backend other than redis.",
    "cache.max-size-unused": "cache.max_size set for a backend other than memory.",
    "guardrails.unknown": "A model group, key or team names a guardrail the spec does not declare.",
    "guardrails.mask-unsupported": "action: mask on a guardrail kind that finds no text to replace.",
    "guardrails.option-unused": "A guardrail option that belongs to another kind.",
    "guardrails.option-missing": "A guardrail without the option its kind needs.",
    "guardrails.regex-empty": "A regex guardrail without patterns or presets.",
    "guardrails.pattern-refused": "A guardrail pattern that could take more than linear time (or is invalid).",
    "guardrails.unattached": "Guardrails are declared but no model group, key or team names one.",
    "guardrails.unknown-provider": "A moderation guardrail naming no provider, or one without /moderations.",
    "guardrails.mode-unsupported": "A during_call guardrail that masks or needs an allowed topic.",
    "cache.threshold-unused": "A group's cache.threshold in exact mode.",
    "cache.ttl-zero": "A cache ttl of 0.",
    "cache.nothing-cached": "A cache section while every model group says cache: false.",
    "cache.entry-over-size": "A group's cache.max_entry over the memory backend's max_size.",
    "a2a.reserved-name": "An A2A agent named like one of sidegate's own /a2a routes (agents).",
    "route.fallback-cycle": "Fallbacks that lead back to the group they start from.",
    "route.wildcard-fallback": "A fallback that names a wildcard group.",
    "cost.unknown-model": "An upstream model (or base_model) that is not in the price table.",
    "cost.unpriced-budgeted": "A deployment without a price in a model group a budgeted key or team may call.",
    "model.duplicate-name": "A model name or alias used twice.",
    "model.wildcard-target": "A '*' target outside a wildcard group.",
    "model.glob-pattern": "A glob model name that is malformed ('**').",
    "model.glob-catch-all": "A glob model name of only '*': it catches every name no other group serves.",
    "model.glob-shadowed": "A glob model name that also matches exact names of other groups (they win).",
    "model.wildcard-alias": "A wildcard group with aliases.",
    "model.duplicate-target": "The same provider and model twice in one group.",
    "provider.base-url-required": "A provider type without a default base URL and no base_url.",
    "provider.placeholder": "A placeholder value (left by `sidegate import litellm`) that must be replaced.",
    "spec.litellm-config": "The file is a LiteLLM proxy config: translate it with `sidegate import litellm`.",
    "provider.api-version-required": "An azure provider without api_version.",
    "provider.field-not-applicable": "A field that the provider's type does not use.",
    "provider.missing-api-key": "A provider whose type requires a key has no api_key.",
    "provider.unused": "A provider that no model uses.",
    "render.default-name": "render kubernetes: deploy.kubernetes.app is not set; the spec file's name is used.",
    "render.default-image": "render: no image is set; the files name sidegate:VERSION, which you build and push.",
    "render.listen-reference": "render: server.listen holds a reference; the rendered files need a literal address.",
    "render.store-path-unknown": "render: the sqlite path is a secret reference; the working directory is assumed.",
    "render.plan-too-large": "render kubernetes: the compiled plan is over a ConfigMap's 1 MiB.",
    "render.store-dir": "render compose: the sqlite directory is not the image's writable working directory.",
    "litellm.not-translated": "import litellm: a setting with no sidegate equivalent (yet); left out of the spec.",
    "litellm.unsupported-provider": "import litellm: a deployment whose provider has no sidegate type; left out.",
    "litellm.literal-secret": "import litellm: a literal secret; the spec reads an environment variable instead.",
    "litellm.invalid": "import litellm: a value sidegate cannot use as written; left out or replaced.",
    "litellm.assumed": "import litellm: something the importer had to assume (a provider, an api_version).",
    "litellm.empty": "import litellm: no model could be translated, so no spec was written.",
    "passthrough.unknown-provider": "A pass-through route names a provider the spec does not declare.",
    "passthrough.unsupported-provider": "A pass-through route names a signed or in-process provider (bedrock...).",
    "passthrough.reserved-prefix": "A pass-through prefix lies on sidegate's own routes (/v1, /health, /metrics...).",
    "passthrough.prefix-clash": "Two pass-through prefixes overlap (one equals or lies under the other).",
}
"""Every diagnostic code, with a one-line description (also the SARIF rules)."""


def text(diagnostics: Sequence[Diagnostic]) -> str:
    """One ``file:line:col: severity[code] /pointer: message`` line per diagnostic."""
    return "".join(d.format_text() + "\n" for d in diagnostics)


def json_list(diagnostics: Sequence[Diagnostic]) -> str:
    """A JSON list of ``{file, line, column, severity, code, pointer, message}``."""
    return json.dumps([d.as_dict() for d in diagnostics], indent=2, ensure_ascii=False) + "\n"


def _escape_data(value: str) -> str:
    return value.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def _escape_property(value: str) -> str:
    return _escape_data(value).replace(":", "%3A").replace(",", "%2C")


def github(diagnostics: Sequence[Diagnostic]) -> str:
    """GitHub Actions workflow commands, one per diagnostic."""
    lines = []
    for d in diagnostics:
        props = ",".join(
            f"{key}={_escape_property(value)}"
            for key, value in (
                ("file", d.file),
                ("line", str(d.line)),
                ("col", str(d.column)),
                ("title", d.code),
            )
        )
        message = f"{d.pointer}: {d.message}" if d.pointer else d.message
        lines.append(f"::{d.severity.value} {props}::{_escape_data(message)}\n")
    return "".join(lines)


def _uri(file: str) -> str:
    if file == "<stdin>":
        return "stdin"
    path = file.replace(os.sep, "/")
    if os.path.isabs(file):
        return "file://" + urllib.parse.quote(path if path.startswith("/") else "/" + path)
    return urllib.parse.quote(path)


def sarif(diagnostics: Sequence[Diagnostic], *, version: str = "0.0.0") -> str:
    """A SARIF 2.1.0 log with one run of the ``sidegate`` tool."""
    rule_index: dict[str, int] = {}
    for d in diagnostics:
        rule_index.setdefault(d.code, len(rule_index))
    rules = [{"id": code, "shortDescription": {"text": CODES.get(code, code)}} for code in rule_index]
    results = [
        {
            "ruleId": d.code,
            "ruleIndex": rule_index[d.code],
            "level": d.severity.value,
            "message": {"text": f"{d.pointer}: {d.message}" if d.pointer else d.message},
            "locations": [
                {
                    "physicalLocation": {
                        "artifactLocation": {"uri": _uri(d.file)},
                        "region": {"startLine": d.line, "startColumn": d.column},
                    },
                    **({"logicalLocations": [{"fullyQualifiedName": d.pointer}]} if d.pointer else {}),
                }
            ],
        }
        for d in diagnostics
    ]
    log = {
        "$schema": "https://docs.oasis-open.org/sarif/sarif/v2.1.0/errata01/os/schemas/sarif-schema-2.1.0.json",
        "version": "2.1.0",
        "runs": [
            {
                "tool": {"driver": {"name": "sidegate", "version": version, "rules": rules}},
                "columnKind": "unicodeCodePoints",
                "results": results,
            }
        ],
    }
    return json.dumps(log, indent=2, ensure_ascii=False) + "\n"


FORMATS: Mapping[str, Callable[[Sequence[Diagnostic]], str]] = {
    "text": text,
    "json": json_list,
    "github": github,
    "sarif": sarif,
}
"""The ``--format`` choices."""


def format_diagnostics(diagnostics: Sequence[Diagnostic], fmt: str, *, version: str = "0.0.0") -> str:
    """Render ``diagnostics`` in the format named ``fmt``."""
    if fmt == "sarif":
        return sarif(diagnostics, version=version)
    return FORMATS[fmt](diagnostics)
