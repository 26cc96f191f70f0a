-- Issue 21 (SPEC §17): whether each VM's guest agent is there, and when its names
-- were last confirmed.
--
-- guest_agent_*: the host's view (up / unresponsive / none, since when, the sources
-- up), written only when it changes: a quiet fleet costs no write.
-- guest_reported_at: per source ("agent", "qemu-ga"), when the guest last sent its
-- mapping. A guest repeating an unchanged mapping is not written for (that would be
-- a write per VM per report_interval): the owning engine keeps the newer times in
-- memory and serves them; the column moves when the VM's hash or its agent's
-- status is stored.
ALTER TABLE vms
    ADD COLUMN guest_agent_status text NOT NULL DEFAULT 'none'
        CHECK (guest_agent_status IN ('up', 'unresponsive', 'none')),
    ADD COLUMN guest_agent_since timestamptz,
    ADD COLUMN guest_agent_sources text[] NOT NULL DEFAULT '{}',
    ADD COLUMN guest_reported_at jsonb NOT NULL DEFAULT '{}';

-- "Which disk was /dev/vdb in this VM?" (the client resolving a former name).
CREATE INDEX logical_name_history_vm_name ON logical_name_history (vm_id, new_name, id);
