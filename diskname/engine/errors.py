"""The engine's one error family, and the one table that turns it into HTTP statuses.

Domain code (actions, store, monitors, auth) raises these and never thinks in HTTP;
each edge (the JSON API, the oVirt XML API) translates them once, through
:func:`http_status`. Library errors (asyncpg, the JSON-RPC client) are translated
into this family where they are caught, not passed through.
"""

from __future__ import annotations

import math


class EngineError(Exception):
    """Something the engine could not do; ``str(exc)`` is the message for users."""

    status = 500


class Invalid(EngineError):
    """The request itself is wrong (a field, a value, a path parameter)."""

    status = 400


class Unauthenticated(EngineError):
    """No credentials, or credentials that do not check out."""

    status = 401


class Forbidden(EngineError):
    """The caller is known but its role may not do this."""

    status = 403


class NotFound(EngineError):
    status = 404


class Conflict(EngineError):
    """The change would break a rule of the current state (a name taken, a disk in use)."""

    status = 409


class HostNotConnected(Conflict):
    """The VM's host is registered but not connected: a state problem, not a server fault."""


class HostRefused(EngineError):
    """The host (or its hypervisor) refused the call; the message is the host's own.

    ``code`` is the JSON-RPC error code. Each refusal the engine tells apart is a
    subclass, raised where the reply is read (:mod:`.hosts.refusals` maps each code
    to its class, once). A refusal about the state of things is a 409; the
    hypervisor failing to do its job, or a code the engine does not know, a 502.
    """

    status = 502

    def __init__(self, message: str, code: int = 0) -> None:
        super().__init__(message)
        self.code = code


class VmNotOnHost(HostRefused):
    """The host does not know the VM (``UNKNOWN_VM``)."""

    status = 409


class DeviceNotOnVm(HostRefused):
    """The VM has no such disk (``UNKNOWN_DEVICE``)."""

    status = 409


class HostConflict(HostRefused):
    """The VM's state on the host forbids it, e.g. no free address (``CONFLICT``)."""

    status = 409


class HypervisorFailed(HostRefused):
    """The hypervisor refused or failed (``HYPERVISOR_ERROR``)."""


class HostUnauthorized(HostRefused):
    """The host wants credentials the engine did not give (``UNAUTHORIZED``)."""


class Unprocessable(EngineError):
    """The request is well formed but refers to something that does not exist
    (a ``disk.id`` or ``host.id`` in the body): the target itself was found, so
    this is no 404."""

    status = 422


class UnsupportedMediaType(EngineError):
    status = 415


class TooManyRequests(EngineError):
    """Too many tries (failed sign-ins); the next may succeed in ``retry_after`` seconds."""

    status = 429

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class HostCallFailed(EngineError):
    """The host broke off in the middle of a call: the outcome is unknown."""

    status = 502


class Unavailable(EngineError):
    """The database is away; try again."""

    status = 503


class HostTimeout(EngineError):
    """The host did not answer a call in time (it may still complete it)."""

    status = 504


def http_status(exc: EngineError) -> int:
    """The HTTP status an edge answers ``exc`` with."""
    return exc.status


def http_headers(exc: EngineError) -> dict[str, str]:
    """The headers an edge sends with ``exc``'s status (RFC 9110: a 401 names its scheme)."""
    if isinstance(exc, Unauthenticated):
        return {"WWW-Authenticate": 'Bearer realm="diskname"'}
    if isinstance(exc, TooManyRequests) and exc.retry_after is not None:
        return {"Retry-After": str(max(1, math.ceil(exc.retry_after)))}
    return {}
