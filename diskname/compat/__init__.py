"""What the agent and the shared protocol code need to run on Python 3.9 and 3.10.

The host and the engine run on 3.11+; the agent runs on a guest's own
``python3``, which is 3.9 on RHEL 9 and Debian 11. Every gap between those
versions that this code meets is bridged here (and in :mod:`.aio` for asyncio,
:mod:`.jsonlib` for orjson, :mod:`.toml` for tomllib), so the rest of the code
reads as 3.11 code. On 3.11+ each name is the standard one.
"""

from __future__ import annotations

import sys
import types
import typing
from typing import Any

# ``@dataclass(frozen=True, **SLOTS)``: slotted where dataclasses can (3.10+).
SLOTS: dict[str, Any] = {"slots": True} if sys.version_info >= (3, 10) else {}


if sys.version_info >= (3, 11):
    from builtins import BaseExceptionGroup as BaseExceptionGroup
    from builtins import ExceptionGroup as ExceptionGroup
else:

    class BaseExceptionGroup(BaseException):
        """What ``except`` may name before 3.11; nothing raises it there (compat.aio's
        TaskGroup raises the first error itself)."""

        exceptions: tuple[BaseException, ...] = ()

    class ExceptionGroup(BaseExceptionGroup, Exception):
        pass


_UNIONS: tuple[Any, ...] = (typing.Union, getattr(types, "UnionType", typing.Union))


def is_union(tp: Any) -> bool:
    """``X | Y`` or ``Optional[X]`` on any version."""
    return typing.get_origin(tp) in _UNIONS


def type_hints(cls: type[Any]) -> dict[str, Any]:
    """``typing.get_type_hints(cls)``, also for ``X | None`` annotations on 3.9.

    Annotations are strings (``from __future__ import annotations``); 3.9
    cannot evaluate ``str | None``, so each top-level ``|`` becomes a Union.
    """
    try:
        return typing.get_type_hints(cls)
    except TypeError:
        if sys.version_info >= (3, 10):
            raise
    namespace = dict(vars(sys.modules[cls.__module__]))
    hints: dict[str, Any] = {}
    for klass in reversed(cls.__mro__):
        for name, text in vars(klass).get("__annotations__", {}).items():
            hints[name] = _evaluate(text, namespace) if isinstance(text, str) else text
    return hints


def _evaluate(text: str, namespace: dict[str, Any]) -> Any:
    parts = [eval(part, namespace) for part in _top_level_split(text)]
    return parts[0] if len(parts) == 1 else typing.Union[tuple(parts)]


def _top_level_split(text: str) -> list[str]:
    parts, depth, start = [], 0, 0
    for i, char in enumerate(text):
        depth += (char in "[(") - (char in "])")
        if char == "|" and depth == 0:
            parts.append(text[start:i].strip())
            start = i + 1
    parts.append(text[start:].strip())
    return parts
