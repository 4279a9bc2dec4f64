"""The parse phase: YAML 1.2 scalars, positions, duplicate keys, aliases, merges and hostile input."""

from __future__ import annotations

import pytest

from sidegate.compiler.parse import MAX_ALIAS_NODES, parse


def codes(text: str) -> list[str]:
    return [d.code for d in parse(text, "t.yaml").diagnostics]


def test_scalars_follow_yaml_1_2_core_schema() -> None:
    text = "a: [yes, no, on, 012, 0o17, 0x1f, 1e3, -2.5, ~, null, true, False, 2024-10-21, '1', 1_000]\n"
    assert parse(text, "t.yaml").data == {
        "a": ["yes", "no", "on", 12, 15, 31, 1000.0, -2.5, None, None, True, False, "2024-10-21", "1", "1_000"]
    }


def test_explicit_core_tags_are_honoured() -> None:
    assert parse("a: !!str 12\nb: !!float 3\nc: !!int '7'\n", "t.yaml").data == {"a": "12", "b": 3.0, "c": 7}
    assert codes("a: !!int nope\n") == ["yaml.tag"]


def test_positions_of_keys_and_values_are_one_based() -> None:
    parsed = parse("version: 1\nmodels:\n  demo:\n    timeout: 5x\n", "t.yaml")
    locate = parsed.source_map.locate
    assert locate("/models/demo/timeout") == (4, 14)
    assert locate("/models/demo/timeout", True) == (4, 5)
    # a block mapping is located at the key that holds it, not at its first child
    assert locate("/models/demo") == (3, 3)
    # a pointer below a scalar falls back to the nearest located ancestor
    assert locate("/models/demo/timeout/deeper") == (4, 14)


def test_columns_count_characters_not_bytes() -> None:
    parsed = parse('"日本": {a: 1}\n', "t.yaml")
    assert parsed.source_map.locate("/日本/a") == (1, 11)


def test_every_duplicate_key_is_reported_at_the_second_key() -> None:
    result = parse("a: 1\nb:\n  c: 1\n  c: 2\na: 3\n", "t.yaml")
    assert [(d.code, d.line, d.column, d.pointer) for d in result.diagnostics] == [
        ("yaml.duplicate-key", 4, 3, "/b/c"),
        ("yaml.duplicate-key", 5, 1, "/a"),
    ]
    assert result.data is None


def test_merge_keys_fill_in_without_overriding() -> None:
    text = "base: &b {x: 1, y: 2}\nmore: &m {z: 3}\nuse:\n  <<: [*b, *m]\n  y: 20\n"
    assert parse(text, "t.yaml").data["use"] == {"y": 20, "x": 1, "z": 3}
    assert codes("a: &a [1]\nb:\n  <<: *a\n") == ["yaml.merge"]


def test_billion_laughs_is_refused_while_composing() -> None:
    lines = ['a: &a ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for prev, name in zip("abcdefgh", "bcdefghi", strict=True):
        lines.append(f"{name}: &{name} [" + ", ".join([f"*{prev}"] * 10) + "]")
    result = parse("\n".join(lines) + "\n", "t.yaml")
    (diagnostic,) = result.diagnostics
    assert diagnostic.code == "yaml.alias-bomb"
    assert diagnostic.pointer == "/e"  # the first value whose expansion passes the limit
    assert result.data is None


def test_large_documents_without_aliases_are_not_bombs() -> None:
    text = "".join(f"k{i}: [1, 2, 3]\n" for i in range(MAX_ALIAS_NODES // 3))
    assert parse(text, "t.yaml").diagnostics == ()


def test_recursive_alias_and_undefined_alias() -> None:
    assert codes("a: &x [*x]\n") == ["yaml.recursive-alias"]
    assert codes("a: *nowhere\n") == ["yaml.syntax"]


def test_pathological_nesting_is_a_diagnostic_not_a_crash() -> None:
    assert codes("a: " + "[" * 100_000 + "]" * 100_000) == ["yaml.too-deep"]


@pytest.mark.parametrize(
    ("text", "code"),
    [
        ("", "yaml.empty"),
        ("# only a comment\n", "yaml.empty"),
        ("---\n", "yaml.empty"),
        ("a: 1\n---\nb: 2\n", "yaml.syntax"),
        ("a: b: c\n", "yaml.syntax"),
        ("a: \x01\n", "yaml.syntax"),
        ("? [a]\n: 1\n", "yaml.key-type"),
        ("a: !custom x\n", "yaml.tag"),
        ("a: .inf\n", "yaml.non-finite"),
    ],
)
def test_malformed_documents(text: str, code: str) -> None:
    assert codes(text) == [code]


def test_syntax_error_is_located_at_the_problem() -> None:
    (d,) = parse("a: 1\nb: c: d\n", "t.yaml").diagnostics
    assert (d.line, d.column, d.message) == (2, 5, "mapping values are not allowed here")


def test_yaml_1_2_plain_scalars_with_colons_in_flow_collections() -> None:
    # libyaml (YAML 1.1) refuses these; the YAML 1.2 parser takes over and accepts them
    text = "server: {listen: 127.0.0.1:4000, base: http://h:1/v1}\n"
    assert parse(text, "t.yaml").data == {"server": {"listen": "127.0.0.1:4000", "base": "http://h:1/v1"}}
