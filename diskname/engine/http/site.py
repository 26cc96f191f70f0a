"""The engine's listening site: aiohttp's runner behind :mod:`diskname.connguard`.

``TCPSite`` hands aiohttp's protocol to asyncio's own accept loop, which has no
caps, no head deadline and a traceback per failed accept (SPEC §19); this site
hands it to a :class:`~diskname.connguard.GuardedServer` instead. Idle keep-alives
are aiohttp's own rule (the runner's ``keepalive_timeout``).
"""

from __future__ import annotations

import logging
import ssl
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError, LineTooLong
from aiohttp.web_protocol import RequestHandler

from ...connguard import HTTP_HEAD_END, GuardedServer, GuardLimits
from .errors import error_response

log = logging.getLogger(__name__)


class JsonErrorsHandler(RequestHandler):
    """aiohttp's connection handler, answering a request it could not parse as the API
    answers every error: ``{"error": {"code", "message"}}``, a 4xx, no traceback in the
    log and nothing of the request echoed back (aiohttp's own answer is plain text that
    quotes the offending line, and it logs a traceback for each)."""

    __slots__ = ()  # the same layout as aiohttp's: GuardedSite re-classes its handlers

    def handle_error(
        self,
        request: Any,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        if not isinstance(exc, HttpProcessingError) or request.writer.output_size > 0:
            return super().handle_error(request, status, exc, message)
        if isinstance(exc, LineTooLong):
            status, text = 431, "a request line or header field is too large (at most 8 KiB)"
        else:
            status, text = 400, "the request is not valid HTTP/1.1"
        log.info("refused an unreadable request from %s: %s", request.remote, text)
        response = error_response(status, text)
        response.force_close()
        return response


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

        def handler() -> RequestHandler:
            made = factory()
            made.__class__ = JsonErrorsHandler  # same slots: only handle_error differs
            return made

        server = GuardedServer(
            handler,
            self._limits,
            head_end=HTTP_HEAD_END,
            ssl_context=self._ssl_context,
            name="HTTP",
        )
        self._server = server
        self._port = await server.start(self._host, self._port, self._backlog)
