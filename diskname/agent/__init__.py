"""The guest tier: discover disks, report their names over the agent channel."""
