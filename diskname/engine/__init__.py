"""The engine tier: monitors hosts, keeps names in PostgreSQL, serves REST and a web page.

Layers, each a folder that says in its ``__init__`` what it owns and may import:

- :mod:`.core`: pure values, matching, planning and the per-host sync state (no I/O);
- :mod:`.db`: every SQL statement (asyncpg);
- :mod:`.hosts`: connections to hosts, the monitors that poll them, leases;
- :mod:`.actions`: what both APIs do on a user's behalf;
- :mod:`.http`: the JSON REST API, events, metrics, sign-in and the page (aiohttp);
- :mod:`.ovirt`: oVirt's XML API and its SSO (aiohttp).

Beside them: :mod:`.config` (the engine's settings), :mod:`.errors` (its one error
family), :mod:`.events` (change fan-out), :mod:`.metrics` (counters) and
:mod:`.service` (start-up and shutdown in order).
"""

from .config import EngineConfig
from .service import EngineService

__all__ = ["EngineConfig", "EngineService"]
