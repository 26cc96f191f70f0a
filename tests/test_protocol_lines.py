"""The line decoder: byte-at-a-time feeding, the 1 MiB cap, and fuzzing."""

from __future__ import annotations

import itertools

from hypothesis import given
from hypothesis import strategies as st

from diskname.protocol.lines import NEED_DATA, LineDecoder, LineEvent, Oversized, Truncated


def drain(decoder: LineDecoder) -> list[LineEvent]:
    out: list[LineEvent] = []
    while (event := decoder.next_event()) is not NEED_DATA:
        out.append(event)
    return out


def feed_chunks(chunks: list[bytes], max_line: int = 16) -> list[LineEvent]:
    decoder = LineDecoder(max_line)
    events: list[LineEvent] = []
    for chunk in chunks:
        decoder.receive_data(chunk)
        events += drain(decoder)
        assert decoder.buffered <= max_line + max(len(chunk), 1) + 1
    decoder.receive_data(b"")
    return events + drain(decoder)


def test_byte_at_a_time_gives_the_same_lines() -> None:
    data = b'{"a": 1}\n{"b": 2}\r\n\n'
    assert feed_chunks([bytes([b]) for b in data], 64) == [b'{"a": 1}', b'{"b": 2}', b""]


def test_oversized_line_is_reported_once_and_skipped() -> None:
    events = feed_chunks([b"x" * 10, b"y" * 10, b"z" * 30, b"\nok\n"], max_line=16)
    assert events == [Oversized(), b"ok"]


def test_oversized_line_in_one_chunk() -> None:
    assert feed_chunks([b"x" * 40 + b"\nok\n"], max_line=16) == [Oversized(), b"ok"]


def test_line_that_never_ends_keeps_memory_bounded() -> None:
    decoder = LineDecoder(1024)
    for _ in range(1000):
        decoder.receive_data(b"a" * 4096)
        drain(decoder)
        assert decoder.buffered <= 1024 + 4096
    decoder.receive_data(b"\nfine\n")
    assert drain(decoder) == [b"fine"]


def test_partial_line_at_end_of_stream_is_truncated() -> None:
    assert feed_chunks([b"one\ntw"], 64) == [b"one", Truncated()]


def split_at(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    edges = [0, *points, len(data)]
    # An empty chunk means end of stream, so only non-empty pieces are fed.
    return [data[a:b] for a, b in itertools.pairwise(edges) if b > a]


@given(st.binary(max_size=400), st.lists(st.integers(0, 1000), max_size=20))
def test_chunking_never_changes_the_result(data: bytes, cuts: list[int]) -> None:
    assert feed_chunks(split_at(data, cuts)) == feed_chunks([data])


@given(st.lists(st.binary(max_size=40).filter(lambda b: b"\n" not in b), max_size=20))
def test_short_lines_round_trip(lines: list[bytes]) -> None:
    data = b"".join(line + b"\n" for line in lines)
    expected = [Oversized() if len(line) > 16 else line.rstrip(b"\r") for line in lines]
    assert feed_chunks([data]) == expected
