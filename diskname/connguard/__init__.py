"""Connection guard for the host's JSON-RPC and the engine's HTTP servers (SPEC §19).

asyncio's own accept loop reports every failed ``accept()`` through the loop's
exception handler (a traceback per try: "socket.accept() out of system resource")
and pauses a second; connections that never speak then hold every descriptor and
starve real clients. :class:`GuardedServer` runs its own accept loop instead:

- a peer address over ``max_per_address`` connections: the new one is closed at once;
- over the total cap (``max_connections``, or less when the process's file limit
  leaves room for fewer): the oldest connection still owing its head makes room;
  with none owing, the new one is closed;
- out of descriptors all the same (files, database connections): the oldest
  connection owing its head is closed, else accepting pauses a second;
- an admitted connection that has not completed its head ``head_timeout`` seconds
  after it was accepted (a TLS handshake counts) is closed;
- ``idle_timeout`` (for protocols with no idle rule of their own): closed after that
  long without a byte from the peer.

- a client that fails its TLS handshake is logged; with a :class:`FailureThrottle`
  (the host's), an address that keeps failing (TLS, or what the protocol reports with
  ``failed()``: a wrong token) is held back, its new connections closed at once.

Each kind of refusal is logged at most once a minute, with a count. The protocol
served is unchanged: a proxy hands it every call and watches the bytes for the end
of the head (``head_end``: a blank line for HTTP, a newline for a JSON-RPC frame).

:mod:`.rules` holds the limits and the pure parts (:class:`Ledger`,
:class:`HeadScanner`, :class:`Throttle`; no I/O, tested without sockets);
:mod:`.failures` the throttle of failures (sans-IO, the engine's sign-in uses it too);
:mod:`.server` the accept loop and the proxy. Imports only the standard library
and :mod:`diskname.config` (for :class:`~diskname.config.ConfigError`).
"""

from .failures import FailureThrottle
from .rules import HTTP_HEAD_END, LINE_END, GuardLimits, connection_budget
from .server import GuardedServer

__all__ = [
    "HTTP_HEAD_END",
    "LINE_END",
    "FailureThrottle",
    "GuardLimits",
    "GuardedServer",
    "connection_budget",
]
