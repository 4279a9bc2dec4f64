"""Resolving secret references from the plan into values, at start (never stored in the plan)."""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Iterator, Mapping
from dataclasses import replace

from sidegate.runtime.plan import Secret, SecretSource, Server

__all__ = ["SecretError", "resolve", "resolve_listen", "split_listen", "unresolved"]

_LISTEN = re.compile(r"\[([0-9a-fA-F:]+)\]:([0-9]{1,5})|([A-Za-z0-9.-]+):([0-9]{1,5})")


class SecretError(RuntimeError):
    """A referenced environment variable or file is missing. The message names the reference only."""


def resolve(secret: Secret) -> str:
    """The secret's value: parts concatenated, env vars and files read now (call off the event loop)."""
    out: list[str] = []
    for part in secret.parts:
        if part.source is SecretSource.TEXT:
            out.append(part.value)
        elif part.source is SecretSource.ENV:
            value = os.environ.get(part.value)
            if value is None:
                raise SecretError(f"environment variable {part.value} is not set")
            out.append(value)
        else:
            try:
                with open(part.value, encoding="utf-8") as fh:
                    out.append(fh.read().strip())
            except OSError as exc:
                raise SecretError(f"cannot read secret file {part.value}: {exc.strerror}") from None
    return "".join(out)


def split_listen(text: str) -> tuple[str, int]:
    """(host, port) of a `host:port` or `[v6]:port` address; ValueError when it is not one."""
    match = _LISTEN.fullmatch(text.strip())
    if match is None:
        raise ValueError(f"'{text}' is not host:port")
    port = int(match.group(2) or match.group(4))
    if port > 65535:
        raise ValueError(f"port {port} is out of range (0-65535)")
    return match.group(1) or match.group(3), port


def resolve_listen(server: Server) -> Server:
    """The server with a referenced `listen` resolved into host and port (SecretError otherwise)."""
    if server.listen is None:
        return server
    text = resolve(server.listen)
    try:
        host, port = split_listen(text)
    except ValueError as exc:
        raise SecretError(f"server.listen: {exc}") from None
    return replace(server, host=host, port=port, listen=None)


def _references(value: object, where: str) -> Iterator[tuple[str, Secret]]:
    """Every secret reference inside a plan value, with where it sits (`providers[openai].api_key`)."""
    if isinstance(value, Secret):
        yield where, value
    elif dataclasses.is_dataclass(value) and not isinstance(value, type):
        for f in dataclasses.fields(value):
            yield from _references(getattr(value, f.name), f"{where}.{f.name}" if where else f.name)
    elif isinstance(value, tuple):
        for i, item in enumerate(value):
            name = getattr(item, "name", None) or getattr(item, "id", None)  # groups, providers; targets
            yield from _references(item, f"{where}[{name if isinstance(name, str) else i}]")
    elif isinstance(value, Mapping):
        for key, item in value.items():
            yield from _references(item, f"{where}[{key}]")


def unresolved(plan: object) -> list[str]:
    """What keeps the plan's secret references from resolving now, one line each (`where: why`),
    every one of them at once; empty when all resolve (reads the environment and files: call off
    the event loop)."""
    problems: dict[str, list[str]] = {}
    for where, secret in _references(plan, ""):
        try:
            resolve(secret)
        except SecretError as exc:
            problems.setdefault(str(exc), []).append(where)
    return [f"{why} ({', '.join(places)})" for why, places in problems.items()]
