"""The render filters quote every value safely: any string survives a round trip through YAML
(ruamel in YAML 1.2 and PyYAML in YAML 1.1, as kubectl-style tools read it), through a block scalar,
and through a systemd unit word; a comment never spans lines."""

from __future__ import annotations

import yaml as pyyaml
from hypothesis import given, settings
from hypothesis import strategies as st
from ruamel.yaml import YAML

from sidegate.compiler.deploy.render import _comment, _unit_word, yaml_block, yaml_quote
from sidegate.compiler.importers.yamlwrite import dump, scalar

# Any text YAML can hold: everything but lone surrogates (not representable in UTF-8 at all).
TEXT = st.text(st.characters(exclude_categories=["Cs"]), max_size=40)
TRICKY = ["", "yes", "no", "on", "null", "~", "0x10", "1e3", "2024-10-21", "- a", "a: b", "#x", "{a}", "${X}",
          "'", '"', "\\", "\u2028", "\x85", "\ufeff", "\x7f", "\t lead", "trail ", "a\nb", "@x", "`x", "%x", "*x", "&x",
          "!x", "|", ">", "? x", "a # b", "\U0001f600", "\x00"]  # fmt: skip


def _both(document: str) -> tuple[object, object]:
    return YAML(typ="safe", pure=True).load(document), pyyaml.safe_load(document)


@settings(max_examples=300, deadline=None)
@given(TEXT)
def test_yaml_quote_round_trips_in_both_yaml_dialects(text: str) -> None:
    assert _both(f"key: {yaml_quote(text)}\n") == ({"key": text}, {"key": text})
    assert _both(f"list: {yaml_quote([text, 1, True, None])}\n")[0] == {"list": [text, 1, True, None]}


def test_yaml_quote_tricky_strings() -> None:
    for text in TRICKY:
        assert _both(f"k: {yaml_quote(text)}\n") == ({"k": text}, {"k": text}), repr(text)
        assert _both(f"k: {yaml_quote({text: [text]})}\n") == ({"k": {text: [text]}}, {"k": {text: [text]}}), repr(text)


@settings(max_examples=300, deadline=None)
@given(st.lists(TEXT, max_size=4).map("\n".join), st.booleans())
def test_yaml_block_round_trips(text: str, newline: bool) -> None:
    text = text + "\n" if newline else text
    document = f"data:\n  plan.json: {yaml_block(text, 4)}\nnext: 1\n"
    assert _both(document) == ({"data": {"plan.json": text}, "next": 1}, {"data": {"plan.json": text}, "next": 1})


@settings(max_examples=200, deadline=None)
@given(TEXT)
def test_yamlwrite_scalars_round_trip(text: str) -> None:
    assert _both(f"k: {scalar(text)}\n") == ({"k": text}, {"k": text})
    written = dump({text: {"list": [text], "n": 1}}, {(text,): ["note\nwith a break"]})
    assert YAML(typ="safe", pure=True).load(written) == {text: {"list": [text], "n": 1}}


def test_unit_words_and_comments() -> None:
    assert _unit_word("/opt/sidegate/bin/sidegate") == "/opt/sidegate/bin/sidegate"
    assert _unit_word("/srv/my dir/100%/$HOME") == '"/srv/my dir/100%%/$$HOME"'
    assert _unit_word('a"b\\c') == '"a\\"b\\\\c"'
    assert _comment("two\nlines\r\nhere") == "two lines here"
