"""A small YAML writer for generated specs: block style, comments above keys, safe scalars.

Generated specs are read by people (with comments that say where each part came from), so they are
written by hand rather than by a YAML library's emitter: mappings and lists of mappings in block
style, lists of scalars in flow style, and a string plain only when every YAML parser reads it back
as that same string (otherwise double-quoted, see :func:`compiler.deploy.render.yaml_quote`).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence

__all__ = ["Notes", "Path", "dump", "scalar"]

Path = tuple[str | int, ...]
"""Keys and list indexes from the document's root to a node."""
Notes = Mapping[Path, Sequence[str]]
"""Comment lines written above the node at each path."""

_PLAIN = re.compile(r"[A-Za-z_][A-Za-z0-9_.@/+-]*")
_RESERVED = {"y", "n", "yes", "no", "on", "off", "true", "false", "null"}
_BREAK = re.compile("\r\n|[\r\n\x85\u2028\u2029]")
_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\ufeff\ud800-\udfff\ufffe\uffff]")


def _quote(text: str) -> str:
    return _UNSAFE.sub(lambda m: f"\\u{ord(m.group()):04x}", json.dumps(text, ensure_ascii=False))


def scalar(value: object) -> str:
    """One scalar (or a flow list of scalars, or ``{}``) as YAML text."""
    if value is None or isinstance(value, bool):
        return json.dumps(value)
    if isinstance(value, (int, float)):
        return json.dumps(value)
    if isinstance(value, str):
        plain = _PLAIN.fullmatch(value) is not None and value.lower() not in _RESERVED
        return value if plain else _quote(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(scalar(v) for v in value) + "]"
    if isinstance(value, Mapping):
        return "{" + ", ".join(f"{scalar(str(k))}: {scalar(v)}" for k, v in value.items()) + "}"
    raise TypeError(f"cannot write {type(value).__name__} as YAML")


def _is_block(value: object) -> bool:
    """Lists that hold mappings are written in block style; lists of scalars in flow style."""
    return isinstance(value, list) and any(isinstance(v, Mapping) and v for v in value)


def _comment_lines(text: str, pad: str) -> list[str]:
    """``text`` as comment lines (a line break inside it starts another comment line)."""
    return [f"{pad}# {part}".rstrip() for part in _BREAK.split(text)]


def _comments(notes: Notes, path: Path, pad: str, lines: list[str]) -> None:
    for note in notes.get(path, ()):
        lines.extend(_comment_lines(note, pad))


def _mapping(data: Mapping[str, object], path: Path, indent: int, notes: Notes, lines: list[str]) -> None:
    pad = " " * indent
    for key, value in data.items():
        here = (*path, key)
        _comments(notes, here, pad, lines)
        if isinstance(value, Mapping) and value:
            lines.append(f"{pad}{scalar(key)}:")
            _mapping(value, here, indent + 2, notes, lines)
        elif _is_block(value):
            assert isinstance(value, list)
            lines.append(f"{pad}{scalar(key)}:")
            _sequence(value, here, indent + 2, notes, lines)
        else:
            lines.append(f"{pad}{scalar(key)}: {scalar(value)}")


def _sequence(items: list[object], path: Path, indent: int, notes: Notes, lines: list[str]) -> None:
    pad = " " * indent
    for index, item in enumerate(items):
        here = (*path, index)
        _comments(notes, here, pad, lines)
        if isinstance(item, Mapping) and item:
            inner: list[str] = []
            _mapping(item, here, indent + 2, notes, inner)
            first = next(i for i, line in enumerate(inner) if not line.lstrip().startswith("#"))
            lines.extend(inner[:first])
            lines.append(f"{pad}- {inner[first][indent + 2 :]}")
            lines.extend(inner[first + 1 :])
        else:
            lines.append(f"{pad}- {scalar(item)}")


def dump(data: Mapping[str, object], notes: Notes, header: Sequence[str] = (), footer: Sequence[str] = ()) -> str:
    """``data`` as a YAML document, with ``notes`` above nodes and comment lines before and after."""
    lines = [line for h in header for line in _comment_lines(h, "")]
    _mapping(data, (), 0, notes, lines)
    lines.extend(line for f in footer for line in _comment_lines(f, ""))
    return "\n".join(lines) + "\n"
