"""sidegate compiled from a spec (the user's path: capabilities come from the price table) in front
of the strict fake OpenAI and Gemini upstreams and a scripted fake Anthropic, for Anthropic clients."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import pytest

from sidegate.compiler.pipeline import compile_text
from tests.support.fake_base import open_fake
from tests.support.gateway import open_gateway
from tests.support.script_anthropic import ScriptedAnthropic
from tests.support.strict_gemini import StrictGemini
from tests.support.strict_openai import StrictOpenAI

SPEC = """\
version: 1
providers:
  oa: {{type: openai, base_url: "{oa}", api_key: "${{STRICT_OPENAI_KEY}}"}}
  gem: {{type: gemini, base_url: "{gem}", api_key: "${{STRICT_GEMINI_KEY}}"}}
  ant: {{type: anthropic, base_url: "{ant}", api_key: "${{ANTHROPIC_KEY}}"}}
models:
  gpt-4o: {{targets: [{{provider: oa, model: gpt-4o}}]}}
  gpt-5: {{targets: [{{provider: oa, model: gpt-5}}]}}
  o3: {{targets: [{{provider: oa, model: o3}}]}}
  gpt-3.5-turbo: {{targets: [{{provider: oa, model: gpt-3.5-turbo}}]}}
  gemini-2.5-flash: {{targets: [{{provider: gem, model: gemini-2.5-flash}}]}}
  gemini-exp-1114: {{targets: [{{provider: gem, model: gemini-exp-1114}}]}}
  "{claude}": {{targets: [{{provider: {claude_provider}, model: "{claude_model}"}}]}}
"""


@dataclass
class Stack:
    port: int
    openai: StrictOpenAI
    gemini: StrictGemini
    anthropic: ScriptedAnthropic

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@asynccontextmanager
async def open_strict_stack(monkeypatch: pytest.MonkeyPatch, claude: str = "claude-*",
                            claude_target: tuple[str, str] = ("oa", "gpt-4o")) -> AsyncIterator[Stack]:
    """The gateway with one group per fake model and a glob group `claude` (every Claude id) served
    by `claude_target` (provider, model; model `*` forwards the requested id)."""
    monkeypatch.setenv("STRICT_OPENAI_KEY", "sk-upstream")
    monkeypatch.setenv("STRICT_GEMINI_KEY", "AIza-upstream")
    monkeypatch.setenv("ANTHROPIC_KEY", "sk-ant-upstream")
    async with open_fake(StrictOpenAI()) as oa, open_fake(StrictGemini()) as gem, open_fake(ScriptedAnthropic()) as ant:
        text = SPEC.format(oa=oa.base_url, gem=gem.base_url, ant=ant.base_url, claude=claude,
                           claude_provider=claude_target[0], claude_model=claude_target[1])
        result = compile_text(text, "strict.yaml")
        assert result.plan is not None, [d.message for d in result.diagnostics]
        async with open_gateway(result.plan) as gw:
            yield Stack(gw.port, oa, gem, ant)
