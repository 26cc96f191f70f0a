"""The engine's PostgreSQL: every SQL statement the engine runs lives here.

Owns the pool and the one translation of asyncpg's errors (:mod:`.pool`), the
:class:`~.store.Store` (its reads :mod:`.queries`, the actions' writes
:mod:`.attaching`, rows as values :mod:`.rows`), the monitors' report writes
(:mod:`.reports`), the set-based writes of a hot-plug (:mod:`.plugs`), the
user-feature queries (:mod:`.catalog`), users and tokens (:mod:`.users`), the
migrations (:mod:`.migrate` and the SQL files in ``migrations/``) and group
commit for calls that arrive together (:mod:`.batching`).

Raises only :mod:`diskname.engine.errors` (``Unavailable`` for a lost database).
May import: :mod:`..core`, the engine's top-level modules and asyncpg. Never
aiohttp, and nothing here knows an HTTP status.
"""
