"""Resolving secret references from the plan into values, at start (never stored in the plan)."""

from __future__ import annotations

import os

from runtime.plan import Secret, SecretSource

__all__ = ["SecretError", "resolve"]


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
