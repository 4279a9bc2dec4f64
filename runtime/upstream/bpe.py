"""A lean byte-pair token counter: tiktoken's algorithm and counts, in a few MB instead of ~70.

tiktoken's encoding of `o200k_base` costs ~50 MB resident and ~72 MB at its peak while loading (a
Python dict of 200,000 byte strings handed to a Rust core that copies it into two hash maps), which
alone would take a sidecar worker past 100 MB the first time a client cut a stream (metered
locally). Counting needs neither the decoder nor the byte strings as objects: here the ranks are
one blob of token bytes in rank order, an offsets array, and an open-addressing table of ranks
keyed by the bytes' hash, ~5 MB in all. A piece of text that is a whole token (most words) costs
one lookup; other pieces are merged exactly as tiktoken's `byte_pair_merge` does (the adjacent pair
of lowest rank first, leftmost on ties), so the counts are tiktoken's (checked against it in
`tests/test_bpe.py`). Pure Python: ~1-2 us a token; counts off the event loop when they are long.
"""

from __future__ import annotations

import base64
import heapq
from array import array
from collections.abc import Iterable

__all__ = ["Counter"]

_NONE = -1
_MAX = 1 << 62
_CACHE = 8192
"""Merged pieces whose counts are kept (~1 MB at most)."""
_CACHED_PIECE = 48
"""Bytes of a piece at most for its count to be kept (words repeat; long runs rarely do)."""


class Counter:
    """Counts the tokens of text under one BPE vocabulary and pre-tokenising pattern."""

    __slots__ = ("_blob", "_cache", "_mask", "_offsets", "_pattern", "_table")

    def __init__(self, lines: Iterable[bytes], pattern: str) -> None:
        """`lines`: the `.tiktoken` file's lines (`<base64 token> <rank>`), in rank order 0..n-1
        (read one at a time: no token exists as an object of its own after its line)."""
        blob = bytearray()
        offsets = array("I", [0])
        for line in lines:
            if not line.strip():
                continue
            token, rank = line.split()
            if int(rank) != len(offsets) - 1:
                raise ValueError(f"the vocabulary's ranks are not 0..n-1 in order (rank {int(rank)})")
            blob += base64.b64decode(token)
            offsets.append(len(blob))
        n = len(offsets) - 1
        self._blob = bytes(blob)
        del blob
        self._offsets = offsets
        size = 1 << max(4, (n * 5 // 2).bit_length())
        mask = self._mask = size - 1
        table = array("i", [_NONE]) * size
        whole = self._blob
        for r in range(n):
            i = hash(whole[offsets[r]:offsets[r + 1]]) & mask
            while table[i] != _NONE:
                i = (i + 1) & mask
            table[i] = r
        self._table = table
        import regex  # (~1.4 MB: imported with the first vocabulary, not by every sidecar)

        self._pattern = regex.compile(pattern)
        self._cache: dict[bytes, int] = {}
        """Counts of recently merged pieces (text repeats its words), at most `_CACHE` of them."""

    @property
    def size(self) -> int:
        """Tokens in the vocabulary."""
        return len(self._offsets) - 1

    def rank(self, piece: bytes) -> int | None:
        """The rank of `piece` when it is one token."""
        table, blob, offsets, mask = self._table, self._blob, self._offsets, self._mask
        i = hash(piece) & mask
        while (r := table[i]) != _NONE:
            if blob[offsets[r]:offsets[r + 1]] == piece:
                return r
            i = (i + 1) & mask
        return None

    def count(self, text: str) -> int:
        """Tokens of `text` (special-token markers in it count as ordinary text)."""
        table, blob, offsets, mask = self._table, self._blob, self._offsets, self._mask
        total = 0
        for match in self._pattern.finditer(text):
            piece = match.group().encode("utf-8")
            i = hash(piece) & mask
            while (r := table[i]) != _NONE:  # the common case, one token: `rank` inlined
                if blob[offsets[r]:offsets[r + 1]] == piece:
                    total += 1
                    break
                i = (i + 1) & mask
            else:
                total += self._merged(piece)
        return total

    def _merged(self, piece: bytes) -> int:
        """Tokens of a piece that is not one token, merged in tiktoken's order: the adjacent pair of
        lowest rank first, leftmost on ties."""
        cache = self._cache
        known = cache.get(piece)
        if known is not None:
            return known
        tokens = self._heap_merge(piece)
        if len(piece) <= _CACHED_PIECE:
            if len(cache) >= _CACHE:
                cache.clear()
            cache[piece] = tokens
        return tokens

    def _heap_merge(self, piece: bytes) -> int:
        """The merges kept with a heap and a linked list of parts, so a long piece (a hostile run of
        letters) costs O(n log n), not the O(n^2) of rescanning every pair after each merge."""
        n = len(piece)
        rank = self.rank
        nxt = list(range(1, n + 2))  # nxt[p]: where the part after the one starting at p starts
        prv = list(range(-1, n))
        current = [_MAX] * (n + 1)  # current[p]: rank of part p merged with the next (or _MAX)
        heap: list[tuple[int, int]] = []
        for p in range(n - 1):
            r = rank(piece[p:p + 2])
            if r is not None:
                current[p] = r
                heap.append((r, p))
        heapq.heapify(heap)
        parts = n
        while heap:
            r, p = heapq.heappop(heap)
            if current[p] != r:
                continue  # stale: the part merged away, or its pair changed since
            q = nxt[p]
            after = nxt[q]
            nxt[p], prv[after] = after, p
            current[q] = _MAX
            parts -= 1
            for at in (p, prv[p]):
                if at < 0:
                    continue
                end = nxt[nxt[at]] if nxt[at] < n else n + 1
                pair = rank(piece[at:end]) if end <= n else None
                current[at] = _MAX if pair is None else pair
                if pair is not None:
                    heapq.heappush(heap, (pair, at))
        return parts
