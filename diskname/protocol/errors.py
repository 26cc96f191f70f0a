"""One small error family for every wire protocol diskname speaks."""

from __future__ import annotations


class ProtocolError(Exception):
    """Something on the wire is wrong.

    ``reason`` is a short, stable slug (``invalid_json``, ``oversized``...) used
    as a metric label, so callers count by class and reason, never by message.
    """

    def __init__(self, message: str, *, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


class RemoteProtocolError(ProtocolError):
    """The peer sent something we cannot accept (drop it and count it)."""


class LocalProtocolError(ProtocolError):
    """We were asked to send something the protocol cannot express."""


def remote(reason: str, message: str) -> RemoteProtocolError:
    """The peer's mistake, counted under ``reason`` (every parser's one helper)."""
    return RemoteProtocolError(message, reason=reason)
