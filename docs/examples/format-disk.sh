#!/bin/sh
# In the guest, as root: format and mount the disk diskname named.
#   format-disk.sh DEVICE SERIAL [MOUNTPOINT]    e.g. format-disk.sh /dev/vdb 8d0b6e0c-1f2a-4c3b-9
# Refuses unless DEVICE carries SERIAL: the name must be that of this very disk.
set -eu
device=$1 serial=$2 mountpoint=${3:-/mnt/data}
seen=$(cat "/sys/block/${device#/dev/}/serial" 2>/dev/null || true)
if [ "$seen" != "$serial" ]; then
    echo "$device has serial '$seen', not '$serial': not formatting it" >&2
    exit 1
fi
mkfs.ext4 -q -F "$device"
mkdir -p "$mountpoint"
mount "$device" "$mountpoint"
echo "formatted and mounted $device (serial $serial) at $mountpoint"
