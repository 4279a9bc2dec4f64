"""The library from plain code: a Gateway built from a spec drives the sidecar's own app, so
fallbacks, 429s, budgets, streams and spend rows behave as over HTTP."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

import sidegate
from tests.support.library import GatedOpenAI, library_spec, spend_rows, upstream_thread


@pytest.fixture
def fake() -> Iterator[GatedOpenAI]:
    with upstream_thread() as upstream:
        yield upstream


def _models(fake: GatedOpenAI) -> list[str]:
    return [s.body["model"] for s in fake.seen]


def test_a_failing_first_target_falls_back_and_every_call_writes_a_spend_row(fake: GatedOpenAI,
                                                                           tmp_path: Path) -> None:
    db = tmp_path / "spend.db"
    with sidegate.Gateway.from_spec(library_spec(fake.base_url, db)) as gw:
        answer = gw.completion("chat", [sidegate.system_message("be brief"), sidegate.user_message("hi")])
        vectors = gw.embedding("embed", ["a", "b"])
    assert answer.choices[0].message.content == "Hi there!"
    assert _models(fake) == ["fail-500", "fail-500", "ok", "ok"]  # chat's retry, then backup; then embed
    assert fake.seen[0].body["messages"][0] == {"role": "system", "content": "be brief"}
    assert len(vectors.data) == 2
    # close() drained the spend writer: both rows are in the store, the fallback's deployment named
    assert spend_rows(db) == [("chat", "up/ok", 200, 11), ("embed", "up/ok", 200, 3)]


def test_an_upstream_429_is_a_rate_limit_error_with_its_retry_after(fake: GatedOpenAI, tmp_path: Path) -> None:
    with sidegate.Gateway.from_spec(library_spec(fake.base_url, tmp_path / "s.db")) as gw:
        with pytest.raises(sidegate.RateLimitError) as info:
            gw.completion("limited", [sidegate.user_message("hi")])
        with pytest.raises(sidegate.ModelNotFound):
            gw.completion("nope", [sidegate.user_message("hi")])
    assert info.value.status == 429 and info.value.retry_after == 7.0
    assert not isinstance(info.value, sidegate.BudgetExceeded)


def test_a_spent_budget_is_budget_exceeded(fake: GatedOpenAI, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LIB_TEST_KEY", "sk-lib-test-key")
    spec = library_spec(fake.base_url, tmp_path / "s.db", auth=True)
    with sidegate.Gateway.from_spec(spec) as anonymous, pytest.raises(sidegate.AuthenticationError):
        anonymous.completion("backup", [sidegate.user_message("hi")])
    with sidegate.Gateway.from_spec(spec, api_key="sk-lib-test-key") as gw:
        gw.completion("backup", [sidegate.user_message("hi")], max_tokens=5)  # costs $0.013 of $0.01
        with pytest.raises(sidegate.BudgetExceeded) as info:
            gw.completion("backup", [sidegate.user_message("hi")], max_tokens=5)
    assert info.value.code == "budget_exceeded" and isinstance(info.value, sidegate.RateLimitError)
    assert "sk-lib-test-key" not in str(info.value)
    assert len([s for s in fake.seen if s.body["model"] == "ok"]) == 1


def test_a_stream_yields_each_chunk_as_it_arrives(fake: GatedOpenAI, tmp_path: Path) -> None:
    with sidegate.Gateway.from_spec(library_spec(fake.base_url, tmp_path / "s.db")) as gw:
        chunks = gw.completion("slow", [sidegate.user_message("hi")], stream=True)
        first = next(chunks)  # the upstream holds the rest until the gate opens
        assert not fake.gate.is_set() and first.choices[0].delta.content == "Hi"
        fake.gate.set()
        rest = [c.choices[0].delta.content for c in chunks]
    assert rest == [" there", "!"]


def test_a_stream_closed_early_hangs_up_and_is_accounted_as_499(fake: GatedOpenAI, tmp_path: Path) -> None:
    db = tmp_path / "s.db"
    with sidegate.Gateway.from_spec(library_spec(fake.base_url, db)) as gw:
        chunks = gw.completion("slow", [sidegate.user_message("hi")], stream=True)
        next(chunks)
        chunks.close()  # type: ignore[attr-defined]
    assert [row[2] for row in spend_rows(db)] == [499]


def test_messages_and_responses_take_their_own_shapes_through_the_same_routing(fake: GatedOpenAI,
                                                                               tmp_path: Path) -> None:
    with sidegate.Gateway.from_spec(library_spec(fake.base_url, tmp_path / "s.db")) as gw:
        message = gw.messages("chat", [sidegate.user_message("hi")], max_tokens=16, system="be brief")
        response = gw.responses("backup", "hi")
        events = [e["type"] for e in gw.responses("backup", "hi", stream=True)]
        anthropic_events = [e["type"] for e in gw.messages("backup", [sidegate.user_message("hi")], max_tokens=8,
                                                           stream=True)]
    assert message["type"] == "message" and message.content[0].text == "Hi there!"
    assert response.output[0].content[0].text == "Hi there!"
    assert events[0] == "response.created" and events[-1] == "response.completed"
    assert anthropic_events[0] == "message_start" and anthropic_events[-1] == "message_stop"


def test_a_one_off_call_needs_no_spec(fake: GatedOpenAI, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SIDEGATE_SPEC", raising=False)
    try:
        answer = sidegate.completion(model="openai/ok", messages=[sidegate.user_message("hi")],
                                     api_base=fake.base_url, api_key="sk-one-off")
    finally:
        sidegate.close_defaults()
    assert answer.choices[0].message.content == "Hi there!"
    assert fake.seen[-1].body["model"] == "ok" and fake.seen[-1].headers["authorization"] == "Bearer sk-one-off"


def test_the_default_gateway_serves_sidegate_spec(fake: GatedOpenAI, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    spec = tmp_path / "gateway.yaml"
    spec.write_text(library_spec(fake.base_url, tmp_path / "s.db"))
    monkeypatch.setenv("SIDEGATE_SPEC", str(spec))
    try:
        chunks = list(sidegate.completion("backup", [sidegate.user_message("hi")], stream=True))  # type: ignore[arg-type]
    finally:
        sidegate.close_defaults()
    assert "".join(c.choices[0].delta.get("content") or "" for c in chunks if c.choices) == "Hi there!"


def test_spec_errors_and_missing_secrets_are_spec_errors_without_values(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(sidegate.SpecError, match="models"):
        sidegate.Gateway.from_spec("version: 1\nprovidrs: {}\n")
    monkeypatch.delenv("LIB_MISSING_KEY", raising=False)
    spec = ("version: 1\nproviders:\n  o: {type: openai, api_key: \"${LIB_MISSING_KEY}\"}\n"
            "models:\n  m: {targets: [{provider: o, model: gpt-4o}]}\n")
    with pytest.raises(sidegate.SpecError, match="LIB_MISSING_KEY"):
        sidegate.Gateway.from_spec(spec)


@pytest.mark.parametrize(("status", "body", "expected"), [
    (400, {"error": {"code": "context_length_exceeded", "message": "too long"}}, sidegate.ContextWindowExceeded),
    (400, {"error": {"code": "content_policy_violation", "message": "no"}}, sidegate.ContentPolicyViolation),
    (400, {"error": {"code": None, "message": "bad", "param": "foo"}}, sidegate.BadRequestError),
    (401, {"type": "error", "error": {"type": "authentication_error", "message": "no key"}},
     sidegate.AuthenticationError),
    (403, {"error": {"code": "model_not_allowed"}}, sidegate.PermissionDeniedError),
    (413, {"error": {"code": "request_too_large"}}, sidegate.RequestTooLarge),
    (429, {"error": {"code": "budget_exceeded"}}, sidegate.BudgetExceeded),
    (502, {"error": {"code": "bad_gateway"}}, sidegate.UpstreamError),
    (503, {"error": {"type": "overloaded_error"}}, sidegate.Overloaded),
    (529, {"type": "error", "error": {"type": "overloaded_error"}}, sidegate.Overloaded),
    (503, {"error": {"code": "service_unavailable"}}, sidegate.ServiceUnavailable),
    (504, {"error": {"code": "gateway_timeout"}}, sidegate.Timeout),
    (500, None, sidegate.InternalServerError),
])
def test_error_answers_map_to_the_typed_exceptions(status: int, body: object, expected: type) -> None:
    from sidegate.errors import error_from

    err = error_from(status, body)
    assert type(err) is expected and err.status == status


def test_the_docs_example_runs_against_the_quickstart(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    import re
    import shutil

    root = Path(__file__).resolve().parent.parent
    (snippet,) = re.findall(r"<!-- library-example -->\n```python\n(.*?)```", (root / "docs" / "library.md")
                            .read_text(), re.S)
    (tmp_path / "examples").mkdir()
    shutil.copy(root / "examples" / "quickstart.yaml", tmp_path / "examples")
    monkeypatch.chdir(tmp_path)  # the quickstart's store is ./sidegate.db
    exec(compile(snippet, "docs/library.md", "exec"), {})
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "Hello from sidegate." and lines[2].startswith("say this")
    assert lines[-2:] == ["8", "404 model_not_found"]
