"""The engine's HTTP edge (aiohttp): the JSON REST API, events, metrics and the page.

Owns the application and its middleware (:mod:`.app`), the routes, request
parsing (:mod:`.parsing`), server-sent events (:mod:`.sse`), who is calling and
whether they may (:mod:`.auth`, :mod:`.passwords`, :mod:`.throttle`), what every
handler reaches (:mod:`.context`) and the static page and OpenAPI document
(``web/``). The one place the engine's errors become HTTP statuses for the JSON API.

May import: :mod:`..actions`, :mod:`..db`, :mod:`..core`, :mod:`..ovirt` and the
engine's top-level modules. Runs no SQL itself.
"""
