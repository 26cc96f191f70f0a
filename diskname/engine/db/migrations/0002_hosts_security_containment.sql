-- Hosts: a per-host token the engine sends with Host.authenticate (a secret:
-- never returned by the API), why a host is in its status ("untrusted": its
-- certificate does not verify, or it refused our token).
ALTER TABLE hosts ADD COLUMN token text;
ALTER TABLE hosts ADD COLUMN status_reason text;
ALTER TABLE hosts DROP CONSTRAINT hosts_status_check;
ALTER TABLE hosts ADD CONSTRAINT hosts_status_check
    CHECK (status IN ('unknown', 'up', 'unreachable', 'untrusted'));

-- A disk is plugged into at most one VM, whatever two requests (or two
-- engines) do at once. Rows that already break the rule keep the plug of the
-- VM that sorts first; the others read as unplugged, as their names would be.
UPDATE vm_device SET is_plugged = false, logical_name = NULL,
       logical_name_source = NULL, logical_name_seen_at = NULL
WHERE (vm_id, disk_id) IN (
    SELECT vm_id, disk_id FROM (
        SELECT vm_id, disk_id, row_number() OVER (PARTITION BY disk_id ORDER BY vm_id) AS n
        FROM vm_device WHERE is_plugged
    ) ranked WHERE n > 1
);
CREATE UNIQUE INDEX vm_device_plugged_once ON vm_device (disk_id) WHERE is_plugged;

-- History is read newest first per disk, and trimmed per disk.
CREATE INDEX logical_name_history_disk ON logical_name_history (disk_id, id);
