"""The pool's HTTP/1.1 wire against a scripted raw upstream (runtime.upstream.http1 under h11pool):
request heads refuse a header that could split them, before any connection; answers split into
tiny reads parse whole; 1xx heads are skipped; 204, 304 and HEAD answers have no body; trailers are
read; and a connection is reused only after an answer read to its clean end on a keep-alive
connection (never after bytes past the end, `connection: close`, a body read to the connection's
end, HTTP/1.0, an oversized or broken answer). Broken answers are upstream errors, never hangs."""

from __future__ import annotations

import gc
from typing import Any

import h11
import pytest
import trio
import trio.lowlevel
from hypothesis import given
from hypothesis import strategies as st

from sidegate.runtime.errors import UpstreamError
from sidegate.runtime.upstream import h11pool
from sidegate.runtime.upstream.h11pool import H11Transport
from sidegate.runtime.upstream.http1 import Answer, request_head
from tests.support.scripted_upstream import Upstream, served

OK = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{}"
CHUNKED = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n"


async def _run(answers: list[tuple[bytes, str]], requests: list[str | dict[str, Any]]) -> tuple[Upstream, list[object]]:
    """Send each request in turn (a method name, or `Upstream.request`'s arguments) on one
    transport; each result is (status, headers, body) or the exception raised."""
    up = Upstream(answers)
    results: list[object] = []
    with trio.fail_after(10):
        async with served(up) as t:
            for r in requests:
                req = up.request(r) if isinstance(r, str) else up.request(**r)
                try:
                    answer = await t.send(req)
                    results.append((answer.status, answer.headers, answer.body))
                except (UpstreamError, h11.LocalProtocolError) as exc:
                    results.append(exc)
    return up, results


@pytest.mark.parametrize("headers", [
    (("x-a", "v\r\nx-injected: 1"),), (("x-a", "v\nx"),), (("x-a", "v\x00"),), (("x-a\r\nx-b", "v"),),
    (("x a", "v"),), (("", "v"),), (("x-a", " v"),), (("x-a", "v\x0b"),), (("x-a", "v\r"),),
])
async def test_a_header_that_could_split_the_head_is_refused_before_any_connection(
        headers: tuple[tuple[str, str], ...]) -> None:
    up = Upstream([])
    up.port = 9  # nothing listens there: a connection attempt would fail differently
    with pytest.raises(h11.LocalProtocolError):
        await H11Transport().send(up.request("POST", headers=headers))
    with pytest.raises(h11.LocalProtocolError):
        await H11Transport().send(up.request("GET", path="/v1/a b"))
    with pytest.raises(UnicodeEncodeError):
        await H11Transport().send(up.request("POST", headers=(("x-a", "é"),)))


async def test_valid_heads_go_out_as_written() -> None:
    headers = (("Authorization", "Bearer sk-1"), ("x-empty", ""), ("x-inner", "a \tb\x01"))
    up, results = await _run([(OK, ""), (OK, "")], [{"path": "/v1/x?a=1", "headers": headers}, "GET"])
    assert [r[2] for r in results] == [b"{}", b"{}"]  # type: ignore[index]
    post, get = (head for _, head in up.seen)
    port = post.split(b"127.0.0.1:")[1].split(b"\r\n")[0]
    assert post == (b"POST /v1/x?a=1 HTTP/1.1\r\nhost: 127.0.0.1:" + port +
                    b"\r\nAuthorization: Bearer sk-1\r\nx-empty: \r\nx-inner: a \tb\x01\r\ncontent-length: 2")
    assert get == b"GET /v1/chat/completions HTTP/1.1\r\nhost: 127.0.0.1:" + port + b"\r\ncontent-type: application/json"


@pytest.mark.parametrize("read", [1, 3, 65536])
async def test_answers_split_into_tiny_reads_parse_whole_and_reuse_the_connection(
        read: int, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(h11pool, "_RECV", read)  # the pool's reads: a byte, three, or what is there
    chunked = CHUNKED + b"3\r\nabc\r\n2;ext=1\r\nde\r\n0\r\nx-trailer: 1\r\n\r\n"
    up, results = await _run([(OK, "tiny"), (chunked, "tiny"), (OK, "")], ["POST", "POST", "POST"])
    assert [r[2] for r in results] == [b"{}", b"abcde", b"{}"]  # type: ignore[index]
    assert up.on == [1, 1, 1]


async def test_bytes_after_an_answer_are_never_taken_for_the_next() -> None:
    junk = OK + b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nforge"
    up, results = await _run([(junk, ""), (OK, ""), (CHUNKED + b"0\r\n\r\nX", ""), (OK, "")], ["POST"] * 4)
    assert [r[2] for r in results] == [b"{}", b"{}", b"", b"{}"]  # type: ignore[index]
    assert up.on == [1, 2, 2, 3], "a new connection after each answer with bytes past its end"


async def test_informational_heads_are_skipped_and_bodiless_answers_reuse() -> None:
    early = (b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nlink: </a>\r\n\r\n" + OK)
    answers = [(early, ""), (b"HTTP/1.1 204 No Content\r\ncontent-length: 7\r\n\r\n", ""),
               (b"HTTP/1.1 304 Not Modified\r\ncontent-length: 7\r\n\r\n", ""),
               (b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\n", ""), (OK, "")]
    up, results = await _run(answers, ["POST", "GET", "GET", "HEAD", "GET"])
    assert [(r[0], r[2]) for r in results] == [(200, b"{}"), (204, b""), (304, b""), (200, b""), (200, b"{}")]  # type: ignore[index]
    assert "link" not in results[0][1]  # type: ignore[index]
    assert results[3][1]["content-length"] == "10"  # type: ignore[index]
    assert up.on == [1, 1, 1, 1, 1]
    assert up.seen[3][1].startswith(b"HEAD ")


async def test_a_head_answer_followed_by_a_body_is_not_reused() -> None:
    up, results = await _run([(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok", ""), (OK, "")], ["HEAD", "GET"])
    assert [r[2] for r in results] == [b"", b"{}"]  # type: ignore[index]
    assert up.on == [1, 2]


async def test_connections_that_must_not_be_reused_are_not() -> None:
    answers = [(b"HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 2\r\n\r\n{}", ""),
               (b"HTTP/1.0 200 OK\r\ncontent-length: 2\r\n\r\n{}", ""),
               (b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\n\r\nto the end", "close"),
               (OK, "")]
    up, results = await _run(answers, ["POST"] * 4)
    assert [r[2] for r in results] == [b"{}", b"{}", b"to the end", b"{}"]  # type: ignore[index]
    assert up.on == [1, 2, 3, 4]


@pytest.mark.parametrize(("answer", "words"), [
    (b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nabc", "closed the connection mid-answer"),
    (CHUNKED + b"5\r\nab", "closed the connection mid-answer"),
    (b"HTTP/1.1 200 OK\r\ncontent-len", "closed the connection before answering"),
    (b"", "closed the connection before answering"),
    (b"HTTP/1.1 200 OK\ncontent-length: 2\n\nok", "malformed answer"),
    (b"HTTP/1.1 200 OK\r\nx: " + b"y" * 20_000, "head is too long"),
    (b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\ncontent-length: 3\r\n\r\nok", "malformed answer"),
    (b"HTTP/1.1 200 OK\r\ntransfer-encoding: gzip\r\n\r\nabc", "only the chunked transfer coding"),
    (b"HTTP/1.1 101 Switching Protocols\r\nupgrade: x\r\n\r\n", "switched protocols"),
    (b"HTTP/1.1 200 OK\r\ncontent-length: 2000\r\n\r\n" + b"x" * 2000, "upstream_answer_too_large"),
])
async def test_broken_answers_are_upstream_errors_and_drop_the_connection(answer: bytes, words: str) -> None:
    up = Upstream([(answer, "close"), (OK, "")])
    with trio.fail_after(10):
        async with served(up) as t:
            with pytest.raises(UpstreamError) as info:
                await t.send(up.request(max_answer=1000))
            assert (await t.send(up.request())).body == b"{}"
    assert words in info.value.message or words == info.value.code
    assert info.value.code in ("upstream_connection_broken", "upstream_answer_too_large")
    assert up.on == [1, 2]


async def test_a_stream_left_early_or_cancelled_closes_its_connection() -> None:
    events = b"".join(b"%x\r\n%b\r\n" % (len(e), e) for e in [b"data: 1\n\n", b"data: 2\n\n"])
    up = Upstream([(CHUNKED + events + b"0\r\n\r\n", ""), (OK, "")])
    with trio.fail_after(10):
        async with served(up) as t:
            async with t.stream(up.request()) as s:
                async for piece in s.iter_bytes():
                    assert piece.startswith(b"data: 1")
                    break
            assert (await t.send(up.request())).body == b"{}"
    assert up.on == [1, 2]


_TEXT = st.text(alphabet="ab-:; \t\r\n\x00\x01\x0b\x7fé", max_size=6)


@given(st.lists(st.tuples(_TEXT, _TEXT), max_size=4))
def test_request_heads_refuse_and_write_exactly_what_h11_did(headers: list[tuple[str, str]]) -> None:
    """The head written without h11 is h11's, byte for byte, and refused where h11 refused it
    (with the same exception type)."""
    headers = [("host", "up.example"), *headers]
    try:
        expected: bytes | type[Exception] = h11.Connection(h11.CLIENT).send(
            h11.Request(method="POST", target="/v1/x", headers=headers)) or b""
    except (h11.LocalProtocolError, UnicodeEncodeError) as exc:
        expected = type(exc)
    try:
        got: bytes | type[Exception] = request_head("POST", "/v1/x", headers)
    except (h11.LocalProtocolError, UnicodeEncodeError) as exc:
        got = type(exc)
    assert got == expected


@given(st.binary(max_size=2000), st.lists(st.integers(0, 5000), max_size=12), st.booleans())
def test_any_split_of_a_whole_answer_parses_the_same(body: bytes, cuts: list[int], early: bool) -> None:
    whole = ((b"HTTP/1.1 103 Early Hints\r\nlink: </a>\r\n\r\n" if early else b"") +
             b"HTTP/1.1 200 OK\r\nContent-Type:  application/json \t\r\nContent-Length: %d\r\n\r\n%b" % (len(body), body))
    answer, got, last = Answer(), b"", 0
    for cut in [*sorted(c % (len(whole) + 1) for c in cuts), len(whole)]:
        answer.feed(whole[last:cut])
        got += answer.take()
        last = cut
    assert got == body and answer.done and not answer.extra and answer.keep_alive and answer.status == 200
    assert answer.headers == [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]


_FIELDS = st.sampled_from([(b"Content-Type", b" application/json \t"), (b"X-A", b"caf\xc3\xa9 au lait"),
                           (b"Connection", b"close"), (b"Connection", b"keep-alive"), (b"X-Empty", b""),
                           (b"Set-Cookie", b"a=1; Path=/"), (b"Link", b"</a>; rel=preload")])


@given(st.sampled_from([200, 201, 204, 304, 404, 500]), st.sampled_from([b"", b"HTTP/1.1 100 Continue\r\n\r\n",
                                                                      b"HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n"]),
       st.sampled_from([b"1.1", b"1.0"]), st.lists(_FIELDS, max_size=4), st.sampled_from(["length", "chunked", "eof"]),
       st.lists(st.binary(min_size=1, max_size=40), max_size=4), st.sampled_from([b"", b"x-trailer: 1\r\n"]),
       st.sampled_from(["POST", "HEAD"]), st.lists(st.integers(0, 1000), max_size=6))
def test_answers_parse_as_h11_parsed_them(status: int, early: bytes, version: bytes, fields: list[tuple[bytes, bytes]],
                                          framing: str, pieces: list[bytes], trailers: bytes, method: str,
                                          cuts: list[int]) -> None:
    """Against h11 as the reference: the same status, headers (names lower-cased, values trimmed),
    body, end of the answer, and keep-alive, over any split of the bytes."""
    body = b"".join(pieces)
    if framing == "length":
        fields = [*fields, (b"Content-Length", b"%d" % len(body))]
        wire = body
    elif framing == "chunked":
        fields = [*fields, (b"Transfer-Encoding", b"chunked")]
        wire = b"".join(b"%x\r\n%b\r\n" % (len(p), p) for p in pieces) + b"0\r\n" + trailers + b"\r\n"
    else:
        wire = body
    if method == "HEAD" or status in (204, 304):
        body = wire = b""
    head = b"HTTP/%b %d Whatever\r\n" % (version, status) + b"".join(b"%b: %b\r\n" % f for f in fields) + b"\r\n"
    whole = early + head + wire
    splits = [*sorted(c % (len(whole) + 1) for c in cuts), len(whole)]

    ref = h11.Connection(h11.CLIENT)
    ref.send(h11.Request(method=method, target="/", headers=[("host", "x")]))
    ref.send(h11.EndOfMessage())
    answer, last = Answer(head_only=method == "HEAD"), 0
    ref_head: h11.Response | None = None
    ref_body, got, ref_done = b"", b"", False
    for cut in splits:
        if cut == last:
            continue  # (h11 takes b"" for the connection's end)
        ref.receive_data(whole[last:cut])
        answer.feed(whole[last:cut])
        got += answer.take()
        last = cut
    if framing == "eof":
        ref.receive_data(b"")
        answer.end_of_data()
    while not ref_done:
        event = ref.next_event()
        if type(event) is h11.Response:
            ref_head = event
        elif type(event) is h11.Data:
            ref_body += event.data
        elif type(event) is h11.EndOfMessage:
            ref_done = True
        else:
            assert type(event) is h11.InformationalResponse, event
    assert ref_head is not None
    assert answer.status == ref_head.status_code and answer.headers == list(ref_head.headers)
    assert got == ref_body and answer.done and not answer.extra
    try:
        ref.start_next_cycle()  # what the old pool did to reuse a connection
        reusable = True
    except h11.LocalProtocolError:
        reusable = False
    to_the_end = framing == "eof" and method != "HEAD" and status not in (204, 304)
    assert answer.keep_alive == (reusable and not to_the_end), "a body read to the connection's end is its last"


def _answers_alive() -> int:
    return sum(1 for o in gc.get_objects() if type(o) is Answer)


def test_an_answer_read_to_its_end_is_freed_without_the_cycle_collector() -> None:
    """Its parser held the answer's bound callbacks: a cycle per upstream answer that only a full
    collection freed (1,000 streams left 1,000 for the next one to walk, a pause of every stream)."""
    whole = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nhi"
    chunked = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n2\r\nhi\r\n0\r\n\r\n"
    gc.collect()
    gc.disable()
    try:
        before = _answers_alive()
        for wire in (whole, chunked) * 20:
            answer = Answer()
            answer.feed(wire)
            assert answer.done and answer.take() == b"hi"
            answer.feed(b"junk")
            assert answer.extra, "a byte after the end is not the next answer's"
        abandoned = Answer()
        abandoned.feed(chunked[:50])
        abandoned.release()  # a stream left early (the pool lets its answer go)
        del answer, abandoned
        assert _answers_alive() == before
    finally:
        gc.enable()
