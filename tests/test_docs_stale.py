"""Issue 21's stale statements stay fixed: `explain` on an unknown name lists what a client can send,
the mock gives every answer a fresh id, `sidegate providers` prints what the docs say it prints, the
fallback example really falls back, and the Commands table names every subcommand."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import orjson
import pytest
import trio

from sidegate.compiler.cli import main
from sidegate.compiler.cli.main import _parser
from sidegate.runtime.plan import MockBehaviour
from sidegate.runtime.upstream.mock import MockTransport
from sidegate.runtime.upstream.transport import UpstreamRequest

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()

SPEC = """\
version: 1
providers:
  fake: {type: mock}
  groq: {type: groq, api_key: "${GROQ_API_KEY}"}
models:
  demo: {aliases: [default], targets: [{provider: fake, model: demo}]}
  echo: {targets: [{provider: fake, model: echo}]}
  "groq/*": {targets: [{provider: groq, model: "*"}]}
"""


def test_explain_unknown_model_lists_the_names_and_suggests_one(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    spec = tmp_path / "spec.yaml"
    spec.write_text(SPEC)
    assert main(["explain", str(spec), "dem"]) == 1
    err = capsys.readouterr().err.strip()
    assert err == ("sidegate explain: no model group serves 'dem' (did you mean 'demo'?); "
                   "the model names a client can send: default, demo, echo, groq/*")
    assert main(["explain", str(spec), "zzzzzz"]) == 1
    err = capsys.readouterr().err.strip()
    assert "did you mean" not in err and err.endswith("default, demo, echo, groq/*")


BEHAVIOUR = MockBehaviour(text="same words every time", latency=0.0, latency_per_token=0.0, error_rate=0.0,
                          error_status=500, seed=0, embedding_dimensions=8)


def _request(stream: bool, path: str = "/v1/chat/completions") -> UpstreamRequest:
    body = {"model": "demo", "stream": stream, "messages": [{"role": "user", "content": "hi"}]}
    if path.endswith("/completions") and "chat" not in path:
        body = {"model": "demo", "stream": stream, "prompt": "hi"}
    return UpstreamRequest(method="POST", url="mock://fake" + path, headers=(), body=orjson.dumps(body),
                           connect_timeout=1.0)


async def test_the_mock_gives_every_answer_a_fresh_id_and_nothing_else_changes() -> None:
    mock = MockTransport(BEHAVIOUR)
    whole = [orjson.loads((await mock.send(_request(False))).body) for _ in range(3)]
    ids = [w["id"] for w in whole]
    assert len(set(ids)) == 3 and all(i.startswith("chatcmpl-") for i in ids)
    for w in whole:  # the rest is the same answer to the same request
        w.pop("id"), w.pop("created")
    assert whole[0] == whole[1] == whole[2]
    assert whole[0]["choices"][0]["message"]["content"] == "same words every time"

    stream_ids: list[set[str]] = []
    for _ in range(2):
        async with mock.stream(_request(True)) as resp:
            raw = b"".join([chunk async for chunk in resp.iter_bytes()])
        events = [orjson.loads(line[6:]) for line in raw.split(b"\n\n") if line.startswith(b"data: {")]
        stream_ids.append({e["id"] for e in events})
    assert all(len(s) == 1 for s in stream_ids), "one id for all chunks of one stream"
    assert stream_ids[0] != stream_ids[1] and not (stream_ids[0] | stream_ids[1]) & set(ids)

    legacy = {orjson.loads((await mock.send(_request(False, "/v1/completions"))).body)["id"] for _ in range(2)}
    assert len(legacy) == 2 and all(i.startswith("cmpl-") for i in legacy)


async def test_mock_ids_are_unique_under_concurrency() -> None:
    mock = MockTransport(BEHAVIOUR)
    seen: list[str] = []

    async def one() -> None:
        seen.append(orjson.loads((await mock.send(_request(False))).body)["id"])

    async with trio.open_nursery() as nursery:
        for _ in range(200):
            nursery.start_soon(one)
    assert len(set(seen)) == 200


def test_providers_prints_type_family_url_and_docs(capsys: pytest.CaptureFixture[str]) -> None:
    """The docs say `sidegate providers` prints type, wire family, default base URL and docs link."""
    assert main(["providers"]) == 0
    lines = capsys.readouterr().out.splitlines()
    groq = next(line for line in lines if line.startswith("groq "))
    assert groq.split()[1:3] == ["openai", "https://api.groq.com/openai/v1"]
    assert "API_KEY" not in "\n".join(lines)  # no key variable column (the docs must not promise one)
    providers_doc = (ROOT / "docs" / "providers.md").read_text()
    assert "prints the catalog, one type a line: the type, its wire family" in providers_doc
    for text in [README, providers_doc]:
        for sentence in re.split(r"(?<=[.:])\s", text.replace("\n", " ")):
            if "sidegate providers" in sentence:
                assert "environment variable" not in sentence and "key variable" not in sentence, sentence


def test_fallback_example_has_real_fallbacks_and_lints_strict(capsys: pytest.CaptureFixture[str]) -> None:
    path = ROOT / "examples" / "fallback-openai-anthropic.yaml"
    text = path.read_text()
    assert "fallbacks:" in text and "no fallback" not in text.lower() and "don't exist" not in text
    assert main(["lint", "--strict", str(path)]) == 0, capsys.readouterr().out


def test_the_commands_table_names_every_subcommand() -> None:
    parser = _parser()
    (sub,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    commands = set(sub.choices)
    table = README.split("## Commands", 1)[1].split("\n## ", 1)[0]
    named = set(re.findall(r"`sidegate ([a-z]+)", table))
    assert commands <= named, commands - named


def test_no_stale_statements_left() -> None:
    texts = [README] + [p.read_text() for p in sorted((ROOT / "docs").glob("*.md"))]
    for text in texts:
        assert "shared/DESIGN.md" not in text
        assert "not checked yet" not in text
        assert not re.search(r"pip install sidegate\b", text)
