"""What every HTTP handler reaches through ``request.app[CTX]``."""

from __future__ import annotations

from dataclasses import dataclass

from aiohttp import web

from ..actions import Actions
from ..config import EngineConfig
from ..db.catalog import Catalog
from ..db.store import Store
from ..events import EventHub
from ..hosts.fleet import Monitors
from ..metrics import Metrics
from . import auth


@dataclass(frozen=True, slots=True)
class EngineContext:
    config: EngineConfig
    store: Store
    monitors: Monitors
    metrics: Metrics
    hub: EventHub
    actions: Actions
    auth: auth.Authenticator

    @property
    def catalog(self) -> Catalog:
        return Catalog(self.store.pool, self.metrics)


CTX = web.AppKey("diskname_engine", EngineContext)


def actions(request: web.Request) -> Actions:
    return request.app[CTX].actions
