"""The engine's pure core: values, rules and state machines, with no I/O at all.

Owns the engine's plain values (:mod:`.models`), matching a guest's mapping to a
VM's disks (:mod:`.matching`), oVirt's search terms (:mod:`.search`), the
``?wait=`` query (:mod:`.waiting`), the plan of row updates a host report implies
(:mod:`.planning`) and the per-host sync state (:mod:`.sync`). Everything here is
tested without sockets or a database.

May import: the standard library, :mod:`diskname.protocol`, :mod:`diskname.damping`
and :mod:`diskname.engine.errors`. Never asyncio, asyncpg or aiohttp.
"""
