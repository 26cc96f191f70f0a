"""What every HTTP handler reaches through ``request.app[CTX]``."""

from __future__ import annotations

from dataclasses import dataclass

from aiohttp import web

from . import auth
from .actions import Actions
from .catalog import Catalog
from .config import EngineConfig
from .events import EventHub
from .metrics import Metrics
from .monitors import Monitors
from .resources import Resources
from .store import Store


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
