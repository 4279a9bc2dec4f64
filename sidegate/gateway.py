"""`Gateway`: the sidecar's runtime in-process. Built from a spec (compiled here) or a plan, it owns
a runtime thread (`sidegate.host`) hosting the same ASGI app `sidegate serve` runs, and each call is
a request to it: the same routing, adapters, retries, fallbacks, limits and spend accounting."""

from __future__ import annotations

import atexit
import os
import weakref
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, overload

from sidegate.calls import call, call_async, stream, stream_async
from sidegate.host import Host
from sidegate.runtime.plan import Plan
from sidegate.runtime.plan.canonical import loads
from sidegate.runtime.plan.secrets import unresolved
from sidegate.wire import Result

__all__ = ["Gateway", "SpecError"]


class SpecError(ValueError):
    """The spec did not compile (the diagnostics as `sidegate lint` prints them), or its secret
    references cannot be resolved (named, never their values)."""


def _text_of(source: str | os.PathLike[str]) -> tuple[str, str]:
    """(name, text): a path's contents, or `source` itself when it is spec text."""
    if isinstance(source, os.PathLike) or ("\n" not in source and Path(source).is_file()):
        path = Path(source)
        return str(path), path.read_text(encoding="utf-8-sig")
    return "<spec>", source


def compile_spec(source: str | os.PathLike[str]) -> Plan:
    """The plan of a spec path or text; `SpecError` with every diagnostic when it has errors."""
    from sidegate.compiler.pipeline import compile_text
    from sidegate.compiler.report import text

    name, spec = _text_of(source)
    result = compile_text(spec, name)
    if not result.ok or result.plan is None:
        raise SpecError(f"the spec does not compile:\n{text(result.diagnostics)}")
    return result.plan


def _close_at_exit(host: weakref.ref[Host]) -> None:
    alive = host()
    if alive is not None:
        alive.close()


class Gateway:
    """sidegate in-process. Thread-safe: one gateway serves any number of threads, asyncio tasks
    and Trio tasks at once. Close it (or use it as a context manager) to write the last spend rows."""

    def __init__(self, plan: Plan, *, api_key: str | None = None) -> None:
        problems = unresolved(plan)
        if problems:
            lines = "".join(f"\n  - {p}" for p in problems)
            raise SpecError(f"{len(problems)} secret reference(s) cannot be resolved:{lines}")
        self.plan = plan
        self._headers: list[tuple[bytes, bytes]] = []
        if api_key is not None:
            self._headers.append((b"authorization", b"Bearer " + api_key.encode()))
        self._host = Host(plan)
        atexit.register(_close_at_exit, weakref.ref(self._host))  # a gateway left open still writes its spend

    @classmethod
    def from_spec(cls, spec: str | os.PathLike[str], *, api_key: str | None = None) -> Gateway:
        """Compile a spec (a path, or the YAML text itself) and serve it in-process. `api_key` is the
        key sent on every call (needed when the spec has `auth`)."""
        return cls(compile_spec(spec), api_key=api_key)

    @classmethod
    def from_plan(cls, plan: Plan | str | os.PathLike[str], *, api_key: str | None = None) -> Gateway:
        """Serve a compiled plan: a `Plan`, or a plan file (`sidegate compile`) by path or text; the
        compiler is not loaded."""
        if isinstance(plan, Plan):
            return cls(plan, api_key=api_key)
        _, text = _text_of(plan)
        return cls(loads(text), api_key=api_key)

    # -- chat completions ------------------------------------------------------------------------

    @overload
    def completion(self, model: str, messages: list[dict[str, Any]], *, stream: Literal[False] = ...,
                   **params: Any) -> Result: ...
    @overload
    def completion(self, model: str, messages: list[dict[str, Any]], *, stream: Literal[True],
                   **params: Any) -> Iterator[Result]: ...
    @overload
    def completion(self, model: str, messages: list[dict[str, Any]], *, stream: bool,
                   **params: Any) -> Result | Iterator[Result]: ...
    def completion(self, model: str, messages: list[dict[str, Any]], *, stream: bool = False,
                   **params: Any) -> Result | Iterator[Result]:
        """`POST /v1/chat/completions`: the answer, or with `stream=True` an iterator of its chunks."""
        return self._sync("/v1/chat/completions", {"model": model, "messages": messages, **params}, stream)

    @overload
    async def acompletion(self, model: str, messages: list[dict[str, Any]], *, stream: Literal[False] = ...,
                          **params: Any) -> Result: ...
    @overload
    async def acompletion(self, model: str, messages: list[dict[str, Any]], *, stream: Literal[True],
                          **params: Any) -> AsyncIterator[Result]: ...
    @overload
    async def acompletion(self, model: str, messages: list[dict[str, Any]], *, stream: bool,
                          **params: Any) -> Result | AsyncIterator[Result]: ...
    async def acompletion(self, model: str, messages: list[dict[str, Any]], *, stream: bool = False,
                          **params: Any) -> Result | AsyncIterator[Result]:
        """`completion` for asyncio and Trio code."""
        return await self._async("/v1/chat/completions", {"model": model, "messages": messages, **params}, stream)

    # -- embeddings ------------------------------------------------------------------------------

    def embedding(self, model: str, input: str | list[str], **params: Any) -> Result:
        """`POST /v1/embeddings`."""
        return call(self._host, "/v1/embeddings", {"model": model, "input": input, **params}, self._headers)

    async def aembedding(self, model: str, input: str | list[str], **params: Any) -> Result:
        """`embedding` for asyncio and Trio code."""
        return await call_async(self._host, "/v1/embeddings", {"model": model, "input": input, **params},
                                self._headers)

    # -- the Responses API -----------------------------------------------------------------------

    @overload
    def responses(self, model: str, input: Any, *, stream: Literal[False] = ..., **params: Any) -> Result: ...
    @overload
    def responses(self, model: str, input: Any, *, stream: Literal[True], **params: Any) -> Iterator[Result]: ...
    @overload
    def responses(self, model: str, input: Any, *, stream: bool, **params: Any) -> Result | Iterator[Result]: ...
    def responses(self, model: str, input: Any, *, stream: bool = False, **params: Any) -> Result | Iterator[Result]:
        """`POST /v1/responses`: the response, or with `stream=True` its events (`response.created`,
        `response.output_text.delta`, ... `response.completed`)."""
        return self._sync("/v1/responses", {"model": model, "input": input, **params}, stream)

    @overload
    async def aresponses(self, model: str, input: Any, *, stream: Literal[False] = ...,
                         **params: Any) -> Result: ...
    @overload
    async def aresponses(self, model: str, input: Any, *, stream: Literal[True],
                         **params: Any) -> AsyncIterator[Result]: ...
    @overload
    async def aresponses(self, model: str, input: Any, *, stream: bool,
                         **params: Any) -> Result | AsyncIterator[Result]: ...
    async def aresponses(self, model: str, input: Any, *, stream: bool = False,
                         **params: Any) -> Result | AsyncIterator[Result]:
        """`responses` for asyncio and Trio code."""
        return await self._async("/v1/responses", {"model": model, "input": input, **params}, stream)

    # -- Anthropic's Messages API ----------------------------------------------------------------

    @overload
    def messages(self, model: str, messages: list[dict[str, Any]], *, max_tokens: int,
                 stream: Literal[False] = ..., **params: Any) -> Result: ...
    @overload
    def messages(self, model: str, messages: list[dict[str, Any]], *, max_tokens: int,
                 stream: Literal[True], **params: Any) -> Iterator[Result]: ...
    @overload
    def messages(self, model: str, messages: list[dict[str, Any]], *, max_tokens: int, stream: bool,
                 **params: Any) -> Result | Iterator[Result]: ...
    def messages(self, model: str, messages: list[dict[str, Any]], *, max_tokens: int, stream: bool = False,
                 **params: Any) -> Result | Iterator[Result]:
        """`POST /v1/messages` (Anthropic's shape, `system=` as a keyword): the message, or with
        `stream=True` its events (`message_start`, `content_block_delta`, ... `message_stop`)."""
        body = {"model": model, "messages": messages, "max_tokens": max_tokens, **params}
        return self._sync("/v1/messages", body, stream)

    @overload
    async def amessages(self, model: str, messages: list[dict[str, Any]], *, max_tokens: int,
                        stream: Literal[False] = ..., **params: Any) -> Result: ...
    @overload
    async def amessages(self, model: str, messages: list[dict[str, Any]], *, max_tokens: int,
                        stream: Literal[True], **params: Any) -> AsyncIterator[Result]: ...
    @overload
    async def amessages(self, model: str, messages: list[dict[str, Any]], *, max_tokens: int,
                        stream: bool, **params: Any) -> Result | AsyncIterator[Result]: ...
    async def amessages(self, model: str, messages: list[dict[str, Any]], *, max_tokens: int,
                        stream: bool = False, **params: Any) -> Result | AsyncIterator[Result]:
        """`messages` for asyncio and Trio code."""
        body = {"model": model, "messages": messages, "max_tokens": max_tokens, **params}
        return await self._async("/v1/messages", body, stream)

    # -- plumbing and lifetime -------------------------------------------------------------------

    def _sync(self, path: str, body: dict[str, Any], streamed: bool) -> Result | Iterator[Result]:
        if streamed:
            return stream(self._host, path, {**body, "stream": True}, self._headers)
        return call(self._host, path, body, self._headers)

    async def _async(self, path: str, body: dict[str, Any], streamed: bool) -> Result | AsyncIterator[Result]:
        if streamed:
            return stream_async(self._host, path, {**body, "stream": True}, self._headers)
        return await call_async(self._host, path, body, self._headers)

    def close(self) -> None:
        """Stop the runtime: calls still running are cancelled, queued spend rows are written, the
        store is closed. Blocks until done; idempotent."""
        self._host.close()

    async def aclose(self) -> None:
        """`close` without blocking the caller's asyncio or Trio loop."""
        import sniffio

        if sniffio.current_async_library() == "trio":
            import trio

            await trio.to_thread.run_sync(self.close)
        else:
            import asyncio

            await asyncio.get_running_loop().run_in_executor(None, self.close)

    def __enter__(self) -> Gateway:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    async def __aenter__(self) -> Gateway:
        return self

    async def __aexit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.aclose()

