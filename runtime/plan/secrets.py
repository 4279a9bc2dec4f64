"""Resolving secret references from the plan into values, at start (never stored in the plan)."""

from __future__ import annotations

import os
import re
from dataclasses import replace

from runtime.plan import Secret, SecretSource, Server

__all__ = ["SecretError", "resolve", "resolve_listen", "split_listen"]

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
