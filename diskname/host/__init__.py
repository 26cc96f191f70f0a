"""The hypervisor-host tier: VM state, agent channels, the JSON-RPC server."""
