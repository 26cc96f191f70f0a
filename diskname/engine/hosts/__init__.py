"""The engine's connections to hypervisor hosts.

Owns opening a connection (:mod:`.connect`: TLS with the engine's PKI, then a
token), the per-host monitor that drives a :class:`~diskname.engine.core.sync.HostSync`
(:mod:`.monitor`), the fleet of monitors as tasks (:mod:`.fleet`) and the
advisory-lock leases that decide which engine polls which host, with their
fence (:mod:`.leases`).

May import: :mod:`..core`, :mod:`..db`, the engine's top-level modules
(errors, events, metrics, config), :mod:`diskname.streams` and
:mod:`diskname.protocol`. Never aiohttp.
"""
