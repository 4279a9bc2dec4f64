"""Codex CLI (`@openai/codex` from npm, `codex exec`) through sidegate's `/v1/responses` to an
OpenAI-compatible chat upstream: a one-tool task (it runs a shell command the fake upstream asks
for and answers with its output)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import trio

from tests.support.fake_base import open_fake
from tests.support.fake_responses import FakeOpenAIResponses
from tests.support.gateway import base_url, open_gateway
from tests.support.npm import npm_bin
from tests.support.plans import group, openai_provider, plan, target

CODEX = "@openai/codex@0.171.0"


async def test_codex_exec_completes_a_tool_task_through_a_translated_backend(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    codex = await trio.to_thread.run_sync(npm_bin, CODEX, "codex")
    monkeypatch.setenv("UP_KEY", "sk-upstream")
    with trio.fail_after(150):
        async with open_fake(FakeOpenAIResponses()) as fake:
            p = plan([openai_provider("compat", fake.base_url, "UP_KEY")], [group("chat", target("compat", "gpt-4o"))])
            async with open_gateway(p) as gw:
                home = tmp_path / "codex-home"
                home.mkdir()
                (home / "config.toml").write_text(
                    'model = "chat"\nmodel_provider = "sidegate"\n[model_providers.sidegate]\nname = "sidegate"\n'
                    f'base_url = "{base_url(gw)}"\nwire_api = "responses"\nenv_key = "SIDEGATE_KEY"\n')
                work = tmp_path / "work"
                work.mkdir()
                env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path), "CODEX_HOME": str(home),
                       "SIDEGATE_KEY": "unused", "NO_COLOR": "1"}
                done = await trio.run_process(
                    [str(codex), "exec", "--skip-git-repo-check", "--dangerously-bypass-approvals-and-sandbox",
                     "run the tool"], cwd=work, env=env, capture_stdout=True, capture_stderr=True, check=False,
                    stdin=b"")
    output = (done.stdout + done.stderr).decode(errors="replace")
    assert done.returncode == 0, output[-3000:]
    chats = [s for s in fake.seen if s.path == "/v1/chat/completions"]
    assert len(chats) >= 2, output[-2000:]
    first, second = chats[0].body, chats[1].body
    assert first["tools"][0]["function"]["name"] == "exec_command"
    assert all(t["type"] == "function" for t in first["tools"]), "hosted tools (web_search) were left out"
    assert first["messages"][0]["role"] == "system", "Codex's developer message became the system prompt"
    tool_turn = second["messages"][-1]
    assert tool_turn["role"] == "tool" and "sidegate-tool-ran" in tool_turn["content"]
    assert "Sunny," in done.stdout.decode(errors="replace"), output[-2000:]
