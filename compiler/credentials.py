"""Credentials written literally in a spec are errors: they would land in the plan, in the
rendered ConfigMap and in every `compile` output.

Two shapes are caught here (the fields that are secret references by nature, `api_key` and the
like, are checked where they are resolved):

- a credential in a URL's userinfo (`postgresql://u:secretpw@db/x`, `https://token@host`):
  `store.database`, `store.redis`, `store.archive.endpoint_url`, providers' `base_url`, MCP servers' `url` and OAuth
  `token_url`, A2A agents' `url`/`card_url`, `auth.jwt.jwks_url`; and a key in a query string
  (`?key=...`);
- a literal value of a credential-bearing header (`Authorization`, `X-Api-Key`, `api-key`,
  `Proxy-Authorization`, `Cookie`, or any name saying key/token/secret/password/auth), or of any
  header whose value is shaped like a key (`sk-...`).

A whole-string reference (`${DATABASE_URL}`, `{env: X}`, `{file: /path}`) is always accepted, and so
is a URL whose password part is a reference (`postgresql://app:${PGPASSWORD}@db/x`).
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from typing import Any
from urllib.parse import parse_qsl, urlsplit, urlunsplit

from sidegate.compiler.diagnostics import Collector, join_pointer
from sidegate.runtime.observe.scrub import Scrubber

__all__ = ["CREDENTIAL_HEADERS", "check_credentials"]

CREDENTIAL_HEADERS = frozenset({
    "authorization", "proxy-authorization", "x-api-key", "api-key", "x-goog-api-key", "cookie",
    "x-auth-token", "ocp-apim-subscription-key", "x-amz-security-token", "private-token", "x-functions-key",
})
_CREDENTIAL_WORDS = re.compile(r"key|token|secret|passw|auth|cookie|credential|signature", re.I)
_QUERY_KEYS = frozenset({"key", "api_key", "apikey", "api-key", "token", "access_token", "password", "secret",
                         "sig", "signature", "client_secret"})
_REFERENCE = re.compile(r"\$\{[A-Za-z_][A-Za-z0-9_]*\}")
_SHAPES = Scrubber()
_DSN_ENV = {"database": "DATABASE_URL", "redis": "REDIS_URL"}
_ELSEWHERE = {
    "base_url": "send the key with api_key: ${NAME} or in headers (Authorization: \"Basic ${CREDENTIALS}\")",
    "mcp": "send it in headers (Authorization: \"Bearer ${TOKEN}\") or auth: {bearer: ${TOKEN}}",
    "a2a": "send it with auth: {bearer: ${TOKEN}} or auth: {header: {name: ..., value: ${TOKEN}}}",
    "url": "this URL cannot carry credentials: remove them",
}
_FIX = "write it as a reference: ${NAME} inside the value, {env: NAME} or {file: /path}"


def check_credentials(spec: Mapping[str, Any], out: Collector) -> None:
    """Report every literal credential in a URL or a header of `spec` (the schema-valid document)."""
    for pointer, value, kind in _urls(spec):
        _check_url(value, pointer, kind, out)
    for pointer, name, value in _headers(spec):
        _check_header(name, value, pointer, out)


def _get(obj: Any, *keys: str) -> Any:
    for key in keys:
        if not isinstance(obj, Mapping):
            return None
        obj = obj.get(key)
    return obj


def _named(spec: Mapping[str, Any], *keys: str) -> Iterator[tuple[str, str, Any]]:
    """(pointer, name, value) of each entry of the mapping at `keys`."""
    section = _get(spec, *keys)
    if isinstance(section, Mapping):
        for name, value in section.items():
            yield join_pointer("/" + "/".join(keys), str(name)), str(name), value


def _urls(spec: Mapping[str, Any]) -> Iterator[tuple[str, Any, str]]:
    """(pointer, value, kind) of every field that holds a URL."""
    yield "/store/database", _get(spec, "store", "database"), "database"
    yield "/store/redis", _get(spec, "store", "redis"), "redis"
    yield "/auth/jwt/jwks_url", _get(spec, "auth", "jwt", "jwks_url"), "url"
    yield "/store/archive/endpoint_url", _get(spec, "store", "archive", "endpoint_url"), "url"
    for pointer, _, raw in _named(spec, "providers"):
        yield f"{pointer}/base_url", _get(raw, "base_url"), "base_url"
    for pointer, _, raw in _named(spec, "mcp", "servers"):
        yield f"{pointer}/url", _get(raw, "url"), "mcp"
        yield f"{pointer}/auth/oauth/token_url", _get(raw, "auth", "oauth", "token_url"), "url"
    for pointer, _, raw in _named(spec, "a2a", "agents"):
        yield f"{pointer}/url", _get(raw, "url"), "a2a"
        yield f"{pointer}/card_url", _get(raw, "card_url"), "a2a"


def _headers(spec: Mapping[str, Any]) -> Iterator[tuple[str, str, Any]]:
    """(pointer, header name, value) of every configured header."""
    owners: list[tuple[str, Any]] = [(p, raw) for p, _, raw in _named(spec, "providers")]
    owners += [(p, raw) for p, _, raw in _named(spec, "mcp", "servers")]
    for pointer, _, group in _named(spec, "models"):
        targets = _get(group, "targets")
        if isinstance(targets, list):
            owners += [(f"{pointer}/targets/{i}", t) for i, t in enumerate(targets)]
    for pointer, raw in owners:
        headers = _get(raw, "headers")
        if isinstance(headers, Mapping):
            for name, value in headers.items():
                yield join_pointer(pointer, "headers", str(name)), str(name), value


def _literal(value: str) -> str:
    """`value` without its `${...}` references (what would be written into the plan as it is)."""
    return _REFERENCE.sub("", value)


def _check_url(value: Any, pointer: str, kind: str, out: Collector) -> None:
    if not isinstance(value, str) or "://" not in value:
        return  # a reference object, a whole ${...} reference, or a path (the schema judges the rest)
    try:
        parts = urlsplit(value)
        netloc = parts.netloc
    except ValueError:
        return
    userinfo, at, host = netloc.rpartition("@")
    if at:
        user, colon, password = userinfo.partition(":")
        if kind in _DSN_ENV and colon and password and _literal(password):
            example = urlunsplit(parts._replace(netloc=f"{user}:${{PASSWORD}}@{host}", query=""))
            out.error("secret.url-credentials", pointer,
                      f"the URL holds a literal password, which would be written into the plan; write {example} "
                      f"(the password from ${{PASSWORD}}) or the whole URL as a reference: ${{{_DSN_ENV[kind]}}} "
                      f"or {{env: {_DSN_ENV[kind]}}}")
            return
        if kind not in _DSN_ENV and _literal(userinfo):
            out.error("secret.url-credentials", pointer,
                      f"the URL holds credentials in its user part, which would be written into the plan; "
                      f"{_ELSEWHERE[kind]}")
            return
    for key, item in parse_qsl(parts.query, keep_blank_values=True):
        if key.lower() in _QUERY_KEYS and _literal(item):
            out.error("secret.url-credentials", pointer,
                      f"the URL's query holds a literal '{key}', which would be written into the plan; write "
                      f"?{key}=${{NAME}} (read from the environment) or {_ELSEWHERE.get(kind, _ELSEWHERE['url'])}")
            return


def _check_header(name: str, value: Any, pointer: str, out: Collector) -> None:
    if not isinstance(value, str):
        return  # {env: ...} / {file: ...}
    literal = _literal(value)
    if not literal.strip():
        return
    credential = name.lower() in CREDENTIAL_HEADERS or _CREDENTIAL_WORDS.search(name) is not None
    if credential and _REFERENCE.search(value) is None:
        out.error("secret.literal-header", pointer,
                  f"header '{name}' carries a credential written literally, which would be written into the plan; "
                  f"{_FIX}, e.g. \"Bearer ${{API_KEY}}\"")
    elif _SHAPES.text(literal) != literal:
        out.error("secret.literal-header", pointer,
                  f"header '{name}' holds a literal value shaped like a key, which would be written into the plan; "
                  f"{_FIX}")
