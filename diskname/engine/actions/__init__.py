"""What the engine does on a user's behalf, the same through every API edge.

:class:`Actions` is all either edge (the JSON API, oVirt's XML API) calls, so a
lookup, a search or a hot-plug means the same through both: each edge parses
its own format into the arguments here and writes the values returned
(:class:`HostRow`, :class:`VmRow`, :class:`Attachment`, :class:`Disk`) in its own
format. One module per resource: :mod:`.hosts`, :mod:`.vms`,
:mod:`.attachments` (plugs and unplugs), :mod:`.catalog` (disks, clusters,
history), :mod:`.storage` (storage domains, floating disks); :mod:`.base` what
they share. Failures are
:mod:`diskname.engine.errors`; the edges map them.

May import: :mod:`..core`, :mod:`..db`, :mod:`..hosts` and the engine's
top-level modules. Never aiohttp.
"""

from __future__ import annotations

from .attachments import AttachmentActions, AttachRequest
from .catalog import CatalogActions
from .hosts import HostActions
from .storage import StorageActions
from .vms import VmActions

__all__ = ["Actions", "AttachRequest"]


class Actions(HostActions, VmActions, AttachmentActions, CatalogActions, StorageActions):
    """Hosts, VMs, attachments, disks, clusters and history, as both edges see them."""
