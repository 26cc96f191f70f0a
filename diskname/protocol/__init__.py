"""Sans-IO protocols shared by the agent, host and engine tiers.

Nothing in this package does I/O or imports asyncio: bytes go in, typed
values come out, and typed values turn back into bytes.
"""
