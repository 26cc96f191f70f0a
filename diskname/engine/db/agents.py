"""Guest agents' freshness in ``vms`` (SPEC §17, migration 0007): written only when it moves.

The status columns are written when a host's stats say a VM's guest agent came
or went (:func:`set_guest_agents`, one statement per poll that saw changes) and
with each stored hash (:data:`HASH_SQL`, the last statement of a report's
transaction). ``guest_reported_at`` (per source, when the guest last sent its
mapping) rides along both: a guest repeating an unchanged mapping is never a
write of its own.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import orjson

from ..core.models import VmReport
from ..core.sync.freshness import AgentChange, Times


def _times_json(times: Times) -> str:
    return orjson.dumps({s: t.isoformat() for s, t in times.items()}).decode()


def agent_columns(changes: Sequence[AgentChange]) -> tuple[list[Any], ...]:
    """The arrays :data:`AGENTS_SQL` takes."""
    return (
        [c.vm_id for c in changes],
        [c.agent.status for c in changes],
        [c.agent.since for c in changes],
        [",".join(c.agent.sources) for c in changes],
        [_times_json(c.reported_at) for c in changes],
    )


def hash_columns(reports: Sequence[VmReport]) -> tuple[list[Any], ...]:
    """The arrays :data:`HASH_SQL` takes (a VM whose agent is unknown keeps its columns)."""
    return (
        [r.vm_id for r in reports],
        [r.hash for r in reports],
        [r.agent.status if r.agent else None for r in reports],
        [r.agent.since if r.agent else None for r in reports],
        [",".join(r.agent.sources) if r.agent else None for r in reports],
        [_times_json(r.reported_at) for r in reports],
    )


# $6: the host; a VM registered elsewhere is not this host's to write.
AGENTS_SQL = """
UPDATE vms SET guest_agent_status = u.status, guest_agent_since = u.since,
    guest_agent_sources = string_to_array(u.sources, ','),
    guest_reported_at = vms.guest_reported_at || u.reported::jsonb
FROM unnest($1::uuid[], $2::text[], $3::timestamptz[], $4::text[], $5::text[])
    AS u(id, status, since, sources, reported)
WHERE vms.id = u.id AND vms.host_id = $6::uuid
  AND (vms.guest_agent_status, vms.guest_agent_sources)
      IS DISTINCT FROM (u.status, string_to_array(u.sources, ','))
RETURNING vms.id::text AS id
"""
HASH_SQL = """
UPDATE vms SET hash = u.hash,
    guest_agent_status = COALESCE(u.status, vms.guest_agent_status),
    guest_agent_since = CASE WHEN u.status IS NULL THEN vms.guest_agent_since ELSE u.since END,
    guest_agent_sources = COALESCE(string_to_array(u.sources, ','), vms.guest_agent_sources),
    guest_reported_at = vms.guest_reported_at || u.reported::jsonb
FROM unnest($1::uuid[], $2::text[], $3::text[], $4::timestamptz[], $5::text[], $6::text[])
    AS u(id, hash, status, since, sources, reported)
WHERE vms.id = u.id AND vms.hash IS DISTINCT FROM u.hash
"""
