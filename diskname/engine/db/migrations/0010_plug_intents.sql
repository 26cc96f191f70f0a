-- Issue 23 (SPEC §19 "Crashes"): every hot-plug and unplug is an intent, written
-- before the host is called (with the claim, in the same statement) and removed
-- with its outcome. One left behind belongs to an engine that died in between:
-- the owner of the VM's host fetches the VM whatever its hash says, stores what
-- the host reports, and resolves the intent (docs/containment.md, "Crashes").
CREATE TABLE plug_intents (
    vm_id uuid NOT NULL,
    disk_id uuid NOT NULL,
    kind text NOT NULL CHECK (kind IN ('plug', 'unplug')),
    -- The backend pid of the writing engine's lease connection: while that
    -- backend lives, the engine does and the intent may still be in flight.
    engine_pid integer,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (vm_id, disk_id),
    -- Detached, or its VM or disk removed: the intent goes with the attachment.
    FOREIGN KEY (vm_id, disk_id) REFERENCES vm_device (vm_id, disk_id) ON DELETE CASCADE
);
