"""Sans-IO pieces of the runtime: deployment choice and caps, route resolution, the SSE relay."""

from __future__ import annotations

import json
import random

from hypothesis import given, settings
from hypothesis import strategies as st

from sidegate.runtime.routing.balance import WINDOW, DeploymentState, choose
from sidegate.runtime.routing.routes import RouteTable
from sidegate.runtime.upstream.openai_wire import SseRelay
from tests.support.plans import group, mock_provider, plan, target


def test_weighted_choice_converges_to_weights() -> None:
    g = group("g", target("a", "m", weight=3.0), target("b", "m", weight=1.0))
    states = [DeploymentState(), DeploymentState()]
    rng = random.Random(1)
    picks = [choose(g, states, 0.0, rng).index for _ in range(4000)]
    share = picks.count(0) / len(picks)
    assert 0.72 <= share <= 0.78


def test_full_deployment_is_skipped_and_all_full_gives_retry_after() -> None:
    g = group("g", target("a", "m", max_parallel=1), target("b", "m", rpm=2))
    a, b = DeploymentState(), DeploymentState()
    rng = random.Random(2)
    a.start(10.0)
    assert all(choose(g, [a, b], 10.0, rng).index == 1 for _ in range(10))
    b.start(10.0)
    b.start(10.0)
    blocked = choose(g, [a, b], 10.0, rng)
    assert blocked.index is None and blocked.capped and 0 < blocked.retry_after <= 1.0
    a.finish(11.0, tokens=5)
    assert choose(g, [a, b], 11.0, rng).index == 0


def test_rpm_and_tpm_windows_roll_over() -> None:
    g = group("g", target("a", "m", rpm=1, tpm=100))
    s = DeploymentState()
    s.start(5.0)
    s.finish(6.0, tokens=150)
    blocked = choose(g, [s], 7.0, random.Random(0))
    assert blocked.index is None and abs(blocked.retry_after - (WINDOW - 7.0)) < 1e-9
    assert choose(g, [s], WINDOW + 1, random.Random(0)).index == 0


@given(st.lists(st.sampled_from(["start", "finish"]), max_size=60))
def test_parallel_cap_is_never_exceeded(ops: list[str]) -> None:
    g = group("g", target("a", "m", max_parallel=3))
    s = DeploymentState()
    for op in ops:
        if op == "start":
            if choose(g, [s], 0.0, random.Random(0)).index is not None:
                s.start(0.0)
        elif s.in_flight:
            s.finish(0.0, 1)
        assert s.in_flight <= 3


def test_routes_exact_alias_and_longest_wildcard() -> None:
    p = plan([mock_provider("f")], [
        group("gpt", target("f", "x"), aliases=("default",)),
        group("openai/*", target("f", "*")),
        group("openai/gpt-4o/*", target("f", "*")),
    ])
    table = RouteTable(p)
    assert table.resolve("gpt").group.name == "gpt"  # type: ignore[union-attr]
    assert table.resolve("default").group.name == "gpt"  # type: ignore[union-attr]
    r = table.resolve("openai/gpt-4o/mini")
    assert r is not None and r.group.name == "openai/gpt-4o/*" and r.suffix == "mini"
    r = table.resolve("openai/o3")
    assert r is not None and r.group.name == "openai/*" and r.suffix == "o3"
    assert table.resolve("openai/") is None and table.resolve("nope") is None


def _events(with_usage: bool, spaced: bool = False, eol: bytes = b"\n") -> bytes:
    base = {"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "m"}
    extra = {"usage": None} if with_usage else {}
    evs = [{**base, "choices": [{"index": 0, "delta": {"content": w}, "finish_reason": None}], **extra}
           for w in ["a", "b", "c"]]
    if with_usage:
        evs.append({**base, "choices": [], "usage": {"prompt_tokens": 4, "completion_tokens": 3, "total_tokens": 7}})
    seps = (", ", ": ") if spaced else (",", ":")
    end = eol + eol
    return b"".join(b"data: " + json.dumps(e, separators=seps).encode() + end for e in evs) + b"data: [DONE]" + end


@settings(max_examples=200)
@given(st.lists(st.integers(min_value=1, max_value=40), max_size=30), st.booleans(), st.booleans(),
       st.sampled_from([b"\n", b"\r\n", b"\r"]))
def test_relay_reframes_any_split_and_hides_unrequested_usage(cuts: list[int], keep: bool, spaced: bool,
                                                               eol: bytes) -> None:
    raw = _events(with_usage=True, spaced=spaced, eol=eol)
    relay = SseRelay(keep_usage=keep)
    out, pos = b"", 0
    for n in cuts:
        piece = relay.feed(raw[pos : pos + n])
        assert piece == b"" or piece.endswith(eol + eol), "only whole events are sent"
        out += piece
        pos += n
    out += relay.feed(raw[pos:])
    assert relay.done and relay.usage is not None and relay.usage.completion == 3
    if keep:
        assert out == raw
    else:
        assert out == _events(with_usage=False, spaced=spaced, eol=eol)
