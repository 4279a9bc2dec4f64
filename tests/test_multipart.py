"""Multipart bodies: what sidegate parses from clients and what it encodes for providers."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sidegate.runtime.errors import BadRequest
from sidegate.runtime.http.multipart_form import MAX_PARTS, parse_form
from sidegate.runtime.upstream.multipart import Upload, encode

_names = st.text(st.characters(codec="utf-8", exclude_characters='"\r\n%\\'), min_size=1, max_size=20)


@settings(max_examples=60, deadline=None)
@given(fields=st.lists(st.tuples(_names, st.text(max_size=50)), max_size=4),
       files=st.lists(st.tuples(_names, _names, st.binary(max_size=300)), max_size=3))
def test_what_sidegate_encodes_parses_back_part_for_part(fields: list[tuple[str, str]],
                                                        files: list[tuple[str, str, bytes]]) -> None:
    body, content_type = encode(fields, [Upload(n, fn, d, "audio/wav") for n, fn, d in files])
    form = parse_form(content_type, body)
    assert [(p.name, p.text()) for p in form.parts[: len(fields)]] == fields
    assert [(p.name, p.filename, p.data) for p in form.parts[len(fields):]] == files


def test_a_filename_cannot_inject_a_header_or_a_part() -> None:
    body, content_type = encode([], [Upload("file", 'x"; name="model"\r\nContent-Type: text/evil\r\n\r\nhi', b"data")])
    form = parse_form(content_type, body)
    assert len(form.parts) == 1
    part = form.parts[0]
    assert (part.name, part.data, part.content_type) == ("file", b"data", "application/octet-stream")
    assert "\r" not in (part.filename or "") and '"' not in (part.filename or "")


def test_not_multipart_is_415_and_malformed_is_400() -> None:
    with pytest.raises(BadRequest) as refused:
        parse_form(b"application/json", b"{}")
    assert refused.value.status == 415
    with pytest.raises(BadRequest) as no_boundary:
        parse_form(b"multipart/form-data", b"")
    assert no_boundary.value.status == 400
    body, content_type = encode([("model", "m")], [Upload("file", "a.wav", b"x" * 100)])
    with pytest.raises(BadRequest, match="closing boundary"):
        parse_form(content_type, body[:-30])
    with pytest.raises(BadRequest, match="content-disposition"):
        parse_form(b"multipart/form-data; boundary=b", b"--b\r\nX-Other: 1\r\n\r\nv\r\n--b--\r\n")


def test_parts_are_bounded() -> None:
    body, content_type = encode([(f"f{i}", "v") for i in range(MAX_PARTS + 1)], [])
    with pytest.raises(BadRequest, match="more than"):
        parse_form(content_type, body)
