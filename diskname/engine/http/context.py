"""What every HTTP handler reaches through ``request.app[CTX]``."""

from __future__ import annotations

from dataclasses import dataclass

from aiohttp import web

from ..actions.calls import Actions
from ..actions.resources import Resources
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
        return Catalog(self.store)

    @property
    def resources(self) -> Resources:
        return Resources(self.store, self.actions, self.monitors)


CTX = web.AppKey("diskname_engine", EngineContext)
