"""The monitor's part in guest agents' freshness (SPEC §17): write what moved, tell the page.

The sync state (:mod:`..core.sync.freshness`) says which VMs' guest agents came or
went in the host's last full stats list; they are written in one statement, and
those that moved a row (not ones another engine wrote first) are logged and
published on ``/api/events`` as ``event: guest_agent``, so a page or client
marks the VM's names stale (or fresh again) without asking.
"""

from __future__ import annotations

import logging
from typing import Any

from ..core.models import GUEST_AGENT_EVENT
from ..core.sync import HostSync
from ..core.sync.freshness import AgentChange
from ..db.store import Store
from ..errors import Unavailable
from ..events import EventHub

log = logging.getLogger(__name__)


def agent_event(change: AgentChange) -> dict[str, Any]:
    """The ``/api/events`` message of a guest agent that came or went (no ``id``: not
    in the history, so not replayed; a reconnecting client reads the VM again)."""
    agent = change.agent
    return {
        "kind": GUEST_AGENT_EVENT,
        "vm_id": change.vm_id,
        "guest_agent": agent.to_json(),
        "stale": agent.stale,
    }


async def store_agent_changes(store: Store, hub: EventHub, sync: HostSync, host_id: str) -> None:
    changes = sync.take_agent_changes()
    if not changes:
        return
    try:
        moved = await store.set_guest_agents(host_id, changes)
    except Unavailable:
        sync.agents.not_written(changes)
        raise
    publish_agent_changes(hub, moved)


def publish_agent_changes(hub: EventHub, changes: list[AgentChange]) -> None:
    for change in changes:
        log.info(
            "VM %s: guest agent %s (sources: %s)",
            change.vm_id,
            change.agent.status,
            ", ".join(change.agent.sources) or "none",
        )
        hub.publish(agent_event(change))
