"""Real-VM test support: the guest image and QEMU launch."""
