"""A new disk for a running VM, and the name its guest gives it, with oVirt's Python SDK.

    OVIRT_URL=https://ENGINE/ovirt-engine/api OVIRT_PASSWORD=... OVIRT_CA_FILE=ca.pem \
        python3 attach_disk.py web1 data --size-gib 1

Prints one line: the disk's id, the guest's name for it and its serial.
"""

import argparse
import os
import time

import ovirtsdk4 as sdk
import ovirtsdk4.types as types

parser = argparse.ArgumentParser()
parser.add_argument("vm", help="the VM's name")
parser.add_argument("domain", help="the storage domain the disk's image goes to")
parser.add_argument("--name", help="the disk's name (default: VM_data)")
parser.add_argument("--size-gib", type=int, default=1)
args = parser.parse_args()

connection = sdk.Connection(
    url=os.environ["OVIRT_URL"],
    username=os.environ.get("OVIRT_USERNAME", "admin@internal"),
    password=os.environ["OVIRT_PASSWORD"],
    ca_file=os.environ["OVIRT_CA_FILE"],
)
try:
    system = connection.system_service()
    (vm,) = system.vms_service().list(search=f"name={args.vm}")

    # 1. The disk, floating, in the storage domain: "locked" until its image exists.
    disk = system.disks_service().add(
        types.Disk(
            name=args.name or f"{args.vm}_data",
            format=types.DiskFormat.COW,
            provisioned_size=args.size_gib * 2**30,
            storage_domains=[types.StorageDomain(name=args.domain)],
        )
    )
    disk_service = system.disks_service().disk_service(disk.id)
    deadline = time.monotonic() + 120
    while disk_service.get().status != types.DiskStatus.OK:
        if time.monotonic() > deadline:
            raise SystemExit(f"disk {disk.id} is still {disk_service.get().status}")
        time.sleep(1)

    # 2. Attached by id, hot-plugged into the running VM.
    attachments = system.vms_service().vm_service(vm.id).disk_attachments_service()
    attachments.add(
        types.DiskAttachment(
            disk=types.Disk(id=disk.id),
            interface=types.DiskInterface.VIRTIO,
            active=True,
        )
    )

    # 3. The guest's name: the engine answers as soon as the guest named it (or at 60 s).
    attachment = attachments.attachment_service(disk.id).get(
        query={"wait": "logical_name", "timeout": "60"}
    )
    if attachment.logical_name is None:
        raise SystemExit(f"disk {disk.id}: the guest has not named it within 60 s")
    print(f"disk {disk.id} is {attachment.logical_name} in {vm.name}, serial {disk.id[:20]}")
finally:
    connection.close()
