"""The `guardrails` section and the `guardrails` lists of model groups, spec keys and teams: each
guardrail's checks, the names resolved (with a did-you-mean), and regex patterns proven linear-time."""

from __future__ import annotations

import importlib
import re
from collections.abc import Iterable, Mapping
from typing import Any

from sidegate.compiler.diagnostics import Collector, did_you_mean, join_pointer
from sidegate.runtime.plan.guardrails import (
    PII_ENTITIES,
    GuardAction,
    GuardKind,
    GuardMode,
    Guardrail,
    GuardrailAttachment,
    Guardrails,
    GuardTopic,
)

__all__ = ["MAX_REPEAT", "pattern_problem", "resolve_guardrails"]

MAX_REPEAT = 256
"""The largest repeat count a spec pattern may have (`{0,256}`; `*` and `+` are unbounded)."""
_MASKABLE = (GuardKind.REGEX, GuardKind.KEYWORDS, GuardKind.PII)
_OPTIONS = {GuardKind.REGEX: ("patterns", "presets"), GuardKind.KEYWORDS: ("words",), GuardKind.PII: ("entities",),
            GuardKind.MAX_PROMPT: ("max_chars",), GuardKind.TOPICS: ("blocked", "allowed"),
            GuardKind.HTTP: ("url", "timeout", "fail"), GuardKind.MODERATION: ("provider", "model", "timeout", "fail")}
_EXTERNAL = (GuardKind.HTTP, GuardKind.MODERATION)
_NOT_OPENAI = frozenset({"anthropic", "gemini", "vertex", "bedrock", "cohere", "voyage", "azure", "mock"})
"""Provider types without an OpenAI-compatible `/moderations` endpoint."""
_parser: Any = importlib.import_module("re._parser")
_c: Any = importlib.import_module("re._constants")
_REPEATS = {_c.MAX_REPEAT, _c.MIN_REPEAT} | ({_c.POSSESSIVE_REPEAT} if hasattr(_c, "POSSESSIVE_REPEAT") else set())
_REFUSED = {_c.GROUPREF: "a back-reference", _c.GROUPREF_EXISTS: "a conditional group",
            _c.ASSERT: "a lookahead or lookbehind", _c.ASSERT_NOT: "a lookahead or lookbehind"}


def pattern_problem(pattern: str) -> str | None:
    """Why `pattern` could take more than linear time in the text's length (None: it cannot).

    Every repeat is bounded (at most `MAX_REPEAT`), holds no other repeat nor alternation, and
    there are no back-references or lookarounds: each start position then costs a bounded amount.
    """
    try:
        re.compile(pattern)
        tree = _parser.parse(pattern)
    except re.error as exc:
        return f"not a valid regular expression ({exc})"
    return _walk(tree, inside_repeat=False)


def _walk(items: Iterable[Any], *, inside_repeat: bool) -> str | None:
    for op, av in items:
        if op in _REFUSED:
            return f"it holds {_REFUSED[op]} (not allowed: the match could take more than linear time)"
        if op in _REPEATS:
            low, high, body = av
            if high > 1:
                if high == _c.MAXREPEAT or high > MAX_REPEAT:
                    return (f"it holds an unbounded or too large repeat: write {{{low},{MAX_REPEAT}}} at most "
                            f"instead of *, + or a larger count")
                if inside_repeat:
                    return "it holds a repeat inside a repeat (its matching time can grow exponentially)"
            problem = _walk(body, inside_repeat=inside_repeat or high > 1)
        elif op is _c.BRANCH:
            if inside_repeat:
                return "it holds an alternation inside a repeat (its matching time can grow exponentially)"
            problem = next((p for b in av[1] if (p := _walk(b, inside_repeat=False)) is not None), None)
        elif op is _c.SUBPATTERN:
            problem = _walk(av[3], inside_repeat=inside_repeat)
        elif op is _c.ATOMIC_GROUP if hasattr(_c, "ATOMIC_GROUP") else False:
            problem = _walk(av, inside_repeat=inside_repeat)
        else:
            problem = None
        if problem is not None:
            return problem
    return None


def _external(at: str, kind: GuardKind, raw: Mapping[str, Any], providers: Mapping[str, Any],
              out: Collector) -> None:
    if raw.get("mode") == "during_call":
        out.error("guardrails.mode-unsupported", f"{at}/mode", f"a {kind.value} guardrail cannot check a stream as "
                  "it passes (one call per event): use pre_call or post_call")
    required = "url" if kind is GuardKind.HTTP else "provider"
    if required not in raw:
        out.error("guardrails.option-missing", at, f"a {kind.value} guardrail needs `{required}`")
    provider = raw.get("provider")
    if kind is GuardKind.MODERATION and isinstance(provider, str):
        if provider not in providers:
            out.error("guardrails.unknown-provider", f"{at}/provider", f"'{provider}' is not a provider of this spec"
                      f"{did_you_mean(provider, providers)}")
        elif str((providers[provider] or {}).get("type")) in _NOT_OPENAI:
            out.error("guardrails.unknown-provider", f"{at}/provider", f"provider '{provider}' is of type "
                      f"{providers[provider].get('type')}, which has no OpenAI-compatible /moderations endpoint")


def _rule(name: str, raw: Mapping[str, Any], out: Collector, providers: Mapping[str, Any]) -> Guardrail:
    at = join_pointer("/guardrails", name)
    kind = GuardKind(raw["kind"])
    action = GuardAction(raw.get("action", "block"))
    if kind in _EXTERNAL:
        _external(at, kind, raw, providers, out)
    if action is GuardAction.MASK and kind in _EXTERNAL:
        out.error("guardrails.mask-unsupported", f"{at}/action", f"a {kind.value} guardrail blocks or logs (an http "
                  "guardrail masks by answering `mask`): use block or log")
    elif action is GuardAction.MASK and kind not in _MASKABLE:
        out.error("guardrails.mask-unsupported", f"{at}/action",
                  f"a {kind.value} guardrail cannot mask (it finds no span of text to replace): use block or log")
    for option in raw:
        if option not in ("kind", "mode", "action", "default_on") and option not in _OPTIONS[kind]:
            owner = next((k.value for k, opts in _OPTIONS.items() if option in opts), "another")
            out.error("guardrails.option-unused", f"{at}/{option}",
                      f"'{option}' belongs to the {owner} kind, not {kind.value}")
    if kind is GuardKind.REGEX and not raw.get("patterns") and not raw.get("presets"):
        out.error("guardrails.regex-empty", at, "a regex guardrail needs `patterns` or `presets`")
    for i, pattern in enumerate(raw.get("patterns", ()) if kind is GuardKind.REGEX else ()):
        problem = pattern_problem(pattern)
        if problem is not None:
            out.error("guardrails.pattern-refused", f"{at}/patterns/{i}", f"this pattern is refused: {problem}")
    if raw.get("mode") == "during_call" and (action is GuardAction.MASK or raw.get("allowed")):
        what = "mask" if action is GuardAction.MASK else "require an allowed topic"
        out.error("guardrails.mode-unsupported", f"{at}/mode", f"a during_call guardrail cannot {what}: that needs "
                  "the whole answer (use post_call on non-streamed answers)")
    required = {GuardKind.KEYWORDS: "words", GuardKind.MAX_PROMPT: "max_chars"}.get(kind)
    if required is not None and required not in raw:
        out.error("guardrails.option-missing", at, f"a {kind.value} guardrail needs `{required}`")
    if kind is GuardKind.TOPICS and "blocked" not in raw and "allowed" not in raw:
        out.error("guardrails.option-missing", at, "a topics guardrail needs `blocked` or `allowed`")
    return Guardrail(
        name=name, kind=kind, mode=GuardMode(raw.get("mode", "pre_call")), action=action,
        default_on=bool(raw.get("default_on", True)),
        patterns=tuple(raw.get("patterns", ())) if kind is GuardKind.REGEX else (),
        presets=tuple(raw.get("presets", ())) if kind is GuardKind.REGEX else (),
        words=tuple(raw.get("words", ())) if kind is GuardKind.KEYWORDS else (),
        entities=tuple(e for e in PII_ENTITIES if e in raw.get("entities", PII_ENTITIES))
        if kind is GuardKind.PII else (),
        max_chars=raw.get("max_chars") if kind is GuardKind.MAX_PROMPT else None,
        blocked_topics=tuple(GuardTopic(name=t, keywords=tuple(w)) for t, w in sorted(raw.get("blocked", {}).items()))
        if kind is GuardKind.TOPICS else (),
        allowed_keywords=tuple(raw.get("allowed", ())) if kind is GuardKind.TOPICS else (),
        url=raw.get("url") if kind is GuardKind.HTTP else None,
        provider=raw.get("provider") if kind is GuardKind.MODERATION else None,
        model=raw.get("model") if kind is GuardKind.MODERATION else None,
        timeout=float(raw.get("timeout", 5.0)) if kind in _EXTERNAL else 5.0,
        fail_open=raw.get("fail") == "open" and kind in _EXTERNAL,
    )


def _attach(owner: str, names: Iterable[str], at: str, known: Mapping[str, Guardrail],
            out: Collector) -> GuardrailAttachment:
    for i, name in enumerate(names):
        if name not in known:
            out.error("guardrails.unknown", f"{at}/{i}", f"'{name}' is not a guardrail of this spec"
                      f"{did_you_mean(name, known)}" + ("" if known else " (the spec has no `guardrails` section)"))
    return GuardrailAttachment(owner=owner, guardrails=tuple(names))


def resolve_guardrails(spec: Mapping[str, Any], out: Collector) -> Guardrails | None:
    """The plan's guardrails (None when the spec declares and names none)."""
    providers = spec.get("providers") or {}
    rules = {name: _rule(name, raw, out, providers) for name, raw in sorted(spec.get("guardrails", {}).items())}
    groups = [_attach(name, raw["guardrails"], join_pointer("/models", name) + "/guardrails", rules, out)
              for name, raw in sorted(spec.get("models", {}).items()) if raw.get("guardrails")]
    keys = [_attach(raw["name"], raw["guardrails"], f"/auth/keys/{i}/guardrails", rules, out)
            for i, raw in enumerate((spec.get("auth") or {}).get("keys", ())) if raw.get("guardrails")]
    teams = [_attach(name, raw["guardrails"], join_pointer("/teams", name) + "/guardrails", rules, out)
             for name, raw in sorted((spec.get("teams") or {}).items()) if raw.get("guardrails")]
    if not rules and not groups and not keys and not teams:
        return None
    if rules and not (groups or keys or teams):
        out.warning("guardrails.unattached", "/guardrails", "no model group, key or team names a guardrail: "
                    "none runs (add `guardrails: [name]` to a model group, spec key or team)")
    return Guardrails(rules=tuple(rules.values()), groups=tuple(groups),
                      keys=tuple(sorted(keys, key=lambda a: a.owner)), teams=tuple(teams))
