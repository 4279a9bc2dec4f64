"""The rules by which an Anthropic Messages request reaches a target that is not Anthropic: one
table, `RULES`, that the translation follows and the documentation prints (`render_table`).

Every top-level field and content block is looked up here. A field is *mapped* when the target
has a faithful equivalent, *dropped* when it only tunes Anthropic's side (or a sampling detail the
target does not take), and *refused* (400 naming it) only when dropping it would change what the
answer means. A field no row names is a hint from a newer client and is dropped. What a target
takes comes from its `Capabilities` (compiled into the plan from the price table and the family).
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sidegate.runtime.errors import BadRequest
from sidegate.runtime.plan import Capabilities, Family, Target

__all__ = ["RULES", "Action", "Rule", "TargetView", "apply_fields", "refuse", "render_table"]


class Action(enum.Enum):
    """What happens to a field."""

    MAP = "mapped"
    DROP = "dropped"
    REFUSE = "refused (400)"
    CAPABILITY = "by capability"


@dataclass(frozen=True, slots=True)
class TargetView:
    """What the translation needs to know of one target."""

    caps: Capabilities
    max_output: int | None
    family: Family
    name: str

    @classmethod
    def of(cls, target: Target, family: Family) -> TargetView:
        """The view of a plan target served by a provider of `family`."""
        return cls(target.caps, target.max_output_tokens, family, target.id)


OPEN = TargetView(Capabilities(reasoning=True, top_k=True, system_anywhere=True), None, Family.OPENAI, "any")
"""A target that takes everything (for translating without a target in mind)."""


def refuse(what: str, param: str, target: TargetView) -> BadRequest:
    """The 400 for a field that target `target` cannot take without changing the answer's meaning."""
    return BadRequest(f"{what} cannot be served by target '{target.name}'", param=param)


Handler = Callable[[Any, dict[str, Any], TargetView, dict[str, Any]], None]


@dataclass(frozen=True, slots=True)
class Rule:
    """One row of the table: a field (or content block), what happens, and when."""

    name: str
    action: Action
    doc: str
    handler: Handler | None = None
    """Top-level fields: how the value is written into the OpenAI body (None: dropped)."""


# ---- top-level field handlers: (value, anthropic body, target, openai body) ----

def _max_tokens(value: Any, body: dict[str, Any], t: TargetView, out: dict[str, Any]) -> None:
    limit = min(value, t.max_output) if t.max_output else value
    out["max_completion_tokens" if t.caps.max_completion_tokens else "max_tokens"] = limit


def _sampling(key: str) -> Handler:
    def handle(value: Any, body: dict[str, Any], t: TargetView, out: dict[str, Any]) -> None:
        if value is not None and t.caps.sampling:
            out[key] = value
    return handle


def _top_k(value: Any, body: dict[str, Any], t: TargetView, out: dict[str, Any]) -> None:
    if value is not None and t.caps.top_k:
        out["top_k"] = value


def _stop(value: Any, body: dict[str, Any], t: TargetView, out: dict[str, Any]) -> None:
    if not value:
        return
    if not isinstance(value, list) or not all(isinstance(s, str) for s in value):
        raise BadRequest("stop_sequences must be an array of strings", param="stop_sequences")
    if not t.caps.stop:
        raise refuse("stop_sequences", "stop_sequences", t)
    if not t.family.native and len(value) > 4:
        raise refuse(f"{len(value)} stop_sequences (OpenAI's wire takes at most 4)", "stop_sequences", t)
    out["stop"] = list(value)


def _stream(value: Any, body: dict[str, Any], t: TargetView, out: dict[str, Any]) -> None:
    if value is True:
        out["stream"] = True
        out["stream_options"] = {"include_usage": True}


_EFFORTS = {"low": "low", "medium": "medium", "high": "high", "xhigh": "high", "max": "high"}


def _budget_effort(budget: Any) -> str:
    tokens = budget if isinstance(budget, int) else 0
    return "low" if tokens < 4096 else "medium" if tokens < 16384 else "high"


def _thinking(value: Any, body: dict[str, Any], t: TargetView, out: dict[str, Any]) -> None:
    if not t.caps.reasoning or not isinstance(value, dict):
        return
    if value.get("type") == "enabled":
        out.setdefault("reasoning_effort", _budget_effort(value.get("budget_tokens")))
    elif value.get("type") == "adaptive":
        out.setdefault("reasoning_effort", "medium")


def _output_config(value: Any, body: dict[str, Any], t: TargetView, out: dict[str, Any]) -> None:
    if not isinstance(value, dict):
        return
    fmt = value.get("format")
    if isinstance(fmt, dict):
        _format(fmt, body, t, out)
    effort = _EFFORTS.get(str(value.get("effort")))
    if effort and t.caps.reasoning:
        out["reasoning_effort"] = effort  # wins over a thinking budget, as on Anthropic


def _format(value: Any, body: dict[str, Any], t: TargetView, out: dict[str, Any]) -> None:
    if isinstance(value, dict) and value.get("type") == "json_schema":
        schema = value.get("schema") or {"type": "object"}
        out["response_format"] = {"type": "json_schema", "json_schema": {"name": "output", "schema": schema}}


def _tools(value: Any, body: dict[str, Any], t: TargetView, out: dict[str, Any]) -> None:
    tools = []
    for tool in value or []:
        if not isinstance(tool, dict):
            raise BadRequest("each tool must be an object", param="tools")
        if tool.get("type") not in (None, "custom"):
            raise refuse(f"server tool '{tool.get('type')}' (Anthropic runs it)", "tools", t)
        fn: dict[str, Any] = {"name": tool.get("name"), "parameters": tool.get("input_schema") or {"type": "object"}}
        if tool.get("description"):
            fn["description"] = tool["description"]
        spec: dict[str, Any] = {"type": "function", "function": fn}
        if t.caps.prompt_caching and tool.get("cache_control"):
            spec["cache_control"] = tool["cache_control"]
        tools.append(spec)
    if tools:
        out["tools"] = tools


def _tool_choice(value: Any, body: dict[str, Any], t: TargetView, out: dict[str, Any]) -> None:
    if not isinstance(value, dict):
        return
    kind = value.get("type")
    if kind == "tool":
        out["tool_choice"] = {"type": "function", "function": {"name": value.get("name")}}
    elif kind in ("auto", "any", "none"):
        out["tool_choice"] = {"any": "required"}.get(str(kind), kind)
    if value.get("disable_parallel_tool_use") and body.get("tools"):
        out["parallel_tool_calls"] = False


def _refused(what: str) -> Handler:
    def handle(value: Any, body: dict[str, Any], t: TargetView, out: dict[str, Any]) -> None:
        if value:
            raise refuse(what, what.split(" ")[0], t)
    return handle


def _core(value: Any, body: dict[str, Any], t: TargetView, out: dict[str, Any]) -> None:
    """model, messages and system: written by the message translation."""


_R = Rule
RULES: tuple[Rule, ...] = (
    _R("model", Action.MAP, "the target's model name", _core),
    _R("messages", Action.MAP, "OpenAI messages (content blocks below)", _core),
    _R("system", Action.MAP, "the leading system message (text blocks joined)", _core),
    _R("max_tokens", Action.CAPABILITY,
       "clamped to the target's output limit; sent as `max_completion_tokens` to OpenAI reasoning models "
       "(o-series, gpt-5), else as `max_tokens`", _max_tokens),
    _R("stream", Action.MAP, "`stream`, with usage asked for", _stream),
    _R("temperature", Action.CAPABILITY,
       "mapped; dropped for OpenAI reasoning models (they take only the default)", _sampling("temperature")),
    _R("top_p", Action.CAPABILITY, "mapped; dropped for OpenAI reasoning models", _sampling("top_p")),
    _R("top_k", Action.CAPABILITY,
       "mapped for Gemini, Vertex AI, Bedrock and Cohere; dropped for OpenAI-wire targets (no such field)", _top_k),
    _R("stop_sequences", Action.CAPABILITY,
       "`stop`; refused for targets that take no stop sequences (OpenAI reasoning models) or more than 4 "
       "on OpenAI's wire", _stop),
    _R("tools", Action.MAP,
       "custom tools become functions (`input_schema` -> `parameters`); server tools (web search, code "
       "execution, computer use...) are refused: only Anthropic runs them", _tools),
    _R("tool_choice", Action.MAP,
       "`auto`/`none` as is, `any` -> `required`, `tool` -> that function; `disable_parallel_tool_use` -> "
       "`parallel_tool_calls: false`", _tool_choice),
    _R("thinking", Action.CAPABILITY,
       "`enabled` -> `reasoning_effort` by budget (<4k low, <16k medium, else high), `adaptive` -> medium, "
       "for reasoning targets; dropped for the others", _thinking),
    _R("output_config", Action.CAPABILITY,
       "`effort` -> `reasoning_effort` for reasoning targets (dropped otherwise); `format` -> "
       "`response_format` json_schema", _output_config),
    _R("output_format", Action.MAP, "`response_format` json_schema (the older beta field)", _format),
    _R("metadata", Action.DROP, "Anthropic-side abuse tracking"),
    _R("context_management", Action.DROP, "Anthropic-side context editing"),
    _R("service_tier", Action.DROP, "Anthropic capacity selection"),
    _R("inference_geo", Action.DROP, "Anthropic inference region"),
    _R("speed", Action.DROP, "Anthropic speed tier"),
    _R("diagnostics", Action.DROP, "Anthropic-side request diagnostics"),
    _R("user_profile_id", Action.DROP, "Anthropic account routing"),
    _R("workspace_id", Action.DROP, "Anthropic account routing"),
    _R("cache_control", Action.DROP, "top-level automatic caching marker (Anthropic-side)"),
    _R("container", Action.REFUSE, "Anthropic's code-execution container", _refused("container")),
    _R("mcp_servers", Action.REFUSE, "MCP servers Anthropic would call for the model",
       _refused("mcp_servers (Anthropic's MCP connector)")),
    _R("(any other field)", Action.DROP, "a hint from a newer client"),
)
"""Top-level fields, in the order the documentation lists them."""

BLOCKS: tuple[Rule, ...] = (
    _R("text", Action.MAP, "a text part; its `cache_control` kept for Claude on Bedrock / Vertex AI, else dropped"),
    _R("image", Action.CAPABILITY,
       "`image_url` (base64 as a data URL, or the URL); refused for targets known not to read images"),
    _R("document", Action.CAPABILITY,
       "base64 PDF -> a `file` part (OpenAI wire) or inline data (Gemini, Vertex AI), refused for targets "
       "known not to read PDFs; plain-text and content documents -> text"),
    _R("tool_use", Action.MAP, "an assistant `tool_calls` entry"),
    _R("tool_result", Action.MAP,
       "a `tool` message (text joined); images in it follow in a user message (OpenAI's tool messages "
       "carry text only)"),
    _R("thinking / redacted_thinking", Action.DROP, "signed reasoning only Anthropic can read back"),
    _R("system turn in messages", Action.MAP,
       "a system message at its place for OpenAI and Azure, folded into the system prompt elsewhere"),
    _R("server tool results and other blocks", Action.REFUSE, "results of tools only Anthropic runs"),
)
"""Content blocks (inside `messages` and `system`)."""

_BY_NAME = {rule.name: rule for rule in RULES}


def apply_fields(body: dict[str, Any], t: TargetView, out: dict[str, Any]) -> list[str]:
    """Write every top-level field of `body` into `out` by its rule; the names of those dropped."""
    dropped = []
    for key, value in body.items():
        rule = _BY_NAME.get(key)
        if rule is None or rule.handler is None:
            dropped.append(key)
            continue
        rule.handler(value, body, t, out)
    return dropped


def render_table() -> str:
    """The table as Markdown (docs/anthropic.md prints it; a test keeps them equal)."""
    lines = ["| field | what happens | how, for a target that is not Anthropic |", "|---|---|---|"]
    lines += [f"| `{r.name}` | {r.action.value} | {r.doc} |" if not r.name.startswith("(") else
              f"| {r.name} | {r.action.value} | {r.doc} |" for r in RULES]
    lines += ["", "| content block | what happens | how |", "|---|---|---|"]
    lines += [f"| `{r.name}` | {r.action.value} | {r.doc} |" if " " not in r.name or "/" in r.name else
              f"| {r.name} | {r.action.value} | {r.doc} |" for r in BLOCKS]
    return "\n".join(lines) + "\n"
