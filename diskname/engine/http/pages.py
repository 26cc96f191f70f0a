"""The engine's own pages: ``/healthz``, ``/metrics``, the web page and the OpenAPI document."""

from __future__ import annotations

from importlib import resources

from aiohttp import web

from .context import CTX
from .errors import error_response
from .responses import json_response


async def healthz(request: web.Request) -> web.Response:
    if await request.app[CTX].store.ping():
        return json_response({"status": "ok"})
    return error_response(503, "database unreachable")


async def metrics(request: web.Request) -> web.Response:
    ctx = request.app[CTX]
    waiting = ctx.hub.waiters.parked
    text = ctx.metrics.render() + (
        "# HELP diskname_engine_name_waiters requests parked until a disk is named (?wait=)\n"
        "# TYPE diskname_engine_name_waiters gauge\n"
        f"diskname_engine_name_waiters {waiting}\n"
    )
    return web.Response(
        text=text,
        content_type="text/plain",
        charset="utf-8",
        headers={"X-Content-Format": "prometheus-0.0.4"},
    )


def _resource(name: str) -> bytes:
    return resources.files(__package__).joinpath("web", name).read_bytes()


async def openapi(request: web.Request) -> web.Response:
    return web.Response(body=_resource("openapi.json"), content_type="application/json")


async def index(request: web.Request) -> web.Response:
    return web.Response(body=_resource("index.html"), content_type="text/html", charset="utf-8")


def routes() -> list[web.RouteDef]:
    return [
        web.get("/", index),
        web.get("/healthz", healthz),
        web.get("/metrics", metrics),
        web.get("/api/openapi.json", openapi),
    ]
