"""Parse phase: YAML text -> plain JSON-like data, and a source map from JSON pointers to positions.

ruamel.yaml's parser (libyaml through ``ruamel.yaml.clib`` when installed) produces events, each
with its position; this module composes them itself, in one iterative pass, because that is the
one place that sees every key: duplicate keys are reported at the second key, alias expansion is
bounded while composing (a "billion laughs" document is refused before anything walks it), nesting
depth is bounded without recursion, and scalars are resolved by the YAML 1.2 core schema (``yes``
and ``2024-10-21`` stay strings).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.error import MarkedYAMLError, YAMLError
from ruamel.yaml.events import (
    AliasEvent,
    DocumentStartEvent,
    Event,
    MappingEndEvent,
    MappingStartEvent,
    ScalarEvent,
    SequenceEndEvent,
    SequenceStartEvent,
    StreamEndEvent,
)

from sidegate.compiler.diagnostics import Diagnostic, Severity, escape_pointer

__all__ = ["MAX_ALIAS_NODES", "MAX_DEPTH", "Parsed", "SourceMap", "parse"]

MAX_ALIAS_NODES = 100_000
"""Most nodes that aliases may add to a document by expansion."""
MAX_DEPTH = 64
"""Deepest nesting of mappings and sequences accepted."""

_TAG = "tag:yaml.org,2002:"
_NULL = re.compile(r"~|null|Null|NULL|")
_BOOL = {"true": True, "True": True, "TRUE": True, "false": False, "False": False, "FALSE": False}
_INT = re.compile(r"[-+]?[0-9]+|0o[0-7]+|0x[0-9a-fA-F]+")
_FLOAT = re.compile(r"[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?")
_SPECIAL_FLOAT = re.compile(r"[-+]?\.(inf|Inf|INF)|\.(nan|NaN|NAN)")
_MERGE = object()
"""Marks a pending `<<` merge key."""

Position = tuple[int, int]


@dataclass(slots=True)
class SourceMap:
    """Where each node of the parsed document was written (1-based line, column)."""

    values: dict[str, Position] = field(default_factory=dict)
    """Pointer -> position of the value (for a block collection under a key: the key's)."""
    keys: dict[str, Position] = field(default_factory=dict)
    """Pointer -> position of the mapping key that holds the value."""

    def locate(self, pointer: str, at_key: bool = False) -> Position:
        """Position of ``pointer`` (its key with ``at_key``), else of its nearest known ancestor."""
        if at_key and pointer in self.keys:
            return self.keys[pointer]
        while True:
            found = self.values.get(pointer)
            if found is not None:
                return found
            if not pointer:
                return (1, 1)
            pointer = pointer[: pointer.rindex("/")]


@dataclass(frozen=True, slots=True)
class Parsed:
    """The parse phase's result: data (None when parsing failed), source map, diagnostics."""

    data: Any
    source_map: SourceMap
    diagnostics: tuple[Diagnostic, ...]


class _Stop(Exception):
    """Composition cannot go on (the diagnostic was already recorded)."""


@dataclass(slots=True)
class _Frame:
    value: dict[str, Any] | list[Any]
    pointer: str
    anchor: str | None
    size: int = 1
    own: int = 1
    key: object = None
    key_pos: Position = (1, 1)
    first_seen: dict[str, Position] = field(default_factory=dict)
    merges: list[tuple[Any, Position]] = field(default_factory=list)


@dataclass(slots=True)
class _Anchor:
    value: Any
    size: int
    done: bool


def _short(tag: str) -> str:
    return "!!" + tag[len(_TAG) :] if tag.startswith(_TAG) else tag


def _pos(event: Event) -> Position:
    mark = event.start_mark
    return (mark.line + 1, mark.column + 1)


def _events(text: str, *, pure: bool) -> Iterator[Event]:
    # pure=False uses libyaml (ruamel.yaml.clib) when it is installed: about 8x faster.
    yield from YAML(typ="safe", pure=pure).parse(text)


class _Composer:
    def __init__(self, file: str) -> None:
        self.file = file
        self.source_map = SourceMap()
        self.diagnostics: list[Diagnostic] = []
        self.stack: list[_Frame] = []
        self.anchors: dict[str, _Anchor] = {}
        self.root: Any = None
        self.documents = 0

    def error(self, code: str, pos: Position, message: str, pointer: str = "") -> None:
        self.diagnostics.append(
            Diagnostic(
                severity=Severity.ERROR,
                code=code,
                message=message,
                pointer=pointer,
                file=self.file,
                line=pos[0],
                column=pos[1],
            )
        )

    def run(self, events: Iterator[Event]) -> None:
        for event in events:
            if isinstance(event, DocumentStartEvent):
                self.documents += 1
                if self.documents > 1:
                    self.error("yaml.syntax", _pos(event), "expected a single document, found a second one")
                    raise _Stop
            elif isinstance(event, ScalarEvent):
                self.scalar(event)
            elif isinstance(event, (MappingStartEvent, SequenceStartEvent)):
                self.start(event)
            elif isinstance(event, (MappingEndEvent, SequenceEndEvent)):
                self.end()
            elif isinstance(event, AliasEvent):
                self.alias(event)
            elif isinstance(event, StreamEndEvent):
                break

    def child_pointer(self) -> str:
        """The pointer of the node about to be added to the top frame."""
        top = self.stack[-1]
        if isinstance(top.value, list):
            return f"{top.pointer}/{len(top.value)}"
        return top.pointer + "/" + escape_pointer(top.key if isinstance(top.key, str) else "<<")

    def awaiting_key(self) -> bool:
        return bool(self.stack) and isinstance(self.stack[-1].value, dict) and self.stack[-1].key is None

    def scalar(self, event: ScalarEvent) -> None:
        pos = _pos(event)
        if self.awaiting_key():
            top = self.stack[-1]
            plain = event.style in ("", None) and event.tag is None
            top.key = _MERGE if plain and event.value == "<<" else str(event.value)
            top.key_pos = pos
            if event.anchor is not None:
                self.anchors[event.anchor] = _Anchor(str(event.value), 1, True)
            return
        pointer = self.child_pointer() if self.stack else ""
        value = self.resolve(event, pos, pointer)
        if event.anchor is not None:
            self.anchors[event.anchor] = _Anchor(value, 1, True)
        self.add(value, pos, pointer, size=1, own=1)

    def resolve(self, event: ScalarEvent, pos: Position, pointer: str) -> Any:
        text: str = event.value
        tag = event.tag
        if tag is None:
            if event.style not in ("", None):
                return text
            return self.resolve_plain(text, pos, pointer)
        if tag in ("!", _TAG + "str", _TAG + "timestamp"):
            return text
        if tag in (_TAG + "int", _TAG + "float", _TAG + "bool", _TAG + "null"):
            value = self.resolve_plain(text, pos, pointer)
            kind = tag[len(_TAG) :]
            if kind == "float" and isinstance(value, int) and not isinstance(value, bool):
                return float(value)
            expected = {"int": int, "float": float, "bool": bool, "null": type(None)}[kind]
            if isinstance(value, expected) and not (kind == "int" and isinstance(value, bool)):
                return value
            self.error("yaml.tag", pos, f"'{text}' is not a valid !!{kind}", pointer)
            return None
        self.error("yaml.tag", pos, f"unsupported tag '{_short(tag)}' (only plain YAML data is accepted)", pointer)
        return None

    def resolve_plain(self, text: str, pos: Position, pointer: str) -> Any:
        if _NULL.fullmatch(text):
            return None
        if text in _BOOL:
            return _BOOL[text]
        if _INT.fullmatch(text):
            if text.startswith("0o"):
                return int(text[2:], 8)
            if text.startswith("0x"):
                return int(text[2:], 16)
            return int(text)
        if _FLOAT.fullmatch(text):
            return float(text)
        if _SPECIAL_FLOAT.fullmatch(text):
            self.error("yaml.non-finite", pos, f"'{text}' is not a finite number", pointer)
            return None
        return text

    def start(self, event: MappingStartEvent | SequenceStartEvent) -> None:
        pos = _pos(event)
        is_map = isinstance(event, MappingStartEvent)
        tag = event.tag
        allowed = (None, "!", _TAG + ("map" if is_map else "seq"))
        if tag not in allowed:
            self.error("yaml.tag", pos, f"unsupported tag '{_short(tag)}' (only plain YAML data is accepted)")
            raise _Stop
        if self.awaiting_key():
            self.error("yaml.key-type", pos, "mapping keys must be plain strings, not collections")
            raise _Stop
        pointer = self.child_pointer() if self.stack else ""
        if len(self.stack) >= MAX_DEPTH:
            self.error("yaml.too-deep", pos, f"nesting deeper than {MAX_DEPTH} levels", pointer)
            raise _Stop
        block = not event.flow_style
        if self.stack and isinstance(self.stack[-1].value, dict) and block:
            self.source_map.values[pointer] = self.stack[-1].key_pos
        else:
            self.source_map.values[pointer] = pos
        frame = _Frame({} if is_map else [], pointer, event.anchor)
        if event.anchor is not None:
            self.anchors[event.anchor] = _Anchor(frame.value, 0, False)
        self.stack.append(frame)

    def end(self) -> None:
        frame = self.stack.pop()
        if isinstance(frame.value, dict) and frame.merges:
            self.merge(frame)
        if frame.size - frame.own > MAX_ALIAS_NODES:
            self.error(
                "yaml.alias-bomb",
                self.source_map.locate(frame.pointer),
                f"aliases expand this value to {frame.size} nodes (the limit is {MAX_ALIAS_NODES}); "
                "a document like this ('billion laughs') is refused",
                frame.pointer,
            )
            raise _Stop
        if frame.anchor is not None:
            self.anchors[frame.anchor] = _Anchor(frame.value, frame.size, True)
        self.add(frame.value, None, frame.pointer, size=frame.size, own=frame.own)

    def merge(self, frame: _Frame) -> None:
        assert isinstance(frame.value, dict)
        explicit = frame.value
        merged: dict[str, Any] = {}
        for source, pos in frame.merges:
            sources = source if isinstance(source, list) else [source]
            for item in sources:
                if not isinstance(item, dict):
                    self.error("yaml.merge", pos, "'<<' merges a mapping or a list of mappings", frame.pointer)
                    continue
                for key, value in item.items():
                    if key not in explicit and key not in merged:
                        merged[key] = value
                        pointer = frame.pointer + "/" + escape_pointer(key)
                        self.source_map.values[pointer] = pos
                        self.source_map.keys[pointer] = pos
        explicit.update(merged)

    def alias(self, event: AliasEvent) -> None:
        pos = _pos(event)
        anchor = self.anchors.get(event.anchor)
        if anchor is None:
            self.error("yaml.syntax", pos, f"found undefined alias '*{event.anchor}'")
            raise _Stop
        if not anchor.done:
            self.error("yaml.recursive-alias", pos, f"alias '*{event.anchor}' refers to a node that contains it")
            raise _Stop
        if self.awaiting_key():
            top = self.stack[-1]
            if not isinstance(anchor.value, str):
                self.error("yaml.key-type", pos, "mapping keys must be plain strings, not collections")
                raise _Stop
            top.key, top.key_pos = anchor.value, pos
            return
        pointer = self.child_pointer() if self.stack else ""
        self.add(anchor.value, pos, pointer, size=anchor.size, own=1)

    def add(self, value: Any, pos: Position | None, pointer: str, *, size: int, own: int) -> None:
        """Attach a finished node to its parent (or make it the root)."""
        if pos is not None:
            self.source_map.values[pointer] = pos
        if not self.stack:
            self.root = value
            return
        top = self.stack[-1]
        top.size += size
        top.own += own
        if isinstance(top.value, list):
            top.value.append(value)
            return
        key, key_pos = top.key, top.key_pos
        top.key = None
        if key is _MERGE:
            top.merges.append((value, key_pos))
            return
        assert isinstance(key, str)
        first = top.first_seen.get(key)
        if first is not None:
            self.error(
                "yaml.duplicate-key",
                key_pos,
                f"duplicate key '{key}' (first defined at line {first[0]})",
                pointer,
            )
            return
        top.first_seen[key] = key_pos
        top.value[key] = value
        self.source_map.keys[pointer] = key_pos


_TOKEN_NAMES = {
    "stream end": "the end of the file",
    "block end": "the end of the indented block",
    "block mapping start": "a mapping (check the indentation)",
    "block sequence start": "a list (check the indentation)",
    "scalar": "a value",
    "key": "a key",
    "value": "':'",
    "block entry": "'-'",
    "flow entry": "','",
    "flow mapping start": "'{'",
    "flow mapping end": "'}'",
    "flow sequence start": "'['",
    "flow sequence end": "']'",
    "document start": "'---'",
    "document end": "'...'",
    "anchor": "an anchor",
    "alias": "an alias",
    "tag": "a tag",
}
_TOKEN = re.compile(r"'?<([a-z ]+)>'?")


def _humane(problem: str) -> str:
    """ruamel's token names (``'<block mapping start>'``) in words."""
    return _TOKEN.sub(lambda m: _TOKEN_NAMES.get(m.group(1), m.group(0)), problem)


def _yaml_error(exc: YAMLError, text: str) -> tuple[Position, str]:
    if isinstance(exc, MarkedYAMLError) and exc.problem_mark is not None:
        mark = exc.problem_mark
        message = _humane(str(exc.problem or "invalid YAML"))
        if exc.context:
            message += f" ({exc.context})"
        return (mark.line + 1, mark.column + 1), message
    position = getattr(exc, "position", None)
    if isinstance(position, int):
        before = text[:position]
        line = before.count("\n") + 1
        column = position - (before.rfind("\n") + 1) + 1
        reason = getattr(exc, "reason", None) or "unacceptable character"
        return (line, column), f"{reason} (character {ord(text[position]):#x})"
    return (1, 1), str(exc).splitlines()[0] if str(exc) else "invalid YAML"


def _compose(text: str, file: str, *, pure: bool) -> _Composer:
    composer = _Composer(file)
    try:
        composer.run(_events(text, pure=pure))
    except _Stop:
        pass
    except YAMLError as exc:
        if not pure:
            # libyaml implements YAML 1.1's grammar, which refuses some valid YAML 1.2 (a ':' inside
            # a plain scalar in flow context, as in `{listen: 127.0.0.1:4000}`). ruamel's own YAML 1.2
            # parser has the last word, so results never depend on whether libyaml is installed.
            return _compose(text, file, pure=True)
        pos, message = _yaml_error(exc, text)
        composer.error("yaml.syntax", pos, message)
    return composer


def parse(text: str, file: str) -> Parsed:
    """Parse ``text`` (the spec named ``file``) into plain data, its source map and diagnostics."""
    composer = _compose(text, file, pure=False)
    diagnostics = tuple(composer.diagnostics)
    if not diagnostics and composer.root is None:
        diagnostics = (
            Diagnostic(
                severity=Severity.ERROR,
                code="yaml.empty",
                message="the spec is empty; it needs at least 'version' and 'models'",
                pointer="",
                file=file,
                line=1,
                column=1,
            ),
        )
    data = None if diagnostics else composer.root
    return Parsed(data=data, source_map=composer.source_map, diagnostics=diagnostics)
