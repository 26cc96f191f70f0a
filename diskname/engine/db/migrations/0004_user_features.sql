-- Issue 15: direct-LUN disks, how each name was matched, safe host removal.

-- A direct-LUN disk keeps the LUN's own serial (an image disk's serial is its
-- id's first 20 characters). One LUN is one disk: its serial names it alone.
ALTER TABLE disks ADD COLUMN storage_type text NOT NULL DEFAULT 'image'
    CHECK (storage_type IN ('image', 'lun'));
CREATE UNIQUE INDEX disks_lun_serial ON disks (serial) WHERE storage_type = 'lun';

-- Each history row also says how the guest's report was matched to the disk
-- (read per disk through 0002's index; replayed to event streams by id).
ALTER TABLE logical_name_history ADD COLUMN matched_by text;

-- A host that still has VMs cannot be removed: the database refuses instead of
-- silently removing the VMs with it (DELETE /api/hosts/{id} answers 409).
ALTER TABLE vms DROP CONSTRAINT vms_host_id_fkey;
ALTER TABLE vms ADD CONSTRAINT vms_host_id_fkey
    FOREIGN KEY (host_id) REFERENCES hosts (id) ON DELETE RESTRICT;
