"""`runtime.netio.LeanStream`: trio's own conformance checks for a half-closeable stream, and what it
does differently from `trio.SocketStream` (fewer scheduler trips) kept honest: cancellation,
fairness, parking after a short read, errors."""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Iterator

import pytest
import trio
import trio.testing

from sidegate.runtime.netio import LeanStream, close_now, lean_stream


def _tcp_pair() -> tuple[socket.socket, socket.socket]:
    with socket.socket() as listening:
        listening.bind(("127.0.0.1", 0))
        listening.listen(1)
        a = socket.create_connection(listening.getsockname())
        b, _ = listening.accept()
    return a, b


async def _pair() -> tuple[LeanStream, LeanStream]:
    a, b = _tcp_pair()
    return LeanStream(a), LeanStream(b)


async def _clogged_pair() -> tuple[LeanStream, LeanStream]:
    """A pair whose send buffers are already full both ways (trio's checks of a blocked send_all,
    for each direction)."""
    left, right = await _pair()
    for a, b in ((left, right), (right, left)):
        a.raw.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1)
        b.raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1)
        with contextlib.suppress(BlockingIOError):
            while True:
                a.raw.send(b"x" * 65536)
    return left, right


@contextlib.contextmanager
def _cancel_point() -> Iterator[None]:
    """trio's `assert_checkpoints` less its schedule point: the block was a cancellation point (or
    raised). A LeanStream's read that finds data and a write that fits deliberately do not yield."""
    task = trio.lowlevel.current_task()
    before = task._cancel_points
    yield
    assert task._cancel_points > before, "the block was no cancellation point"


async def test_it_passes_trios_half_closeable_stream_checks(monkeypatch: pytest.MonkeyPatch) -> None:
    """trio's own conformance checks for any half-closeable stream, with one property relaxed: each
    call must still be a cancellation point, but need not yield to the scheduler."""
    monkeypatch.setattr(trio.testing._check_streams, "assert_checkpoints", _cancel_point)
    await trio.testing.check_half_closeable_stream(_pair, _clogged_pair)


async def test_trios_checks_see_the_schedule_point_it_drops() -> None:
    """Unpatched, trio's checks fail on exactly the relaxed property."""
    with pytest.raises(BaseException) as raised:  # an AssertionError, in a group from the checks' nursery
        await trio.testing.check_half_closeable_stream(_pair, _clogged_pair)
    error = raised.value
    while isinstance(error, BaseExceptionGroup):
        error = error.exceptions[0]
    assert isinstance(error, AssertionError) and "did not yield" in str(error)


async def test_a_send_larger_than_the_socket_buffer_arrives_whole() -> None:
    left, right = await _pair()
    data = bytes(range(256)) * 40_000  # ~10 MB: many partial sends, each after the socket drains
    got = bytearray()

    async def read() -> None:
        while len(got) < len(data):
            got.extend(await right.receive_some(65536))

    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(read)
            await left.send_all(data)
    assert bytes(got) == data


async def test_a_cancelled_task_reads_and_writes_nothing() -> None:
    left, right = await _pair()
    await left.send_all(b"queued")
    with trio.CancelScope() as scope:
        scope.cancel()
        with pytest.raises(trio.Cancelled):
            await right.receive_some()
        with pytest.raises(trio.Cancelled):
            await right.send_all(b"never")
    assert await right.receive_some() == b"queued", "the cancelled read took nothing"
    await right.send_eof()
    assert await left.receive_some() == b"", "the cancelled write sent nothing"


async def test_a_reader_that_always_finds_data_still_lets_other_tasks_run() -> None:
    """A read that finds data at once does not yield, but every 17th read in a row does: a task fed
    faster than it relays cannot hold the loop."""
    left, right = await _pair()
    await left.send_all(b"y" * 4096)
    task = trio.lowlevel.current_task()
    before = task._schedule_points
    for _ in range(170):
        assert await right.receive_some(1) == b"y"  # each read fills its 1-byte buffer: more is there
    assert task._schedule_points - before == 10
    await left.aclose()
    await right.aclose()


async def test_after_a_short_read_the_next_read_waits_for_data() -> None:
    left, right = await _pair()
    await left.send_all(b"first")
    assert await right.receive_some() == b"first"  # short: the kernel's buffer is empty now

    async def later() -> None:
        await trio.sleep(0.01)
        await left.send_all(b"second")

    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(later)
            assert await right.receive_some() == b"second"


async def test_a_reset_connection_is_a_broken_resource() -> None:
    a, b = _tcp_pair()
    ours = LeanStream(a)
    b.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    b.close()  # linger 0: the peer resets the connection
    with trio.fail_after(5), pytest.raises(trio.BrokenResourceError):
        while True:
            if not await ours.receive_some():
                await ours.send_all(b"x")
    await ours.aclose()


async def test_a_closed_stream_refuses_reads_and_writes() -> None:
    left, right = await _pair()
    await left.aclose()
    with pytest.raises(trio.ClosedResourceError):
        await left.receive_some()
    with pytest.raises(trio.ClosedResourceError):
        await left.send_all(b"x")
    assert await right.receive_some() == b""
    await right.aclose()


async def test_a_new_connection_has_no_nagle_delay() -> None:
    with socket.socket() as listening:
        listening.bind(("127.0.0.1", 0))
        listening.listen(1)
        stream = await lean_stream(socket.AF_INET, listening.getsockname())
        assert stream.socket.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 1
        assert stream.socket.getpeername() == listening.getsockname()
        await stream.aclose()


async def test_two_tasks_reading_at_once_is_an_error() -> None:
    left, right = await _pair()
    with pytest.raises(BaseExceptionGroup) as raised:  # the second reader's error ends the nursery
        async with trio.open_nursery() as nursery:
            nursery.start_soon(right.receive_some)
            await trio.testing.wait_all_tasks_blocked()
            await right.receive_some()
    assert raised.value.subgroup(trio.BusyResourceError) is not None
    await left.aclose()
    await right.aclose()


async def test_close_now_closes_at_once_even_in_a_cancelled_scope() -> None:
    left, right = await _pair()
    with trio.CancelScope() as scope:
        scope.cancel()
        await close_now(left)  # no Cancelled: nothing to checkpoint
    assert left.raw.fileno() == -1
    assert await right.receive_some() == b"", "the peer sees the connection end"
    a, b = trio.testing.memory_stream_pair()
    await close_now(a)  # any other stream: trio.aclose_forcefully
    with pytest.raises(trio.ClosedResourceError):
        await a.send_all(b"x")
    await right.aclose()
    await b.aclose()
