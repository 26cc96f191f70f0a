-- Issue 14: disks have a name, a provisioned size and a status, as oVirt's
-- disks do (GET /ovirt-engine/api/disks; oVirt's SDK waits for status "ok").

-- The unused alias of 0001 becomes the disk's name (oVirt's alias and name are one).
ALTER TABLE disks RENAME COLUMN alias TO name;

-- Existing disks are named as oVirt names a VM's disks: <vm>_Disk<n>, numbered
-- per VM in the order they were created; a disk attached nowhere by its id.
WITH numbered AS (
    SELECT vd.disk_id, v.name AS vm_name,
           row_number() OVER (PARTITION BY vd.vm_id ORDER BY d.created_at, d.id) AS n,
           row_number() OVER (PARTITION BY vd.disk_id ORDER BY vd.vm_id) AS pick
    FROM vm_device vd JOIN vms v ON v.id = vd.vm_id JOIN disks d ON d.id = vd.disk_id
)
UPDATE disks SET name = left(numbered.vm_name, 240) || '_Disk' || numbered.n
FROM numbered
WHERE numbered.disk_id = disks.id AND numbered.pick = 1 AND disks.name IS NULL;
UPDATE disks SET name = 'disk-' || left(id::text, 8) WHERE name IS NULL;
ALTER TABLE disks ALTER COLUMN name SET NOT NULL;
ALTER TABLE disks ADD CONSTRAINT disks_name_length CHECK (char_length(name) BETWEEN 1 AND 255);
CREATE INDEX disks_name ON disks (name);

-- A disk inserted without a name (one a host reports that the engine did not
-- create, a direct LUN) is named by its id, whoever inserts it.
CREATE FUNCTION disks_default_name() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.name IS NULL THEN
        NEW.name := 'disk-' || left(NEW.id::text, 8);
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER disks_default_name BEFORE INSERT ON disks
    FOR EACH ROW EXECUTE FUNCTION disks_default_name();

-- Bytes; 1 GiB is what the hypervisors create for a disk that names no size.
ALTER TABLE disks ADD COLUMN provisioned_size bigint NOT NULL DEFAULT 1073741824
    CHECK (provisioned_size > 0);

-- "locked" while a new disk's first hot-plug is under way, "ok" once plugged
-- (or when it was attached without a plug).
ALTER TABLE disks ADD COLUMN status text NOT NULL DEFAULT 'ok'
    CHECK (status IN ('ok', 'locked'));
