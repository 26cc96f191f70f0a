"""The engine tier: monitors hosts, keeps names in PostgreSQL, serves REST and a web page."""

from .config import EngineConfig
from .service import EngineService

__all__ = ["EngineConfig", "EngineService"]
