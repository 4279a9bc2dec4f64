"""Claude Code end to end: `claude -p` (stream-json in and out) against sidegate, whose glob group
`claude-*` catches the Claude id it asks for and routes it to a scripted Anthropic upstream
(passed through) or to the strict fake OpenAI and Gemini upstreams (translated, refusing what the
real APIs refuse). One session: the title call (`generate_session_title`, structured output), the
first turn (the model calls Read), the tool-result turn (the answer quotes the file)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import trio

from tests.support.claude_code import claude_binary, claude_env
from tests.support.strict_stack import Stack, open_strict_stack

SECRET = "the secret word is PAPAYA"


@pytest.fixture(scope="session")
def claude() -> Path:
    return claude_binary()


def _tool_results(stack: Stack) -> list[str]:
    """Every tool result text the upstreams were sent, whatever their wire format."""
    out = []
    for seen in (*stack.openai.seen, *stack.gemini.seen, *stack.anthropic.seen):
        body = seen.raw.decode()
        if "PAPAYA" in body and ("tool_result" in body or '"role": "tool"' in body or '"role":"tool"' in body
                                 or "functionResponse" in body):
            out.append(seen.path)
    return out


@pytest.mark.parametrize("target", [("ant", "*"), ("oa", "gpt-4o"), ("oa", "gpt-5"), ("gem", "gemini-2.5-flash")],
                         ids=["anthropic", "openai-gpt-4o", "openai-gpt-5", "gemini"])
async def test_claude_code_session(claude: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                   target: tuple[str, str]) -> None:
    work, home = tmp_path / "work", tmp_path / "home"
    work.mkdir()
    home.mkdir()
    (work / "notes.txt").write_text(SECRET + "\n")
    prompt = f'Read it: [[call Read {{"file_path": "{work / "notes.txt"}"}}]]'
    lines: list[dict[str, Any]] = [
        {"type": "control_request", "request_id": "title-1",
         "request": {"subtype": "generate_session_title", "description": "Find the secret word", "persist": False}},
        {"type": "user", "message": {"role": "user", "content": prompt}},
    ]
    with trio.fail_after(150):
        async with open_strict_stack(monkeypatch, claude_target=target) as stack:
            done = await trio.run_process(
                [str(claude), "-p", "--input-format", "stream-json", "--output-format", "stream-json", "--verbose"],
                env=claude_env(stack.url, home), cwd=work, stdin="".join(json.dumps(x) + "\n" for x in lines).encode(),
                capture_stdout=True, capture_stderr=True, check=False)
    events = [json.loads(line) for line in done.stdout.decode().splitlines() if line.startswith("{")]
    assert done.returncode == 0, (done.stderr.decode()[-2000:], events[-3:])
    title = next(e for e in events if e["type"] == "control_response")["response"]
    assert title == {"subtype": "success", "request_id": "title-1", "response": {"title": "Fake title"}}
    calls = [b for e in events if e["type"] == "assistant" for b in e["message"]["content"] if b["type"] == "tool_use"]
    assert [(c["name"], c["input"]) for c in calls] == [("Read", {"file_path": str(work / "notes.txt")})]
    result = next(e for e in events if e["type"] == "result")
    assert result["is_error"] is False and SECRET in result["result"] and result["num_turns"] == 2
    assert _tool_results(stack), "the tool result reached the upstream"
    assert stack.openai.refused == [] and stack.gemini.refused == [] and stack.anthropic.refused == []
    served = {"ant": stack.anthropic, "oa": stack.openai, "gem": stack.gemini}[target[0]]
    assert len(served.seen) >= 3  # title, first turn, tool-result turn
