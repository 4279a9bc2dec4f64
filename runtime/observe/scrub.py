"""The secret scrubber at the upstream boundary.

Upstreams echo what they received: OpenAI's 401 says "Incorrect API key provided: sk-...", a proxy
in front of a provider may quote the Authorization header back. Everything sidegate relays from an
upstream (error messages, error bodies and events) and every log line goes through one
:class:`Scrubber`, which replaces by `***`:

- every secret value the runtime resolved from the plan (provider keys, header values taken from
  secret references, MCP/A2A credentials, the JWT secret, a DSN's password), and so their
  `Bearer ` forms too;
- tokens shaped like credentials even when sidegate never held them (an upstream echoing another
  key, an OAuth token it minted): `sk-...`, `AIza...`, `AKIA...`, `ya29....`, `Bearer ...`,
  private-key blocks and the like.

Relayed upstream messages are also capped in length (:data:`MESSAGE_LIMIT`).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from urllib.parse import unquote, urlsplit

from sidegate.runtime.errors import GatewayError
from sidegate.runtime.plan import Secret, SecretSource

__all__ = ["MASK", "MESSAGE_LIMIT", "MIN_SECRET", "Scrubber", "SecretCollector", "cap"]

MASK = "***"
MESSAGE_LIMIT = 1000
"""Characters of an upstream's message relayed to a client (the rest is cut, with a marker)."""
MIN_SECRET = 8
"""Resolved values shorter than this are not scrubbed as such: they would match ordinary words
(real provider keys are 20 characters and more; key-shaped tokens are caught by pattern anyway)."""

# Credential shapes, each anchored so ordinary words ("task-force") are left alone.
_SHAPES = (
    r"(?<![A-Za-z0-9])sk-[A-Za-z0-9_*\-]{6,}",  # OpenAI, Anthropic (sk-ant-), DeepSeek, many others
    r"(?<![A-Za-z0-9])AIza[0-9A-Za-z_\-]{20,}",  # Google API keys
    r"(?<![A-Za-z0-9])(?:AKIA|ASIA)[0-9A-Z]{16}(?![A-Za-z0-9])",  # AWS access key ids
    r"(?<![A-Za-z0-9])ya29\.[0-9A-Za-z_\-.]{10,}",  # Google OAuth access tokens
    r"(?<![A-Za-z0-9])(?:gsk_|xai-|hf_|ghp_|gho_|github_pat_|glpat-|r8_|sk_live_|sk_test_)[A-Za-z0-9_\-]{16,}",
    r"(?<![A-Za-z0-9])eyJ[A-Za-z0-9_\-]{8,}\.[A-Za-z0-9_\-]{8,}\.[A-Za-z0-9_\-]*",  # JWTs
    r"-----BEGIN [A-Z ]*PRIVATE KEY-----[\s\S]*?(?:-----END [A-Z ]*PRIVATE KEY-----|$)",
)
_BEARER = r"(?i:(bearer|basic)\s+)[A-Za-z0-9._~+/=\-]{8,}"
# Cheap pre-checks: the pattern pass runs only when one of these occurs in the text.
_HINTS = ("sk-", "sk_", "AIza", "AKIA", "ASIA", "ya29.", "gsk_", "xai-", "hf_", "ghp_", "gho_", "github_pat_",
          "glpat-", "r8_", "eyJ", "earer", "EARER", "asic ", "ASIC ", "PRIVATE KEY")


def cap(text: str, limit: int = MESSAGE_LIMIT) -> str:
    """`text` cut to `limit` characters, with a marker saying how much was left out."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}... ({len(text) - limit} more characters cut)"


class Scrubber:
    """Replaces known secret values and credential-shaped tokens by `***`.

    Built once per plan (:class:`SecretCollector` gathers the values while the runtime resolves
    them); immutable afterwards, so every request and log line can share it.
    """

    __slots__ = ("_exact", "_exact_bytes", "_pattern")

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        values = sorted({s for s in secrets if len(s) >= MIN_SECRET}, key=len, reverse=True)
        self._exact = tuple(values)
        self._exact_bytes = tuple(v.encode() for v in values)
        self._pattern = re.compile("|".join((_BEARER, *_SHAPES)))

    @property
    def secrets(self) -> int:
        """How many resolved values it knows (for tests and the start log line)."""
        return len(self._exact)

    def text(self, text: str) -> str:
        """`text` with every secret and credential-shaped token masked (linear in its length)."""
        for value in self._exact:
            if value in text:
                text = text.replace(value, MASK)
        if any(h in text for h in _HINTS):
            text = self._pattern.sub(_mask, text)
        return text

    def message(self, text: str) -> str:
        """An upstream's message as it may be relayed: scrubbed and capped."""
        return cap(self.text(text))

    def data(self, data: bytes) -> bytes:
        """Relayed bytes (an upstream's error event) with the resolved secret values masked.

        Only exact values: relayed content is the upstream's answer, and text that merely looks like
        a key (a model writing code) is left as it is.
        """
        for value in self._exact_bytes:
            if data.find(value) >= 0:  # (per event: `find` costs less than `in`, which tries an int first)
                data = data.replace(value, MASK.encode())
        return data

    def event(self, data: bytes) -> bytes:
        """An upstream's error event or body as it may be relayed: everything :meth:`text` masks."""
        return self.text(data.decode("utf-8", "replace")).encode()

    def error(self, err: GatewayError) -> GatewayError:
        """`err` with its message (and param/code, which also come from the upstream) scrubbed and
        capped, in place (once: a scrubbed error is left as it is); returned for convenience."""
        if getattr(err, "_scrubbed", False):
            return err
        err._scrubbed = True  # type: ignore[attr-defined]
        err.message = self.message(err.message)
        if err.param is not None:
            err.param = cap(self.text(err.param), 200)
        if err.code is not None and type(err).code != err.code:
            err.code = cap(self.text(err.code), 100)
        err.args = (err.message,)
        return err


def _mask(match: re.Match[str]) -> str:
    prefix = match.group(1)
    return f"{prefix} {MASK}" if prefix else MASK


class SecretCollector:
    """Wraps a resolver (`runtime.plan.secrets.resolve`) and remembers every value it resolved from a
    reference, so the scrubber knows them; literal (TEXT) parts of a value are not secrets."""

    def __init__(self, resolve: Callable[[Secret], str]) -> None:
        self._resolve = resolve
        self.values: set[str] = set()

    def __call__(self, secret: Secret) -> str:
        value = self._resolve(secret)
        if any(p.source is not SecretSource.TEXT for p in secret.parts):
            self.add(value)
            if len(secret.parts) > 1:
                for part in secret.parts:
                    if part.source is not SecretSource.TEXT:
                        self.add(self._resolve(Secret(parts=(part,))))
        return value

    def add(self, value: str) -> None:
        """Remember `value`, and the password of a URL holding one (a DSN read from ${DATABASE_URL})."""
        value = value.strip()
        if not value:
            return
        self.values.add(value)
        if "://" in value and "@" in value:
            try:
                password = urlsplit(value).password
            except ValueError:
                password = None
            if password:
                self.values.update({password, unquote(password)})

    def scrubber(self) -> Scrubber:
        """The scrubber for everything collected so far."""
        return Scrubber(self.values)
