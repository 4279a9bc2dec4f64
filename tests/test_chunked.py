"""Chunked upstream bodies as the pool reads them (runtime.upstream.http1, httptools): any split of a
valid body gives its data, extensions and trailers are read, bad framing is refused, bytes after the
end are noticed; through the pool: a chunked answer leaves its connection reusable, one with bytes
after its end or bad framing does not, and bad framing is an upstream error, never a hang."""

from __future__ import annotations

import pytest
import trio
from hypothesis import given
from hypothesis import strategies as st

from sidegate.runtime.errors import UpstreamError
from sidegate.runtime.upstream.http1 import Answer, MalformedAnswer
from tests.support.scripted_upstream import Upstream, served

HEAD = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"


def _encode(pieces: list[bytes], ext: bytes = b"", trailers: bytes = b"") -> bytes:
    return b"".join(b"%x%b\r\n%b\r\n" % (len(p), ext, p) for p in pieces if p) + b"0\r\n" + trailers + b"\r\n"


def _decode(body: bytes, cuts: list[int]) -> tuple[bytes, Answer]:
    answer = Answer()
    out, last = b"", 0
    whole = HEAD + body
    for cut in [*sorted(c % (len(whole) + 1) for c in cuts), len(whole)]:
        answer.feed(whole[last:cut])
        out += answer.take()
        last = cut
    return out, answer


@given(st.lists(st.binary(min_size=1, max_size=300), max_size=12), st.lists(st.integers(0, 10_000), max_size=20),
       st.sampled_from([b"", b";name=value", b" ;x", b"\t;x=\"q q\""]), st.sampled_from([b"", b"x-trailer: 1\r\n"]))
def test_any_split_of_a_valid_body_gives_its_data(pieces: list[bytes], cuts: list[int], ext: bytes,
                                                  trailers: bytes) -> None:
    data, answer = _decode(_encode(pieces, ext, trailers), cuts)
    assert data == b"".join(pieces) and answer.done and not answer.extra
    assert answer.chunked and answer.keep_alive and answer.status == 200


def test_bytes_after_the_end_are_noticed_and_not_parsed() -> None:
    answer = Answer()
    answer.feed(HEAD + _encode([b"hello"]) + b"HTTP/1.1 200 OK\r\n")
    assert answer.take() == b"hello" and answer.done and answer.extra
    late = Answer()
    late.feed(HEAD + _encode([b"hello"]))
    late.feed(b"junk")
    assert late.take() == b"hello" and late.done and late.extra


@pytest.mark.parametrize("body", [
    b"zz\r\nhello\r\n0\r\n\r\n",  # not hex
    b"5\r\nhelloXX0\r\n\r\n",  # no CRLF after the data
    b"-5\r\nhello\r\n",  # signed
    b"12345678901234567\r\n",  # more hex digits than any real size
    b"1" * 20_000,  # a size line that never ends
    b"5;" + b"x" * 100_000,  # a chunk extension that never ends
    b"0\r\n" + b"x: y\r\n" * 20_000,  # endless trailers
    b"0\r\nx: " + b"y" * 100_000,  # a trailer line that never ends
])
def test_bad_framing_is_refused(body: bytes) -> None:
    answer = Answer()
    with pytest.raises(MalformedAnswer):
        answer.feed(HEAD)
        for i in range(0, len(body), 4096):
            answer.feed(body[i:i + 4096])


@pytest.mark.parametrize("coding", [b"gzip", b"gzip, chunked", b"chunked, chunked", b"chunked\r\ntransfer-encoding: chunked",
                                    b"chunked,", b", chunked", b"chunked ", b"chunked\t"])
def test_a_transfer_coding_other_than_chunked_is_refused(coding: bytes) -> None:
    """Only `chunked`, alone, in one header: llhttp frames `chunked ` or `chunked,` as a body to the
    connection's end, so the pool never decides a framing the parser does not share."""
    with pytest.raises(MalformedAnswer, match="only the chunked transfer coding"):
        Answer().feed(b"HTTP/1.1 200 OK\r\ntransfer-encoding: %b\r\n\r\n2\r\nok\r\n0\r\n\r\n" % coding)


@pytest.mark.parametrize("coding", [b"chunked", b"Chunked", b"  CHUNKED"])
def test_chunked_in_any_case_is_chunked(coding: bytes) -> None:
    answer = Answer()
    answer.feed(b"HTTP/1.1 200 OK\r\ntransfer-encoding: %b\r\n\r\n2\r\nok\r\n0\r\n\r\n" % coding)
    assert answer.chunked and answer.done and answer.take() == b"ok"


async def test_through_the_pool_clean_bodies_reuse_the_connection_and_others_do_not() -> None:
    events = [b"data: {\"n\": %d}\n\n" % i for i in range(3)] + [b"data: [DONE]\n\n"]
    clean = HEAD + _encode(events)
    answers = [clean, clean, clean + b"junk after the end", clean, HEAD + b"5\r\nhelloXX"]
    up = Upstream([(answer, "") for answer in answers])
    with trio.fail_after(10):
        async with served(up) as t:
            bodies = []
            for _ in range(4):
                async with t.stream(up.request()) as s:
                    bodies.append(await s.read())
            with pytest.raises(UpstreamError) as info:
                async with t.stream(up.request()) as s:
                    await s.read()
    assert bodies == [b"".join(events)] * 4
    assert up.on == [1, 1, 1, 2, 2], "reused while clean; a new connection after bytes past an answer's end"
    assert info.value.code == "upstream_connection_broken" and "malformed chunked body" in info.value.message
