"""Guardrails' detectors and compiler rules: checksums (Luhn, mod-97, SSN and NINO rules) decide
what is flagged, presets find secrets, masking keeps the text readable, spec patterns that could
take more than linear time are refused, and hostile text stays fast; which guardrails a request gets."""

from __future__ import annotations

import time
from typing import Any

import pytest
import trio

from sidegate.compiler.pipeline import compile_text
from sidegate.compiler.sections.guardrails import pattern_problem
from sidegate.runtime.errors import BadRequest, GuardrailBlocked
from sidegate.runtime.guardrails.detect import Detector, iban_valid, luhn_valid
from sidegate.runtime.guardrails.service import Guardian
from sidegate.runtime.plan.guardrails import GUARD_PRESETS, PII_ENTITIES, GuardAction, GuardKind, GuardMode, Guardrail


def rule(kind: GuardKind, **kw: Any) -> Detector:
    return Detector(Guardrail(name="g", kind=kind, mode=GuardMode.PRE_CALL, action=GuardAction.MASK,
                              default_on=True, **kw))


PII = rule(GuardKind.PII, entities=PII_ENTITIES)
NUMBERS = rule(GuardKind.PII, entities=("credit_card", "iban", "us_ssn", "uk_nino"))
SECRETS = rule(GuardKind.REGEX, presets=GUARD_PRESETS)


@pytest.mark.parametrize("card", ["4111 1111 1111 1111", "4242-4242-4242-4242", "378282246310005", "5555555555554444"])
def test_a_luhn_valid_card_is_masked_keeping_its_last_four(card: str) -> None:
    assert NUMBERS.mask(f"pay with {card} today") == (f"pay with [CARD ****{card[-4:]}] today", 1)


@pytest.mark.parametrize("text", ["4111 1111 1111 1112", "4242424242424241", "1234567812345678", "order 1234-5678-9012"])
def test_numbers_that_fail_their_checks_are_not_flagged(text: str) -> None:
    assert NUMBERS.mask(text) == (text, 0) and NUMBERS.violation([text]) is None


def test_checksums() -> None:
    assert luhn_valid("4111111111111111") and not luhn_valid("4111111111111112")
    assert iban_valid("GB82 WEST 1234 5698 7654 32") and iban_valid("DE89370400440532013000")
    assert not iban_valid("GB82 WEST 1234 5698 7654 33") and not iban_valid("DE89370400440532013001")


@pytest.mark.parametrize(("text", "masked"), [
    ("IBAN DE89 3704 0044 0532 0130 00.", "IBAN [IBAN]."),
    ("IBAN DE89 3704 0044 0532 0130 01.", "IBAN DE89 3704 0044 0532 0130 01."),
    ("SSN 123-45-6789", "SSN [SSN]"),
    ("SSN 000-45-6789 666-45-6789 912-45-6789 123-00-6789 123-45-0000",
     "SSN 000-45-6789 666-45-6789 912-45-6789 123-00-6789 123-45-0000"),
    ("NINO AB 12 34 56 C", "NINO [NINO]"),
    ("NINO GB123456C QQ123456C AO123456A", "NINO GB123456C QQ123456C AO123456A"),
])
def test_national_ids_and_ibans_follow_their_rules(text: str, masked: str) -> None:
    assert NUMBERS.mask(text)[0] == masked


def test_pii_masking_keeps_the_text_readable() -> None:
    text = "Write to ann.lee+x@mail.example.co.uk or call +44 20 7946 0958; card 4111111111111111."
    assert PII.mask(text) == ("Write to [EMAIL] or call [PHONE]; card [CARD ****1111].", 3)
    assert PII.mask("the meeting is on 2026-12-02 at 10:30, ticket 123456789") == (
        "the meeting is on 2026-12-02 at 10:30, ticket 123456789", 0)


def test_secret_presets() -> None:
    text = ("openai sk-proj-abcdefghijklmnopqrstuvwxyz12 anthropic sk-ant-api03-" + "x" * 40 + " aws "
            "AKIAIOSFODNN7EXAMPLE gh ghp_" + "a" * 36 + "\n-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXk=\n"
            "-----END OPENSSH PRIVATE KEY-----\nend")
    assert SECRETS.mask(text) == ("openai [API_KEY] anthropic [API_KEY] aws [AWS_KEY] gh [API_KEY]\n[PRIVATE_KEY]\n"
                                  "end", 5)
    assert SECRETS.violation(["sk-short and AKIA123"]) is None


def test_keywords_topics_and_size() -> None:
    words = rule(GuardKind.KEYWORDS, words=("project falcon", "c++"))
    assert words.mask("About Project  Falcon, PROJECT FALCON and c++.") == (
        "About Project  Falcon, [REDACTED] and [REDACTED].", 2)
    assert words.violation(["falconry"]) is None
    topics = rule(GuardKind.TOPICS, allowed_keywords=("invoice",))
    assert topics.violation(["where is my invoice?"]) is None and topics.violation(["tell a joke"]) == "off_topic"
    size = rule(GuardKind.MAX_PROMPT, max_chars=10)
    assert size.violation(["12345", "67890"]) is None and size.violation(["12345", "678901"]) == "max_chars"


@pytest.mark.parametrize("pattern", ["(a+)+b", "a*", "(?:ab|cd){1,5}", "(x{1,3}){1,3}", r"(x)\1", "(?=a)b",
                                     "a{1,1000}", "(unclosed"])
def test_patterns_that_could_be_slow_are_refused(pattern: str) -> None:
    assert pattern_problem(pattern) is not None


@pytest.mark.parametrize("pattern", [r"\bPROJECT-[0-9]{4}\b", "secret|password", "[a-z]{1,256}@corp", "(?:ab){0,3}"])
def test_bounded_patterns_are_accepted(pattern: str) -> None:
    assert pattern_problem(pattern) is None


def test_hostile_text_stays_linear() -> None:
    for hostile in ("1" * 1_000_000, "1 " * 500_000, "a@" * 500_000, "-----BEGIN RSA PRIVATE KEY-----" * 30_000,
                    ("x." * 200 + "@") * 2_000, "+1 (" * 250_000):
        t0 = time.perf_counter()
        PII.mask(hostile)
        SECRETS.mask(hostile)
        assert time.perf_counter() - t0 < 5, hostile[:20]


SPEC = """\
version: 1
providers: {m: {type: mock}}
guardrails:
  g1: {kind: pii}
  g2: {kind: keywords, words: [x], default_on: false}
  k1: {kind: max_prompt, max_chars: 10}
  t1: {kind: pii, mode: post_call, action: mask}
models:
  demo: {guardrails: [g1, g2], targets: [{provider: m, model: demo}]}
  other: {targets: [{provider: m, model: demo}]}
auth:
  keys: [{name: ci, key: "${CI}", team: ops, guardrails: [k1]}]
teams: {ops: {guardrails: [t1]}}
"""


class _Logs:
    def info(self, event: str, **fields: object) -> None:
        pass


def test_a_request_gets_its_group_key_and_team_guardrails_and_may_add_only_allowed_ones() -> None:
    from prometheus_client import CollectorRegistry

    plan = compile_text(SPEC, "g.yaml").plan
    assert plan is not None and plan.guardrails is not None
    guards = Guardian(_Logs(), CollectorRegistry())  # type: ignore[arg-type]
    guards.configure(plan.guardrails)

    def names(group: str, key: str | None, team: str | None, body: dict[str, Any]) -> list[str]:
        applied = guards.select(group, key, team, body)
        assert "guardrails" not in body
        return [] if applied is None else [d.rule.name for d in applied.pre + applied.post]

    assert names("demo", None, None, {}) == ["g1"]
    assert names("demo", "ci", "ops", {}) == ["g1", "k1", "t1"]
    assert names("demo", "ci", "ops", {"guardrails": ["g2"]}) == ["g1", "g2", "k1", "t1"]
    assert names("other", "ci", None, {"guardrails": ["k1"]}) == ["k1"]
    assert names("other", None, None, {}) == []
    extra: dict[str, Any] = {}
    with pytest.raises(GuardrailBlocked):
        trio.run(guards.start, "demo", "ci", None, "chat", {"messages": [{"role": "user", "content": "x" * 11}]},
                 "rid", extra)
    assert extra == {"guardrails": ["g1:passed", "k1:blocked"]}  # the request's log line says why, not what
    for body in ({"guardrails": ["g2"]}, {"guardrails": "g1"}, {"guardrails": [1]}):
        with pytest.raises(BadRequest):
            names("other", None, None, body)
