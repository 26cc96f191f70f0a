"""Newline-delimited framing with a cap on the length of a line.

Both wires (agent and JSON-RPC) carry one JSON document per line. The decoder
keeps at most ``max_line`` bytes of an unfinished line: a longer line is
reported once as :class:`Oversized` and the rest of it is skipped, so a guest
that never sends a newline cannot grow our memory.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Union

from ..compat import SLOTS
from .limits import MAX_AGENT_LINE

MAX_LINE = MAX_AGENT_LINE
# How much of a dropped line :class:`Oversized` keeps: enough for a JSON-RPC
# reply's ``{"jsonrpc":"2.0","id":...`` so the caller of that one call hears of it.
HEAD_BYTES = 64


@dataclass(frozen=True, **SLOTS)
class Oversized:
    """A line longer than the cap was dropped (in part or whole).

    ``head`` holds its first bytes (at most :data:`HEAD_BYTES`); it is not
    part of equality: every oversized line is the same event.
    """

    head: bytes = field(default=b"", compare=False)


@dataclass(frozen=True, **SLOTS)
class Truncated:
    """The stream ended in the middle of a line; that partial line was dropped."""


class NeedData:
    """Sentinel: feed more bytes before asking again."""


NEED_DATA = NeedData()

LineEvent = Union[bytes, Oversized, Truncated, NeedData]


class LineDecoder:
    """Split a byte stream into lines of at most ``max_line`` bytes.

    Usage: ``receive_data(chunk)``, then call ``next_event()`` until it returns
    ``NEED_DATA``. ``receive_data(b"")`` signals end of stream.
    """

    def __init__(self, max_line: int = MAX_LINE) -> None:
        self.max_line = max_line
        self._buf = bytearray()
        self._skipping = False
        self._scan_from = 0
        self._eof = False

    def receive_data(self, data: bytes) -> None:
        """Add bytes from the stream; ``b""`` means the peer closed it."""
        if not data:
            self._eof = True
        self._buf += data

    def next_event(self) -> LineEvent:
        """Return the next complete line (without its newline) or an event."""
        idx = self._buf.find(b"\n", self._scan_from)
        if idx < 0:
            return self._no_newline()
        line = bytes(self._buf[:idx])
        del self._buf[: idx + 1]
        self._scan_from = 0
        if self._skipping:
            self._skipping = False
            return self.next_event()
        if len(line) > self.max_line:
            return Oversized(line[:HEAD_BYTES])
        return line.rstrip(b"\r")

    def _no_newline(self) -> LineEvent:
        if self._eof and self._buf:
            skipped = self._skipping
            self._buf.clear()
            self._skipping = False
            return NEED_DATA if skipped else Truncated()
        if len(self._buf) > self.max_line:
            head = bytes(self._buf[:HEAD_BYTES])
            self._buf.clear()
            self._scan_from = 0
            if not self._skipping:
                self._skipping = True
                return Oversized(head)
            return NEED_DATA
        self._scan_from = len(self._buf)
        return NEED_DATA

    @property
    def buffered(self) -> int:
        """Bytes held for an unfinished line (bounded by ``max_line`` + one chunk)."""
        return len(self._buf)
