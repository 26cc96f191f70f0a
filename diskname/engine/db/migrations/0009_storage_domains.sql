-- Issue 22: storage domains (where a host creates images) and floating disks.

-- A host's storage domain: a libvirt storage pool, a directory (--hypervisor qemu)
-- or memory (sim), as the host last listed it. Its id is derived from the host's
-- id and the domain's name (engine/actions/storage.py), so every engine agrees.
CREATE TABLE storage_domains (
    id uuid PRIMARY KEY,
    host_id uuid NOT NULL REFERENCES hosts (id) ON DELETE CASCADE,
    name text NOT NULL CHECK (char_length(name) BETWEEN 1 AND 255),
    kind text NOT NULL CHECK (kind IN ('pool', 'directory', 'memory')),
    available bigint NOT NULL CHECK (available >= 0),
    used bigint NOT NULL CHECK (used >= 0),
    seen_at timestamptz NOT NULL DEFAULT now(),
    UNIQUE (host_id, name)
);
CREATE INDEX storage_domains_name ON storage_domains (name);

-- A floating disk's image lives in one domain; a disk made by a hot-plug names none
-- (the host keeps its image beside the VM). A domain that goes leaves its disks
-- without one rather than blocking the host's removal.
ALTER TABLE disks ADD COLUMN storage_domain_id uuid
    REFERENCES storage_domains (id) ON DELETE SET NULL;
CREATE INDEX disks_storage_domain ON disks (storage_domain_id) WHERE storage_domain_id IS NOT NULL;
ALTER TABLE disks ADD COLUMN format text NOT NULL DEFAULT 'cow' CHECK (format IN ('cow', 'raw'));
ALTER TABLE disks ADD COLUMN sparse boolean NOT NULL DEFAULT true;

-- "illegal": the host could not create the image; status_reason says why.
ALTER TABLE disks ADD COLUMN status_reason text;
ALTER TABLE disks DROP CONSTRAINT disks_status_check;
ALTER TABLE disks ADD CONSTRAINT disks_status_check CHECK (status IN ('ok', 'locked', 'illegal'));
