"""The spec the A2A gateway tests serve: the agents given (each with the token only sidegate
holds), a master key, a caller whose team may call every agent and an outsider denied some."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

from sidegate.compiler.pipeline import compile_text
from sidegate.runtime.plan import Plan
from tests.support.a2a_agents import TOKEN

MASTER, CALLER, OUTSIDER = "sk-a2a-master", "sk-a2a-caller", "sk-a2a-outsider"
ENV = {"A2A_MASTER": MASTER, "A2A_CALLER": CALLER, "A2A_OUTSIDER": OUTSIDER, "A2A_AGENT_TOKEN": TOKEN}
"""The environment the spec reads its keys from."""


class Upstream(Protocol):
    @property
    def base(self) -> str: ...


def spec_plan(agents: Mapping[str, Upstream], refresh: str = "30s", deadlines: str = "timeout: 5s") -> Plan:
    lines = "\n".join(f"    {n}: {{url: \"{s.base}\", auth: {{bearer: \"${{A2A_AGENT_TOKEN}}\"}}, {deadlines}}}"
                      for n, s in agents.items())
    spec = f"""version: 1
providers: {{fake: {{type: mock}}}}
models: {{demo: {{targets: [{{provider: fake, model: demo}}]}}}}
store: {{database: "sqlite://:memory:"}}
auth:
  master_key: "${{A2A_MASTER}}"
  keys:
    - {{name: caller, key: "${{A2A_CALLER}}", team: agents}}
    - {{name: outsider, key: "${{A2A_OUTSIDER}}", a2a: {{deny: ["tasks", "leg*"]}}}}
teams:
  agents: {{a2a: {{allow: ["*"]}}}}
a2a:
  refresh: {refresh}
  agents:
{lines}
"""
    result = compile_text(spec, "a2a.yaml")
    assert result.plan is not None, result.diagnostics
    return result.plan
