-- Issue 23 (SPEC §19): a host reports only about its own.

-- Two disks of one VM reported with the same name: neither name is current, and
-- each attachment keeps the name the guest gave both (NULL: no conflict).
ALTER TABLE vm_device ADD COLUMN name_conflict varchar(255);

-- A disk a host reports that the engine does not know may not carry another
-- disk's serial: the guard looks serials up, in one round trip per batch.
CREATE INDEX disks_serial ON disks (serial);

-- VM names a host reported before names were checked: a name with a control,
-- bidi or zero-width character, or too long, becomes the VM's id (as a VM
-- reported with no name is named).
UPDATE vms SET name = id::text
WHERE name ~ '[\x01-\x1f\x7f-\x9f\u061c\u200b-\u200f\u202a-\u202e\u2060\u2066-\u2069\ufeff]'
   OR char_length(name) > 255 OR name !~ '[^[:space:]]';
