-- Issue 22 (SPEC §18, §19 "Crashes"): a floating disk's image creation is an intent,
-- written with the "locked" disk and removed with its outcome ("ok" or "illegal"),
-- as plug_intents are for plugs. One left behind belongs to an engine that died
-- before the outcome: the owner of the disk's host creates the image again (the
-- host does so idempotently) and settles the disk (engine/actions/images.py).
CREATE TABLE image_intents (
    disk_id uuid PRIMARY KEY REFERENCES disks (id) ON DELETE CASCADE,
    -- The backend pid of the creating engine's lease connection: while that
    -- backend lives, so does the engine, and the creation may be in flight.
    -- NULL: no engine is making it (let go after a lost host connection).
    engine_pid integer,
    created_at timestamptz NOT NULL DEFAULT now()
);

-- Disks an engine of before this migration left locked in the middle of their
-- creation (a floating disk is attached to nothing while locked): resumed at once.
INSERT INTO image_intents (disk_id, engine_pid)
SELECT d.id, NULL FROM disks d
WHERE d.status = 'locked' AND NOT EXISTS (SELECT 1 FROM vm_device vd WHERE vd.disk_id = d.id);
