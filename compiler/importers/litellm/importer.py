"""`sidegate import litellm`: a LiteLLM proxy config.yaml -> a sidegate spec, with comments.

Each `model_list` entry (a LiteLLM deployment) becomes a target of the model group its `model_name`
names; its `litellm_params.model` (`provider/name`) picks a provider type (``data/litellm-providers.json``
maps LiteLLM's prefixes to the catalog's types) and the upstream model. Deployments that share a
type, base URL, key, api_version and headers share one provider. `os.environ/NAME` becomes
`${NAME}`; a literal key is never copied (the spec reads an environment variable instead, and no
value is ever shown). Group-wide decisions (tiers, weights) are in :mod:`compiler.importers.litellm.groups`,
proxy-wide settings in :mod:`compiler.importers.litellm.settings`. Every setting that is left behind is
reported with its line and column in the LiteLLM file and listed at the end of the spec.
"""

from __future__ import annotations

import functools
import importlib.resources
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sidegate.compiler.data.catalog import load_catalog
from sidegate.compiler.data.prices import lookup
from sidegate.compiler.diagnostics import Collector, Diagnostic, join_pointer, sort_key
from sidegate.compiler.importers.litellm import conventions
from sidegate.compiler.importers.litellm.groups import Deployment, ProviderKey, settle_group
from sidegate.compiler.importers.litellm.settings import Draft, duration, env_reference, features, translate_settings
from sidegate.compiler.importers.yamlwrite import dump
from sidegate.compiler.parse import parse
from sidegate.compiler.schemafile import load_schema

__all__ = ["DEFAULT_AZURE_API_VERSION", "OPENAI_BODY_PARAMS", "Imported", "import_litellm"]

OPENAI_BODY_PARAMS = frozenset(
    {
        "temperature", "top_p", "max_tokens", "max_completion_tokens", "n", "stop", "presence_penalty",
        "frequency_penalty", "seed", "logit_bias", "response_format", "user", "reasoning_effort",
        "parallel_tool_calls", "tool_choice", "logprobs", "top_logprobs", "service_tier",
    }
)  # fmt: skip
"""litellm_params that are OpenAI request fields: they become the target's extra_body (the client's own win)."""
DEFAULT_AZURE_API_VERSION = "2024-10-21"
"""Used for an azure deployment that names no api_version (LiteLLM would use its own default)."""

_OWN = frozenset(
    {
        "model", "api_key", "api_base", "api_version", "organization", "extra_headers", "rpm", "tpm",
        "weight", "order", "max_parallel_requests", "timeout", "litellm_credential_name",
        "aws_region_name", "aws_profile_name", "vertex_project", "vertex_location", "vertex_credentials",
    }
)  # fmt: skip
_NATIVE = {
    "bedrock": (("region", "aws_region_name", "us-east-1"), ("aws_profile", "aws_profile_name", None)),
    "vertex": (
        ("project", "vertex_project", "replace-me"),
        ("region", "vertex_location", "us-central1"),
        ("credentials", "vertex_credentials", None),
    ),
}
"""Native type -> (spec field, LiteLLM param, value when it is missing) for the fields it needs."""
_NATIVE_VALUE = re.compile(r"[A-Za-z0-9][A-Za-z0-9.:_-]*")
_TOP = ("model_list", "router_settings", "litellm_settings", "general_settings", "environment_variables")
_GROUP_KEYS = ("aliases", "strategy", "timeout", "fallbacks", "context_window_fallbacks", "content_policy_fallbacks")
_TARGET_KEYS = ("provider", "model", "weight", "tier", "rpm", "tpm", "max_parallel", "extra_body")
_URL = re.compile(r"https?://[^\s]+[^/\s]")
_API_VERSION = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}(-preview)?")
_HEADER = re.compile(r"[A-Za-z0-9!#$%&'*+.^_`|~-]+")


@dataclass(frozen=True, slots=True)
class Imported:
    """The generated spec (None when nothing could be translated) and the diagnostics, by position."""

    spec: str | None
    diagnostics: tuple[Diagnostic, ...]


@functools.cache
def _prefixes() -> Mapping[str, tuple[str, ...]]:
    raw = json.loads((importlib.resources.files("sidegate.compiler") / "data" / "litellm-providers.json").read_bytes())
    return {prefix: tuple(types) for prefix, types in raw["prefixes"].items()}


@functools.cache
def _model_name() -> re.Pattern[str]:
    return re.compile(load_schema()["properties"]["models"]["propertyNames"]["pattern"])


def _literal(text: str) -> str:
    """Literal header text inside a secret-capable string (``$`` is written ``$$``)."""
    return text.replace("$", "$$")


class _Importer:
    def __init__(self, data: Mapping[str, Any], draft: Draft) -> None:
        self.data = data
        self.draft = draft
        self.catalog = load_catalog()
        self.credentials: dict[str, tuple[str, Mapping[str, Any]]] = {}
        router = data.get("router_settings")
        strategy = router.get("routing_strategy") if isinstance(router, Mapping) else None
        self.shuffle = strategy in (None, "simple-shuffle")

    def invalid(self, pointer: str, message: str) -> None:
        self.draft.skip(pointer, message, "litellm.invalid")

    def read_credentials(self) -> None:
        entries = self.data.get("credential_list")
        for i, entry in enumerate(entries if isinstance(entries, list) else ()):
            if isinstance(entry, Mapping) and isinstance(entry.get("credential_values"), Mapping):
                pointer = f"/credential_list/{i}/credential_values"
                self.credentials[str(entry.get("credential_name"))] = (pointer, entry["credential_values"])
            else:
                self.invalid(f"/credential_list/{i}", "a credential needs credential_name and credential_values")

    def secret(self, value: object, pointer: str, env: str) -> tuple[str | None, str | None]:
        """(reference, comment) for an api_key; a literal key is replaced by ``${env}``, never copied."""
        reference = env_reference(value)
        if value is None or reference is not None:
            return reference, None
        if isinstance(value, str) and value.strip().lower() in ("", "none"):
            return None, None
        message = f"a literal api_key is not copied into the spec; it reads ${{{env}}} instead"
        self.draft.skip(pointer, message, "litellm.literal-secret")
        return "${" + env + "}", f"LiteLLM had a literal key here; set {env} in the sidecar's environment"

    def provider_type(self, model: str, params: Mapping[str, Any], pointer: str) -> tuple[str, str] | None:
        """(sidegate type, upstream model) for a LiteLLM model string; None (reported) when there is none."""
        prefix, _, rest = model.partition("/")
        if not rest or prefix not in _prefixes():
            prefix, rest = "", model
        if rest == "*" and not prefix:
            self.draft.skip(pointer, "a catch-all deployment (model '*') has no sidegate equivalent; left out")
            return None
        if not prefix:  # LiteLLM looks a bare model name up in its model list
            known_openai = lookup("openai", model) is not None
            prefix = "anthropic" if not known_openai and lookup("anthropic", model) is not None else "openai"
            if prefix == "openai" and not known_openai:
                message = f"model '{model}' names no provider (provider/model); it is assumed to be an openai model"
                self.draft.skip(pointer, message, "litellm.assumed")
        kind = next((t for t in _prefixes()[prefix] if t in self.catalog), None)
        if kind is None:
            message = f"LiteLLM provider '{prefix}' has no sidegate provider type yet; the deployment is left out"
            self.draft.skip(pointer, message, "litellm.unsupported-provider")
            return None
        base = params.get("api_base")
        if kind == "openai" and isinstance(base, str) and "//api.openai.com" not in base:
            kind = "openai-compatible"  # LiteLLM's `openai/` prefix on another server
        return kind, rest

    def base_url(self, kind: str, value: object, pointer: str) -> str | None:
        if value is None:
            return None
        if isinstance(value, str) and _URL.fullmatch(value.rstrip("/")):
            url = value.rstrip("/")
            return None if url == self.catalog[kind].base_url else url
        why = "is read from the environment, which base_url cannot be" if env_reference(value) else "is not a URL"
        if self.catalog[kind].base_url is not None:
            self.invalid(pointer, f"api_base {why}; the catalog's base URL for '{kind}' is used")
            return None
        self.invalid(pointer, f"api_base {why}; the spec has a placeholder URL to replace")
        return "https://replace-me.invalid"

    def headers(self, params: Mapping[str, Any], src: Mapping[str, str]) -> tuple[tuple[str, str], ...]:
        out: dict[str, str] = {}
        org = params.get("organization")
        if isinstance(org, str):
            out["OpenAI-Organization"] = env_reference(org) or _literal(org)
        elif org is not None:
            self.draft.skip(src["organization"], "several organizations in one deployment are not translated")
        extra = params.get("extra_headers")
        if isinstance(extra, Mapping):
            for name, value in extra.items():
                if isinstance(value, (str, int, float)) and _HEADER.fullmatch(str(name)):
                    out[str(name)] = env_reference(value) or _literal(str(value))
                else:
                    self.invalid(join_pointer(src["extra_headers"], name), f"header '{name}' is not usable; left out")
        elif extra is not None:
            self.invalid(src["extra_headers"], "extra_headers is not a mapping; left out")
        return tuple(sorted(out.items()))

    def params(self, index: int, raw: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, str]]:
        """litellm_params with the named credential's values merged in, and where each came from."""
        at = f"/model_list/{index}/litellm_params"
        params, src = dict(raw), {k: join_pointer(at, k) for k in raw}
        credential = self.credentials.get(str(raw.get("litellm_credential_name")))
        if credential is not None:
            for key, value in credential[1].items():
                if key not in params:
                    params[key], src[key] = value, join_pointer(credential[0], key)
        return params, src

    def api_version(self, kind: str, params: Mapping[str, Any], src: Mapping[str, str], at: str) -> str | None:
        version = params.get("api_version")
        if kind == "azure" and version is None:
            message = f"azure deployment without api_version; the spec uses {DEFAULT_AZURE_API_VERSION}"
            self.draft.skip(at, message, "litellm.assumed")
            return DEFAULT_AZURE_API_VERSION
        if version is not None and (kind != "azure" or not _API_VERSION.fullmatch(str(version))):
            self.invalid(src["api_version"], "api_version is not an Azure api-version sidegate can use; left out")
            return DEFAULT_AZURE_API_VERSION if kind == "azure" else None
        return None if version is None else str(version)

    def deployment(self, index: int, entry: object) -> Deployment | None:
        pointer = f"/model_list/{index}"
        if not isinstance(entry, Mapping) or not isinstance(entry.get("litellm_params"), Mapping):
            self.invalid(pointer, "a model_list entry needs model_name and litellm_params; left out")
            return None
        for key in entry:
            if key not in ("model_name", "litellm_params"):
                self.draft.unused(join_pointer(pointer, key), f"{key} (deployment metadata)")
        group, at = entry.get("model_name"), pointer + "/litellm_params"
        params, src = self.params(index, entry["litellm_params"])
        if group == "*":
            self.draft.skip(pointer + "/model_name", "a catch-all model_name '*' has no sidegate equivalent; left out")
            return None
        if not isinstance(group, str) or not _model_name().fullmatch(group):
            self.invalid(pointer + "/model_name", f"model_name {group!r} is not a sidegate model name; left out")
            return None
        if not isinstance(params.get("model"), str):
            self.invalid(at, "litellm_params.model is missing; the deployment is left out")
            return None
        found = self.provider_type(params["model"], params, src["model"])
        if found is None:
            return None
        kind, upstream = found
        prefix = params["model"].partition("/")[0] if "/" in params["model"] else ""
        upstream = conventions.model_id(prefix, upstream)
        if group.endswith("/*") != (upstream == "*"):
            self.invalid(src["model"], "a wildcard needs model_name 'prefix/*' and model 'provider/*'; left out")
            return None
        env = self.catalog[kind].key_env or kind.upper().replace("-", "_") + "_API_KEY"
        key, key_note = self.secret(params.get("api_key"), src.get("api_key", at), env)
        if "api_key" not in params and self.catalog[kind].requires_key:
            key, key_note = "${" + env + "}", "no api_key in the LiteLLM config (it reads the provider's variable)"
        api_base = params.get("api_base")
        if isinstance(api_base, str) and _URL.fullmatch(api_base.rstrip("/")):
            api_base = conventions.base_url(prefix, api_base)
        base_url = self.base_url(kind, api_base, src.get("api_base", at))
        version, headers = self.api_version(kind, params, src, at), self.headers(params, src)
        if kind == "vertex":
            key = key_note = None  # vertex authenticates with credentials, never an api_key
        provider = ProviderKey(kind, base_url, key, version, headers, self.native(kind, params, src, at))
        deployment = Deployment(index, pointer, group, provider, upstream, params, key_note=key_note)
        self.target_fields(deployment, src)
        return deployment

    def native(
        self, kind: str, params: Mapping[str, Any], src: Mapping[str, str], at: str
    ) -> tuple[tuple[str, Any], ...]:
        """region, project, credentials and aws_profile of the native types (bedrock, vertex)."""
        fields: list[tuple[str, Any]] = []
        for field_name, param, default in _NATIVE.get(kind, ()):
            value, where = params.get(param), src.get(param, at)
            if field_name == "credentials" and value is not None:
                reference = env_reference(value)
                if reference is None and isinstance(value, str) and value.startswith("/"):
                    fields.append((field_name, (("file", value),)))  # a mapping, kept hashable
                elif reference is not None:
                    fields.append((field_name, reference))
                else:
                    message = f"{param} is not a file path or os.environ/NAME; it is not copied (default credentials)"
                    self.draft.skip(where, message, "litellm.literal-secret")
            elif isinstance(value, str) and (field_name == "aws_profile" or _NATIVE_VALUE.fullmatch(value)):
                fields.append((field_name, value))
            elif default is not None:
                code = "litellm.assumed" if value is None else "litellm.invalid"
                self.draft.skip(where, f"{kind} needs {param}; the spec uses {default!r}", code)
                fields.append((field_name, default))
        return tuple(fields)

    def target_fields(self, d: Deployment, src: Mapping[str, str]) -> None:
        for key, value in d.params.items():
            if key in ("rpm", "tpm", "max_parallel_requests"):
                if isinstance(value, int) and not isinstance(value, bool) and value >= 1:
                    d.target["max_parallel" if key == "max_parallel_requests" else key] = value
                elif value != 0:
                    self.invalid(src[key], f"{key} is not a positive whole number; left out")
            elif key == "timeout" and duration(value) is None:
                self.invalid(src[key], "timeout is not a positive number of seconds; left out")
            elif key == "weight" and not self.shuffle:
                message = "weight counts only for LiteLLM's simple-shuffle, not the routing_strategy set; left out"
                self.draft.skip(src[key], message)
            elif key in OPENAI_BODY_PARAMS:
                d.target.setdefault("extra_body", {})[key] = value
            elif key not in _OWN:
                self.draft.unused(src[key], f"litellm_params.{key}")

    def providers(self, deployments: list[Deployment]) -> dict[ProviderKey, str]:
        """One provider per distinct (type, base URL, key, api_version, headers), named in order of use."""
        names: dict[ProviderKey, str] = {}
        counts: dict[str, int] = {}
        for d in deployments:
            p = d.provider
            if p in names:
                continue
            counts[p.type] = counts.get(p.type, 0) + 1
            name = names[p] = p.type if counts[p.type] == 1 else f"{p.type}-{counts[p.type]}"
            entry: dict[str, Any] = {"type": p.type}
            for key, value in (("base_url", p.base_url), ("api_version", p.api_version), ("api_key", p.api_key)):
                if value is not None:
                    entry[key] = value
            entry.update((k, dict(v) if isinstance(v, tuple) else v) for k, v in p.native)
            if p.headers:
                entry["headers"] = dict(p.headers)
            self.draft.top.setdefault("providers", {})[name] = entry
            self.draft.note(("providers", name), f"first used by model_list[{d.index}] ({self.draft.where(d.pointer)})")
            if d.key_note and p.api_key is not None:
                self.draft.note(("providers", name, "api_key"), d.key_note)
        return names

    def run(self) -> bool:
        """Translate everything into the draft; False when no model could be translated."""
        self.read_credentials()
        for key in self.data:
            if key not in _TOP and key != "credential_list":
                self.draft.unused(join_pointer("", key), key)
        model_list = self.data.get("model_list")
        if model_list is not None and not isinstance(model_list, list):
            self.invalid("/model_list", "model_list is not a list")
        by_group: dict[str, list[Deployment]] = {}
        for index, entry in enumerate(model_list if isinstance(model_list, list) else ()):
            d = self.deployment(index, entry)
            if d is not None:
                by_group.setdefault(d.group, []).append(d)
        settled = {name: settle_group(self.draft, name, ds, shuffle=self.shuffle) for name, ds in by_group.items()}
        kept = {name: ds for name, ds in settled.items() if ds}
        for name in [n for n in self.draft.groups if n not in kept]:
            del self.draft.groups[name]
        names = self.providers([d for ds in kept.values() for d in ds])
        for name, ds in kept.items():
            self.draft.groups[name]["targets"] = [
                {"provider": names[d.provider], "model": d.model, **d.target} for d in ds
            ]
            for j, d in enumerate(ds):
                for text in (f"model_list[{d.index}] ({self.draft.where(d.pointer)})", *d.notes):
                    self.draft.note(("models", name, "targets", j), text)
        if kept:
            translate_settings(self.data, self.draft)
        return bool(kept)


def _spec(draft: Draft) -> dict[str, Any]:
    spec: dict[str, Any] = {"version": 1}
    if draft.defaults:
        spec["defaults"] = {
            k: draft.defaults[k] for k in ("timeout", "strategy", "retry", "cooldown") if k in draft.defaults
        }
    spec["providers"] = draft.top.pop("providers")
    spec["models"] = {
        name: {
            **{k: group[k] for k in _GROUP_KEYS if k in group},
            "targets": [{k: t[k] for k in _TARGET_KEYS if k in t} for t in group["targets"]],
        }
        for name, group in draft.groups.items()
    }
    spec.update(draft.top)
    return spec


def import_litellm(text: str, filename: str) -> Imported:
    """Translate the LiteLLM config ``text`` (named ``filename`` in diagnostics) into a spec."""
    parsed = parse(text, filename)
    if parsed.data is None:
        return Imported(None, parsed.diagnostics)
    out = Collector(filename, parsed.source_map.locate)
    if not isinstance(parsed.data, Mapping):
        out.error("litellm.invalid", "", "a LiteLLM config is a mapping with a model_list")
        return Imported(None, tuple(out.sorted()))
    draft = Draft(out, features())
    if not _Importer(parsed.data, draft).run():
        where = "/model_list" if "model_list" in parsed.data else ""
        out.error("litellm.empty", where, "no model of this config could be translated, so no spec is written")
        return Imported(None, tuple(sorted(out.diagnostics, key=sort_key)))
    source = filename.replace("\\", "/").rsplit("/", 1)[-1]
    header = [
        f"Translated from the LiteLLM config {source} by `sidegate import litellm`.",
        "os.environ/NAME became ${NAME}: the spec holds references to secrets, never their values.",
    ]
    footer: list[str] = []
    if draft.left_behind:
        header.append(f"Review the {len(draft.left_behind)} note(s) at the end: settings left behind or assumed.")
        notes = (f"  {note}" for _, _, note in sorted(draft.left_behind))
        footer = ["", "Left behind or assumed (line in the LiteLLM config):", *notes]
    spec = dump(_spec(draft), draft.notes, header, footer)
    return Imported(spec, tuple(sorted(out.diagnostics, key=sort_key)))
