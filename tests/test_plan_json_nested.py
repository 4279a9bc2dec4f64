"""Plan JSON keeps arbitrarily nested JSON values (a target's extra_body) through a round trip."""

from __future__ import annotations

import dataclasses
import types

from sidegate.compiler.pipeline import compile_text
from sidegate.runtime.plan.canonical import dumps, loads

SPEC = """\
version: 1
providers:
  fake: {type: mock}
models:
  demo:
    targets: [{provider: fake, model: demo}]
"""


def test_deeply_nested_extra_body_round_trips() -> None:
    plan = compile_text(SPEC, "s.yaml").plan
    assert plan is not None
    body = types.MappingProxyType(
        {"a": types.MappingProxyType({"b": (1, types.MappingProxyType({"c": (None, True, 2.5, "x")}))})}
    )
    target = dataclasses.replace(plan.models[0].targets[0], extra_body=body)
    group = dataclasses.replace(plan.models[0], targets=(target,))
    nested = dataclasses.replace(plan, models=(group,))
    assert loads(dumps(nested)) == nested
