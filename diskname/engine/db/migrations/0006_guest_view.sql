-- Issue 21: the guest's whole view of each disk (SPEC §17): its by-id and
-- by-path links, size, partitions, holders, mountpoints and whether it is in
-- use, as the guest reported them with the name (checked at the host and again
-- at the engine). NULL while the disk has no name. Written only when it changes.
ALTER TABLE vm_device ADD COLUMN guest jsonb;

-- The id of the latest `event: guest` of /api/events for this attachment, from
-- the name history's sequence (one order, one Last-Event-ID for both kinds of
-- event): a stream that reconnects is sent the views that changed since.
ALTER TABLE vm_device ADD COLUMN guest_event_id bigint;
CREATE INDEX vm_device_guest_event ON vm_device (guest_event_id)
    WHERE guest_event_id IS NOT NULL;
