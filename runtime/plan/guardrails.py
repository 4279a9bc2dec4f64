"""Plan types of guardrails (the `guardrails` section, and the `guardrails` lists of model groups,
spec keys and teams), re-exported by :mod:`runtime.plan`."""

from __future__ import annotations

import enum
from dataclasses import dataclass

__all__ = [
    "GUARD_PRESETS",
    "PII_ENTITIES",
    "GuardAction",
    "GuardKind",
    "GuardMode",
    "GuardTopic",
    "Guardrail",
    "GuardrailAttachment",
    "Guardrails",
]

GUARD_PRESETS = ("api_keys", "aws_keys", "private_keys")
"""The regex kind's named secret patterns."""
PII_ENTITIES = ("email", "phone", "credit_card", "iban", "us_ssn", "uk_nino")
"""What the pii kind detects (all of them by default)."""


class GuardKind(enum.Enum):
    REGEX = "regex"
    KEYWORDS = "keywords"
    PII = "pii"
    MAX_PROMPT = "max_prompt"
    TOPICS = "topics"
    HTTP = "http"
    """An external check: the text POSTed to `url`, which answers allow, block or mask."""
    MODERATION = "moderation"
    """An OpenAI-compatible `/moderations` call to a provider of the plan: flagged blocks."""


class GuardMode(enum.Enum):
    PRE_CALL = "pre_call"
    """On the request, before it is routed."""
    POST_CALL = "post_call"
    """On the whole answer before the client gets it (on a stream: as during_call)."""
    DURING_CALL = "during_call"
    """On a streamed answer as it passes, on a sliding window of its text (a whole answer: at its end)."""


class GuardAction(enum.Enum):
    BLOCK = "block"
    MASK = "mask"
    LOG = "log"


@dataclass(frozen=True, slots=True, kw_only=True)
class GuardTopic:
    """A blocked topic: its name (logged) and the keywords that mark it."""

    name: str
    keywords: tuple[str, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class Guardrail:
    """One named guardrail."""

    name: str
    kind: GuardKind
    mode: GuardMode
    action: GuardAction
    default_on: bool
    """Run on every request it is attached to (False: only on requests naming it in `guardrails`)."""
    patterns: tuple[str, ...] = ()
    """regex: the spec's own patterns (checked linear-time by the compiler)."""
    presets: tuple[str, ...] = ()
    """regex: names of `GUARD_PRESETS`."""
    words: tuple[str, ...] = ()
    """keywords: whole words or phrases, matched case-insensitively."""
    entities: tuple[str, ...] = ()
    """pii: which of `PII_ENTITIES`."""
    max_chars: int | None = None
    """max_prompt: the most characters of message text a request may have."""
    blocked_topics: tuple[GuardTopic, ...] = ()
    allowed_keywords: tuple[str, ...] = ()
    """topics: when set, a prompt must mention one of these."""
    url: str | None = None
    """http: where the text is POSTed."""
    provider: str | None = None
    """moderation: the provider (of the OpenAI family) whose `/moderations` endpoint is called."""
    model: str | None = None
    """moderation: the moderation model (None: the provider's default)."""
    timeout: float = 5.0
    """http, moderation: seconds the check may take (connecting included)."""
    fail_open: bool = False
    """http, moderation: when the check fails or times out, let the call go on (False: 503)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class GuardrailAttachment:
    """The guardrails a model group, spec key or team names."""

    owner: str
    guardrails: tuple[str, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class Guardrails:
    """Every guardrail, and who names which (a request gets the union for its group, key and team)."""

    rules: tuple[Guardrail, ...]
    groups: tuple[GuardrailAttachment, ...]
    keys: tuple[GuardrailAttachment, ...]
    """By spec key name."""
    teams: tuple[GuardrailAttachment, ...]
