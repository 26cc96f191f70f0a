"""The engine's HTTP application: the routes of every edge, and the one error middleware.

Routes come one module per resource family (:mod:`.hosts`, :mod:`.vms`,
:mod:`.attachments`, :mod:`.catalog`, :mod:`.events`, :mod:`.pages`), oVirt's
XML API and its SSO from :mod:`..ovirt`. Every error, aiohttp's own included,
leaves as ``{"error": {"code", "message"}}``, or as a ``<fault>`` on oVirt's XML
API, with the status of that edge's table (:data:`.errors.REST`,
:data:`..ovirt.FAULTS`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

from aiohttp import web

from .. import ovirt
from ..errors import EngineError, Unavailable
from ..ovirt import sso
from . import attachments, auth, catalog, events, hosts, inputs, pages, storage, vms
from .context import CTX, EngineContext, actions
from .errors import REST, error_response

__all__ = ["CTX", "EngineContext", "make_app"]

log = logging.getLogger(__name__)


@web.middleware
async def errors_middleware(request: web.Request, handler: Any) -> web.StreamResponse:
    try:
        response: web.StreamResponse = await handler(request)
        return response
    except EngineError as exc:
        return _answer(request, exc)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        # Keep what the status needs (RFC 9110: a 405 lists the methods in Allow).
        allow = {"Allow": exc.headers["Allow"]} if "Allow" in exc.headers else {}
        return _error(request, exc.status, exc.reason, allow)
    except Exception:
        log.exception("%s %s failed", request.method, request.path)
        return _error(request, 500, "internal error")


def _answer(request: web.Request, exc: EngineError) -> web.Response:
    """``exc`` answered as the table of the request's edge says."""
    answer = (ovirt.FAULTS if ovirt.is_ovirt_api(request.path) else REST)[exc]
    message = str(exc)
    if isinstance(exc, Unavailable):
        log.info("%s %s: database unavailable: %s", request.method, request.path, exc.__cause__)
    elif answer.status == 500:  # a bug, or a statement PostgreSQL refused
        log.error("%s %s failed", request.method, request.path, exc_info=exc)
        message = "internal error"
    return _error(request, answer.status, message, answer.headers_for(exc))


def _error(
    request: web.Request, status: int, message: str, headers: dict[str, str] | None = None
) -> web.Response:
    """The error in the caller's dialect: a ``<fault>`` on oVirt's XML API, else JSON."""
    if ovirt.is_ovirt_api(request.path):
        return ovirt.fault_response(status, message, headers)
    return error_response(status, message, headers)


def _auth(request: web.Request) -> auth.Authenticator:
    return request.app[CTX].auth


async def _nosniff(request: web.Request, response: web.StreamResponse) -> None:
    """No response is ever to be read as another type than it says (SPEC §19)."""
    response.headers.setdefault("X-Content-Type-Options", "nosniff")


async def _close_events(app: web.Application) -> None:
    app[CTX].hub.close()


async def _watch_sessions(app: web.Application) -> AsyncIterator[None]:
    """End the event streams of sign-ins that ended (:mod:`.sessions`) while serving."""
    task = asyncio.create_task(app[CTX].auth.sessions.run(), name="event stream sessions")
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


def make_app(ctx: EngineContext) -> web.Application:
    app = web.Application(middlewares=[errors_middleware, inputs.clean, auth.guard(_auth)])
    app[CTX] = ctx
    app.on_shutdown.append(_close_events)
    app.on_response_prepare.append(_nosniff)
    app.cleanup_ctx.append(_watch_sessions)
    app.add_routes(
        [
            *pages.routes(),
            *events.routes(),
            *hosts.routes(),
            *vms.routes(),
            *attachments.routes(),
            *catalog.routes(),
            *storage.routes(),
            *sso.routes(_auth),
            *ovirt.routes(actions),
        ]
    )
    return app
