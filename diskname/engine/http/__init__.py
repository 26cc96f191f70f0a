"""The engine's HTTP edge (aiohttp): the JSON REST API, events, metrics and the page.

Owns the application and its middleware (:mod:`.app`), the statuses of the
engine's errors (:mod:`.errors`), the routes, one module per resource family
(:mod:`.hosts`, :mod:`.vms`, :mod:`.attachments`, :mod:`.catalog`, :mod:`.events`:
server-sent events, ended with their sign-in by :mod:`.sessions`, :mod:`.pages`:
health, metrics, the page), request parsing (:mod:`.parsing`; control characters
refused by :mod:`.inputs`), who is calling and whether they may (:mod:`.auth`,
:mod:`.passwords`, :mod:`.fairness`), what every
handler reaches (:mod:`.context`) and the static page and OpenAPI document
(``web/``). The one place the engine's errors become HTTP statuses for the JSON API.

May import: :mod:`..actions`, :mod:`..db`, :mod:`..core`, :mod:`..ovirt` and the
engine's top-level modules. Runs no SQL itself.
"""
