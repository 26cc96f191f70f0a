"""The engine's one error family. It knows nothing of HTTP.

Domain code (actions, store, monitors, auth) raises these; each edge turns them
into its own answer once, through its own table looked up by class (the JSON
API: :mod:`.http.errors`; oVirt's XML API: :mod:`.ovirt.faults`; oVirt's SSO:
:mod:`.ovirt.sso`). Where two failures must be answered differently they are
two classes, never one class with a code. Library errors (asyncpg, the
JSON-RPC client) are translated into this family where they are caught
(:mod:`.db.pool`, :meth:`.hosts.monitor.HostMonitor.call`), not passed through.
"""

from __future__ import annotations


class EngineError(Exception):
    """Something the engine could not do; ``str(exc)`` is the message for users."""


class Invalid(EngineError):
    """The request itself is wrong (a field, a value, a path parameter)."""


class Unauthenticated(EngineError):
    """No credentials, or credentials that do not check out."""


class Forbidden(EngineError):
    """The caller is known but its role may not do this."""


class NotFound(EngineError):
    """The resource the request is about (named in its path) does not exist."""


class MissingReference(EngineError):
    """The request is well formed but refers to something that does not exist
    (a ``disk.id`` or ``host.id`` in the body): the resource the request is
    about was found, the one it points at was not."""


class Conflict(EngineError):
    """The change would break a rule of the current state (a name taken, a disk in use)."""


class HostNotConnected(Conflict):
    """The VM's host is registered but not connected: a state problem, not a server fault."""


class UnsupportedMediaType(EngineError):
    """A write whose body is of a type this route does not take."""


class TooManyRequests(EngineError):
    """Too many tries (failed sign-ins); the next may succeed in ``retry_after`` seconds."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class HostRefused(EngineError):
    """The host (or its hypervisor) refused the call; the message is the host's own.

    ``code`` is the JSON-RPC error code, for callers that treat some refusals
    (an unknown device on unplug) as success. The base class is the hypervisor
    failing to do its job; refusals of another kind are subclasses
    (:class:`HostStateRefused`), so that each edge's table tells them apart by
    class. :meth:`of` picks the class for a code.
    """

    def __init__(self, message: str, code: int = 0) -> None:
        super().__init__(message)
        self.code = code

    @staticmethod
    def of(message: str, code: int) -> HostRefused:
        """The refusal for JSON-RPC error ``code``."""
        kind = HostStateRefused if code in _STATE_CODES else HostRefused
        return kind(message, code)


class HostStateRefused(HostRefused):
    """The host refused because of the state of things (a conflict, a VM or disk it
    does not know), not because it failed."""


# JSON-RPC codes (diskname.protocol.jsonrpc) that describe the state of things.
_STATE_CODES = frozenset({-32001, -32002, -32005})


class HostCallFailed(EngineError):
    """The host broke off in the middle of a call: the outcome is unknown."""


class HostTimeout(EngineError):
    """The host did not answer a call in time (it may still complete it)."""


class Unavailable(EngineError):
    """The database is away (down, restarting, unreachable); try again."""


class DatabaseTimeout(Unavailable):
    """A statement got no answer in time: most likely a dead connection."""


class DatabaseRefused(EngineError):
    """PostgreSQL refused a statement for a reason other than a lost connection
    (data it cannot take, a bug): trying again as it is will not help."""
