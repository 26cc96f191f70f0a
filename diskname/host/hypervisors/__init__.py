"""Hypervisor backends: sim now, QEMU over QMP later."""
