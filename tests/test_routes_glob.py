"""Model-name resolution with globs: exact names and aliases first, then the longest `prefix/*`,
then the most specific glob; a glob forwards the whole name to a `*` target."""

from __future__ import annotations

import pytest

from sidegate.runtime.routing.routes import RouteTable, glob_regex, is_prefix_wildcard
from tests.support.plans import group, mock_provider, plan, target


def _table() -> RouteTable:
    t = target("fake", "*")
    return RouteTable(plan([mock_provider("fake")], [
        group("claude-*", t), group("*-haiku-*", t), group("claude-3-5-haiku-*", t), group("anthropic/*", t),
        group("claude-sonnet-4-5", target("fake", "x"), aliases=("sonnet",)), group("*", t),
    ]))


@pytest.mark.parametrize("model,expected,forwarded", [
    ("claude-sonnet-4-5", "claude-sonnet-4-5", None),            # exact beats every pattern
    ("sonnet", "claude-sonnet-4-5", None),                        # so does an alias
    ("claude-3-5-haiku-20241022", "claude-3-5-haiku-*", "claude-3-5-haiku-20241022"),  # most literal wins
    ("claude-haiku-4-5", "*-haiku-*", "claude-haiku-4-5"),        # 7 literal characters each: name order
    ("claude-opus-4-8", "claude-*", "claude-opus-4-8"),
    ("anthropic/claude-3-haiku-x", "anthropic/*", "claude-3-haiku-x"),  # a prefix beats globs
    ("gpt-4o", "*", "gpt-4o"),                                    # the catch-all last
    ("claude-", "*", "claude-"),                                  # `*` stands for at least one character
])
def test_resolution_order(model: str, expected: str, forwarded: str | None) -> None:
    route = _table().resolve(model)
    assert route is not None and (route.group.name, route.suffix) == (expected, forwarded)


def test_glob_syntax() -> None:
    assert is_prefix_wildcard("groq/*") and not is_prefix_wildcard("groq/*/x/*") and not is_prefix_wildcard("a-*")
    assert glob_regex("a.b-*").fullmatch("a.b-c") and not glob_regex("a.b-*").fullmatch("aXb-c")
    assert glob_regex("*-haiku-*").fullmatch("x-haiku-y") and not glob_regex("*-haiku-*").fullmatch("-haiku-")
    assert RouteTable(plan([mock_provider("fake")], [group("claude-*", target("fake", "*"))])).resolve("gpt") is None
