"""Byte limits every tier agrees on, in one place.

A reader's cap and a writer's budget for the same wire must be the same
number, or a writer may produce what its reader silently drops: the host cuts
its ``Host.getVMFullList`` replies to :data:`MAX_RPC_FRAME` because that is
exactly what the engine's client accepts.
"""

from __future__ import annotations

# One agent (guest) message: the original oVirt host dropped anything larger.
MAX_AGENT_LINE = 1024 * 1024
# One JSON-RPC frame between host and engine. A VM's description holds its
# guest mapping (at most one agent line) plus its devices, so one VM always
# fits with room to spare; a batch is cut to fit.
MAX_RPC_FRAME = 8 * 1024 * 1024
# What the host reserves of a frame for the envelope around a batch.
RPC_ENVELOPE = 4096
# Disk devices the host accepts on one VM (a q35 machine has far fewer slots).
MAX_DEVICES_PER_VM = 256
