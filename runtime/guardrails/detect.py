"""The built-in detectors: each finds spans of a text and says what replaces them when masking.

Patterns are linear-time (every repeat bounded, no repeat or alternation inside a repeat, the
only lookarounds one character wide), and numbers are checked before they count: Luhn for cards,
mod-97 for IBANs, the SSA's rules for US SSNs and HMRC's prefixes for UK NINOs.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from sidegate.runtime.plan.guardrails import GuardKind, Guardrail

__all__ = ["WINDOW", "Detector", "Finder", "iban_valid", "luhn_valid", "nino_valid", "ssn_valid"]

WINDOW = 1024
"""The most characters of a stream held back for a during_call check (a guardrail's longest match,
at most this: a longer finding is caught by its first `WINDOW` characters)."""
_parser: Any = importlib.import_module("re._parser")

Validate = Callable[[re.Match[str]], str | None]
"""A match's replacement when it is a real finding; None: not one (a checksum failed)."""


def luhn_valid(digits: str) -> bool:
    """The Luhn check of a card number's digits."""
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i % 2:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def iban_valid(iban: str) -> bool:
    """ISO 13616's mod-97 check (the country's letters and the check digits moved to the end)."""
    s = iban.replace(" ", "").upper()
    if not 15 <= len(s) <= 34:
        return False
    rest = 0
    for ch in s[4:] + s[:4]:
        for d in str(int(ch, 36)):
            rest = (rest * 10 + ord(d) - 48) % 97
    return rest == 1


def ssn_valid(area: str, group: str, serial: str) -> bool:
    """The SSA's rules: no area 000, 666 or 900-999, no group 00, no serial 0000."""
    return area not in ("000", "666") and area[0] != "9" and group != "00" and serial != "0000"


_NINO_BAD_PREFIX = frozenset({"BG", "GB", "KN", "NK", "NT", "TN", "ZZ"})


def nino_valid(prefix: str) -> bool:
    """HMRC's prefix rules (D, F, I, Q, U, V never used; O never second; a few pairs reserved)."""
    return (prefix[0] not in "DFIQUV" and prefix[1] not in "DFIOQUV" and prefix not in _NINO_BAD_PREFIX)


def _digits(text: str) -> str:
    return "".join(ch for ch in text if ch.isdigit())


def _card(m: re.Match[str]) -> str | None:
    digits = _digits(m.group())
    return f"[CARD ****{digits[-4:]}]" if 13 <= len(digits) <= 19 and luhn_valid(digits) else None


def _phone(m: re.Match[str]) -> str | None:
    text = m.group()
    shaped = text.startswith("+") or "(" in text or any(sep in text for sep in " .-")
    return "[PHONE]" if shaped and 9 <= len(_digits(text)) <= 15 else None


def _fixed(label: str) -> Validate:
    return lambda m: label


_PII: dict[str, tuple[str, Validate]] = {
    "credit_card": (r"(?<![\d-])(?:\d[ -]?){12,18}\d(?![\d-])", _card),
    "iban": (r"\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]){11,30}\b", lambda m: "[IBAN]" if iban_valid(m.group()) else None),
    "us_ssn": (r"(?<!\d)(\d{3})-(\d{2})-(\d{4})(?!\d)",
               lambda m: "[SSN]" if ssn_valid(m.group(1), m.group(2), m.group(3)) else None),
    "uk_nino": (r"\b([A-Z]{2}) ?\d{2} ?\d{2} ?\d{2} ?[A-D]\b", lambda m: "[NINO]" if nino_valid(m.group(1)) else None),
    "email": (r"[A-Za-z0-9._%+-]{1,64}@(?:[A-Za-z0-9-]{1,63}\.){1,8}[A-Za-z]{2,24}\b", _fixed("[EMAIL]")),
    "phone": (r"(?<![\w+])(?:\+\d{1,3}[ .-]?)?(?:\(\d{1,4}\)[ .-]?)?\d{2,4}(?:[ .-]?\d{2,4}){1,5}(?!\w)", _phone),
}
"""In the order they run: cards and IBANs before phone numbers, whose digits they would look like."""

_PRESETS: dict[str, tuple[str, Validate]] = {
    "private_keys": (r"-----BEGIN (?:[A-Z0-9]{1,20} ){0,3}PRIVATE KEY-----[A-Za-z0-9+/=\s]{0,65536}"
                     r"(?:-----END (?:[A-Z0-9]{1,20} ){0,3}PRIVATE KEY-----)?", _fixed("[PRIVATE_KEY]")),
    "api_keys": (r"\b(?:sk-(?:proj-|ant-)?[A-Za-z0-9_-]{20,256}|gh[pousr]_[A-Za-z0-9]{36,255}"
                 r"|xox[abprs]-[A-Za-z0-9-]{10,200})", _fixed("[API_KEY]")),
    "aws_keys": (r"\b(?:AKIA|ASIA|ABIA|ACCA)[A-Z0-9]{16}\b", _fixed("[AWS_KEY]")),
}


@dataclass(frozen=True, slots=True)
class Finder:
    """One compiled pattern and its validation."""

    pattern: re.Pattern[str]
    validate: Validate

    def first(self, text: str) -> bool:
        return any(self.validate(m) is not None for m in self.pattern.finditer(text))

    def mask(self, text: str) -> tuple[str, int]:
        found = 0

        def replace(m: re.Match[str]) -> str:
            nonlocal found
            label = self.validate(m)
            if label is None:
                return m.group()
            found += 1
            return label

        return self.pattern.sub(replace, text), found

    def stream_find(self, text: str, final: bool, pos: int = 0) -> tuple[bool, int | None]:
        """On a stream's window, from `pos`: (found, where the first finding starts). A finding that
        touches the window's end may still grow or vanish with the next text: it is not found yet but
        its start is said (decided later), unless `final` or already `WINDOW` long."""
        return _stream_find(self.pattern.finditer(text, pos), self.validate, len(text), final)


def _stream_find(matches: Iterable[re.Match[str]], validate: Validate | None, end: int,
                 final: bool) -> tuple[bool, int | None]:
    for m in matches:
        if validate is not None and validate(m) is None:
            continue
        return final or m.end() < end or m.end() - m.start() >= WINDOW, m.start()
    return False, None


def _width(pattern: re.Pattern[str]) -> int:
    """The longest text `pattern` can match, at most `WINDOW`."""
    return min(WINDOW, int(_parser.parse(pattern.pattern, pattern.flags).getwidth()[1]))


def _words(words: tuple[str, ...]) -> re.Pattern[str]:
    alternatives = "|".join(re.escape(w) for w in sorted(words, key=len, reverse=True))
    return re.compile(rf"(?<!\w)(?:{alternatives})(?!\w)", re.IGNORECASE)


class Detector:
    """A guardrail's checks, compiled once per plan."""

    def __init__(self, rule: Guardrail) -> None:
        self.rule = rule
        self.finders: list[Finder] = []
        self.topics: list[tuple[str, re.Pattern[str]]] = []
        self.allowed: re.Pattern[str] | None = None
        if rule.kind is GuardKind.REGEX:
            self.finders = [Finder(re.compile(_PRESETS[p][0]), _PRESETS[p][1]) for p in rule.presets]
            self.finders += [Finder(re.compile(p), _fixed("[REDACTED]")) for p in rule.patterns]
        elif rule.kind is GuardKind.KEYWORDS:
            self.finders = [Finder(_words(rule.words), _fixed("[REDACTED]"))]
        elif rule.kind is GuardKind.PII:
            self.finders = [Finder(re.compile(_PII[e][0]), _PII[e][1]) for e in _PII if e in rule.entities]
        elif rule.kind is GuardKind.TOPICS:
            self.topics = [(t.name, _words(t.keywords)) for t in rule.blocked_topics]
            self.allowed = _words(rule.allowed_keywords) if rule.allowed_keywords else None
        patterns = [f.pattern for f in self.finders] + [p for _, p in self.topics]
        self.width = max((_width(p) for p in patterns), default=0)
        """The longest finding this guardrail can have in a stream (at most `WINDOW`)."""

    def violation(self, texts: list[str]) -> str | None:
        """What this guardrail found in `texts` (an entity class or topic name, never the text)."""
        kind = self.rule.kind
        if kind is GuardKind.MAX_PROMPT:
            limit = self.rule.max_chars or 0
            return "max_chars" if sum(map(len, texts)) > limit else None
        if kind is GuardKind.TOPICS:
            for name, pattern in self.topics:
                if any(pattern.search(t) for t in texts):
                    return f"topic:{name}"
            if self.allowed is not None and not any(self.allowed.search(t) for t in texts):
                return "off_topic"
            return None
        for finder in self.finders:
            if any(finder.first(t) for t in texts):
                return "match"
        return None


    def stream_violation(self, text: str, final: bool, pos: int = 0) -> tuple[str | None, int | None]:
        """What this guardrail found in a stream's window (from `pos`: a finding cannot start before
        the new text less `width`) and where it starts, or (None, where a finding still open starts:
        see `Finder.stream_find`); max_prompt is counted by the caller over the whole stream."""
        deferred: int | None = None
        if self.rule.kind is GuardKind.TOPICS:
            for name, pattern in self.topics:
                found, start = _stream_find(pattern.finditer(text, pos), None, len(text), final)
                if found:
                    return f"topic:{name}", start
                if start is not None:
                    deferred = start if deferred is None else min(deferred, start)
            return None, deferred
        for finder in self.finders:
            found, start = finder.stream_find(text, final, pos)
            if found:
                return "match", start
            if start is not None:
                deferred = start if deferred is None else min(deferred, start)
        return None, deferred

    def mask(self, text: str) -> tuple[str, int]:
        """`text` with every finding replaced, and how many there were."""
        total = 0
        for finder in self.finders:
            text, found = finder.mask(text)
            total += found
        return text, total
