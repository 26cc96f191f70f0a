-- The engine's schema: clusters, hosts, VMs, disks, their attachments with the
-- guest's logical name, and a history of every change of that name.

CREATE TABLE clusters (
    id uuid PRIMARY KEY,
    name text NOT NULL UNIQUE,
    compatibility_version text NOT NULL
);

-- The default cluster every host joins unless told otherwise.
INSERT INTO clusters (id, name, compatibility_version)
VALUES ('00000000-0000-0000-0000-000000000001', 'Default', '4.7');

CREATE TABLE hosts (
    id uuid PRIMARY KEY,
    name text NOT NULL UNIQUE,
    address text NOT NULL,
    port integer NOT NULL CHECK (port BETWEEN 1 AND 65535),
    cluster_id uuid NOT NULL DEFAULT '00000000-0000-0000-0000-000000000001'
        REFERENCES clusters (id),
    status text NOT NULL DEFAULT 'unknown' CHECK (status IN ('unknown', 'up', 'unreachable')),
    last_seen timestamptz
);

CREATE TABLE vms (
    id uuid PRIMARY KEY,
    name text NOT NULL,
    host_id uuid NOT NULL REFERENCES hosts (id) ON DELETE CASCADE,
    status text NOT NULL DEFAULT 'unknown',
    -- The hash of the host's data last processed; NULL forces a fetch.
    hash text
);
CREATE INDEX vms_host_id ON vms (host_id);

CREATE TABLE disks (
    id uuid PRIMARY KEY,
    alias text,
    serial text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE vm_device (
    vm_id uuid NOT NULL REFERENCES vms (id) ON DELETE CASCADE,
    disk_id uuid NOT NULL REFERENCES disks (id) ON DELETE CASCADE,
    device_id uuid NOT NULL,
    interface text NOT NULL,
    is_plugged boolean NOT NULL DEFAULT false,
    address text,
    logical_name varchar(255),
    logical_name_source text,
    logical_name_seen_at timestamptz,
    PRIMARY KEY (vm_id, disk_id)
);
CREATE INDEX vm_device_disk_id ON vm_device (disk_id);

-- No foreign keys: the history outlives detached disks and removed VMs.
CREATE TABLE logical_name_history (
    id bigserial PRIMARY KEY,
    vm_id uuid NOT NULL,
    disk_id uuid NOT NULL,
    old_name varchar(255),
    new_name varchar(255),
    source text,
    changed_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX logical_name_history_vm_disk ON logical_name_history (vm_id, disk_id, changed_at);
