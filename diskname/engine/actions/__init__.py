"""What the engine does on a user's behalf, the same through every API edge.

Owns the resources both edges see (:mod:`.resources`: hosts, VMs, attachments,
disks) and the actions that call hosts (:mod:`.calls`: create VMs, plug and
unplug disks). Failures are :mod:`diskname.engine.errors`; the edges map them.

May import: :mod:`..core`, :mod:`..db`, :mod:`..hosts` and the engine's
top-level modules. Never aiohttp.
"""
