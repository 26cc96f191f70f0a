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

    ``code`` is the JSON-RPC error code. Each refusal the engine tells apart is a
    subclass, raised where the reply is read (:mod:`.hosts.refusals` maps each code
    to its class, once); each edge's table answers a class by its nearest listed
    ancestor. The base class is the hypervisor failing, or a code the engine does
    not know; refusals about the state of things are :class:`HostStateRefused`.
    """

    def __init__(self, message: str, code: int = 0) -> None:
        super().__init__(message)
        self.code = code


class HostStateRefused(HostRefused):
    """The host refused because of the state of things, not because it failed."""


class VmNotOnHost(HostStateRefused):
    """The host does not know the VM (``UNKNOWN_VM``)."""


class DeviceNotOnVm(HostStateRefused):
    """The VM has no such disk (``UNKNOWN_DEVICE``)."""


class HostConflict(HostStateRefused):
    """The VM's state on the host forbids it, e.g. no free address (``CONFLICT``)."""


class HypervisorFailed(HostRefused):
    """The hypervisor refused or failed (``HYPERVISOR_ERROR``)."""


class HostStateNotWritten(HostRefused):
    """The host cannot write the VM's state (a full state directory), so it refused
    the change and undid it (``STATE_NOT_WRITTEN``): nothing changed (SPEC §19)."""


class HostUnauthorized(HostRefused):
    """The host wants credentials the engine did not give (``UNAUTHORIZED``)."""


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
