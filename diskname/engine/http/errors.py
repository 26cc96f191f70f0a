"""Where the engine's errors become HTTP statuses: a table per edge, looked up by class.

Domain code raises :mod:`..errors` and knows no status. Each edge keeps its own
table from error class to status and headers, looked up along the class's MRO
(:class:`ByClass`): a subclass added later is answered as its parent until it
gets a line of its own. The JSON API's table is :data:`REST`; oVirt's XML API
keeps :data:`..ovirt.faults.FAULTS`, oVirt's SSO its OAuth table
(:mod:`..ovirt.sso`). The middleware (:mod:`.app`) answers in the dialect of the path;
:func:`error_response` is the JSON API's.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from aiohttp import web

from ..errors import (
    Conflict,
    DatabaseRefused,
    EngineError,
    Forbidden,
    HostCallFailed,
    HostRefused,
    HostStateNotWritten,
    HostStateRefused,
    HostTimeout,
    Invalid,
    MissingReference,
    NotFound,
    TooManyRequests,
    Unauthenticated,
    Unavailable,
    UnsupportedMediaType,
)
from .responses import json_response

T = TypeVar("T")
Headers = Callable[[Any], dict[str, str]]


class ByClass(Generic[T]):
    """A table keyed by exception class; an exception finds the entry of its
    nearest class along its MRO."""

    def __init__(self, entries: Mapping[type[BaseException], T]) -> None:
        self._entries = dict(entries)

    def __getitem__(self, exc: BaseException) -> T:
        for cls in type(exc).__mro__:
            if cls in self._entries:
                return self._entries[cls]
        raise KeyError(type(exc).__name__)

    def extended(self, entries: Mapping[type[BaseException], T]) -> ByClass[T]:
        """This table with ``entries`` added (or answered otherwise)."""
        return ByClass({**self._entries, **entries})


@dataclass(frozen=True, slots=True)
class Answer:
    """The status an error is answered with, and the headers that status needs."""

    status: int
    headers: Headers | None = None

    def headers_for(self, exc: EngineError) -> dict[str, str]:
        return {} if self.headers is None else self.headers(exc)


def www_authenticate(_: Unauthenticated) -> dict[str, str]:
    """RFC 9110: a 401 names its scheme."""
    return {"WWW-Authenticate": 'Bearer realm="diskname"'}


def retry_after(exc: TooManyRequests) -> dict[str, str]:
    if exc.retry_after is None:
        return {}
    return {"Retry-After": str(max(1, math.ceil(exc.retry_after)))}


# The JSON API (SPEC §7).
REST: ByClass[Answer] = ByClass(
    {
        EngineError: Answer(500),
        Invalid: Answer(400),
        Unauthenticated: Answer(401, www_authenticate),
        Forbidden: Answer(403),
        NotFound: Answer(404),
        Conflict: Answer(409),
        UnsupportedMediaType: Answer(415),
        MissingReference: Answer(422),
        TooManyRequests: Answer(429, retry_after),
        DatabaseRefused: Answer(500),
        HostRefused: Answer(502),  # the hypervisor failed: the upstream's fault
        HostStateRefused: Answer(409),  # about the state of things, as a Conflict
        # RFC 4918's "Insufficient Storage": the host cannot keep the change, so
        # it refused and undid it; retrying once it has room works.
        HostStateNotWritten: Answer(507),
        HostCallFailed: Answer(502),
        Unavailable: Answer(503),
        HostTimeout: Answer(504),
    }
)


def error_response(
    status: int, message: str, headers: dict[str, str] | None = None
) -> web.Response:
    """The JSON API's error: ``{"error": {"code", "message"}}`` (SPEC §7)."""
    response = json_response({"error": {"code": status, "message": message}}, status)
    response.headers.update(headers or {})
    return response
