"""The engine's listening site: aiohttp's runner behind :mod:`diskname.connguard`.

``TCPSite`` hands aiohttp's protocol to asyncio's own accept loop, which has no
caps, no head deadline and a traceback per failed accept (SPEC §19); this site
hands it to a :class:`~diskname.connguard.GuardedServer` instead. Idle keep-alives
are aiohttp's own rule (the runner's ``keepalive_timeout``).
"""

from __future__ import annotations

import ssl

from aiohttp import web

from ...connguard import HTTP_HEAD_END, GuardedServer, GuardLimits


class GuardedSite(web.BaseSite):
    __slots__ = ("_host", "_limits", "_port")

    def __init__(
        self,
        runner: web.BaseRunner,
        host: str,
        port: int,
        limits: GuardLimits,
        *,
        ssl_context: ssl.SSLContext | None = None,
        backlog: int = 1024,
    ) -> None:
        super().__init__(runner, ssl_context=ssl_context, backlog=backlog)
        self._host, self._port, self._limits = host, port, limits

    @property
    def name(self) -> str:
        scheme = "https" if self._ssl_context else "http"
        return f"{scheme}://{self._host}:{self._port}"

    @property
    def guard(self) -> GuardedServer | None:
        server = self._server
        return server if isinstance(server, GuardedServer) else None

    async def start(self) -> None:
        await super().start()
        factory = self._runner.server
        assert factory is not None  # BaseSite checked the runner was set up
        server = GuardedServer(
            factory,
            self._limits,
            head_end=HTTP_HEAD_END,
            ssl_context=self._ssl_context,
            name="HTTP",
        )
        self._server = server
        self._port = await server.start(self._host, self._port, self._backlog)
