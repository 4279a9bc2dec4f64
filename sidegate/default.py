"""Module-level calls (`sidegate.completion(...)`, LiteLLM's style) on a default gateway:

- with `SIDEGATE_SPEC` set, one gateway serving that spec, for every call;
- without it, `model="provider/model"` names a catalog provider type and its model for a one-off
  call with no spec: the key from the provider's usual environment variable (`OPENAI_API_KEY`...)
  or `api_key=`, the base URL from the catalog or `api_base=`. One gateway per provider and
  settings, kept for the next call.

Every default gateway is closed at interpreter exit (its last spend rows written).
"""

from __future__ import annotations

import atexit
import json
import os
import threading
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
from typing import Any

from sidegate.gateway import Gateway, SpecError, compile_spec
from sidegate.runtime.plan import Secret, SecretPart, SecretSource
from sidegate.wire import Result

__all__ = ["acompletion", "aembedding", "amessages", "aresponses", "close_defaults", "completion", "embedding",
           "messages", "responses"]

_SPEC_ENV = "SIDEGATE_SPEC"
_lock = threading.Lock()
_gateways: dict[tuple[str, ...], Gateway] = {}


def one_off_spec(model: str, api_base: str | None = None) -> tuple[str, str]:
    """(spec text, provider name) serving `provider/model` as the model `provider/model`."""
    from sidegate.compiler.data.catalog import load_catalog

    kind, sep, upstream = model.partition("/")
    if not sep or not upstream:
        raise SpecError(f"model {model!r}: without {_SPEC_ENV}, name it as provider/model (e.g. openai/gpt-4o)")
    provider: dict[str, Any] = {"type": kind}
    if kind != "mock":
        catalog = load_catalog()
        entry = catalog.get(kind)
        if entry is None:
            raise SpecError(f"provider type {kind!r} is not in the catalog (see `sidegate providers`)")
        if entry.key_env is not None and entry.requires_key:
            provider["api_key"] = "${" + entry.key_env + "}"
    if api_base is not None:
        provider["base_url"] = api_base
    spec = {"version": 1, "providers": {kind: provider}, "models": {model: {"targets": [
        {"provider": kind, "model": upstream}]}}}
    return json.dumps(spec), kind  # JSON is YAML


def _default(model: str, api_base: str | None, api_key: str | None) -> Gateway:
    spec_path = os.environ.get(_SPEC_ENV)
    key = ("spec", spec_path) if spec_path else ("model", model.partition("/")[0], model, api_base or "",
                                                   api_key or "")
    with _lock:
        gateway = _gateways.get(key)
        if gateway is None:
            gateway = _gateways[key] = _build(model, spec_path, api_base, api_key)
        return gateway


def _build(model: str, spec_path: str | None, api_base: str | None, api_key: str | None) -> Gateway:
    if spec_path:
        return Gateway.from_spec(os.fspath(spec_path))
    text, name = one_off_spec(model, api_base)
    plan = compile_spec(text)
    if api_key is not None:  # the key given in the call, as literal text in the plan (never in the spec)
        secret = Secret(parts=(SecretPart(source=SecretSource.TEXT, value=api_key),))
        plan = replace(plan, providers=tuple(replace(p, api_key=secret) if p.name == name else p
                                             for p in plan.providers))
    return Gateway(plan)


def close_defaults() -> None:
    """Close every default gateway (done at interpreter exit; the next call builds a new one)."""
    with _lock:
        gateways = list(_gateways.values())
        _gateways.clear()
    for gateway in gateways:
        gateway.close()


atexit.register(close_defaults)


def completion(model: str, messages: list[dict[str, Any]], *, stream: bool = False, api_base: str | None = None,
               api_key: str | None = None, **params: Any) -> Result | Iterator[Result]:
    """`Gateway.completion` on the default gateway."""
    return _default(model, api_base, api_key).completion(model, messages, stream=stream, **params)


async def acompletion(model: str, messages: list[dict[str, Any]], *, stream: bool = False,
                      api_base: str | None = None, api_key: str | None = None,
                      **params: Any) -> Result | AsyncIterator[Result]:
    """`Gateway.acompletion` on the default gateway."""
    gateway = _default(model, api_base, api_key)
    return await gateway.acompletion(model, messages, stream=stream, **params)


def embedding(model: str, input: str | list[str], *, api_base: str | None = None, api_key: str | None = None,
              **params: Any) -> Result:
    """`Gateway.embedding` on the default gateway."""
    return _default(model, api_base, api_key).embedding(model, input, **params)


async def aembedding(model: str, input: str | list[str], *, api_base: str | None = None,
                     api_key: str | None = None, **params: Any) -> Result:
    """`Gateway.aembedding` on the default gateway."""
    return await _default(model, api_base, api_key).aembedding(model, input, **params)


def responses(model: str, input: Any, *, stream: bool = False, api_base: str | None = None,
              api_key: str | None = None, **params: Any) -> Result | Iterator[Result]:
    """`Gateway.responses` on the default gateway."""
    return _default(model, api_base, api_key).responses(model, input, stream=stream, **params)


async def aresponses(model: str, input: Any, *, stream: bool = False, api_base: str | None = None,
                     api_key: str | None = None, **params: Any) -> Result | AsyncIterator[Result]:
    """`Gateway.aresponses` on the default gateway."""
    return await _default(model, api_base, api_key).aresponses(model, input, stream=stream, **params)


def messages(model: str, messages: list[dict[str, Any]], *, max_tokens: int, stream: bool = False,
             api_base: str | None = None, api_key: str | None = None, **params: Any) -> Result | Iterator[Result]:
    """`Gateway.messages` on the default gateway."""
    gateway = _default(model, api_base, api_key)
    return gateway.messages(model, messages, max_tokens=max_tokens, stream=stream, **params)


async def amessages(model: str, messages: list[dict[str, Any]], *, max_tokens: int, stream: bool = False,
                    api_base: str | None = None, api_key: str | None = None,
                    **params: Any) -> Result | AsyncIterator[Result]:
    """`Gateway.amessages` on the default gateway."""
    gateway = _default(model, api_base, api_key)
    return await gateway.amessages(model, messages, max_tokens=max_tokens, stream=stream, **params)
