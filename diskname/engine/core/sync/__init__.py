"""What the engine knows of one host's VMs, and what to fetch next (sans-IO).

The per-host monitor's state with no I/O in it, the way h11 keeps a
connection's state apart from its sockets: the monitor feeds
:class:`HostSync` the host's typed messages (:mod:`diskname.protocol.host_wire`),
the outcome of its writes and its clock, and asks what to fetch and when to
wake. The rules live in small trackers, each changed only through its methods:

- :mod:`.ownership`: only the owner fetches, and only once it has reloaded the
  stored hashes (a table of phases and events).
- :mod:`.known`: the hash gate (fetch only a hash other than the one stored),
  VMs too large to fetch, VMs registered on another host.
- :mod:`.digest`: the stats digest: an unchanged host costs one comparison.
- :mod:`.actions`: the engine's own actions, their generations, and when a VM it
  changed is fetched (the guest's report after a hot-plug).
- :mod:`.queue`: a VM is never in two fetches at once; fetches are damped;
  reminders come due.
- :mod:`.missing`: VMs the host no longer knows after a (re)connect, to give back.
"""

from .host import FOLLOW_UP_DELAYS, MAX_FETCH, SETTLE, Batch, HostSync, Reply
from .known import StoredVm

__all__ = ["FOLLOW_UP_DELAYS", "MAX_FETCH", "SETTLE", "Batch", "HostSync", "Reply", "StoredVm"]
