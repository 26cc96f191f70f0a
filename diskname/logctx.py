"""Which VM or host a log line is about, carried by context variables.

A task that works for one VM or host sets the context once
(``with log_context(vm_id=...)``) and every log call inside it, however deep,
is tagged; JSON logs carry the ids as fields. asyncio copies the context into
each task it creates, so a per-VM task's children inherit its tag.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from contextvars import ContextVar

CONTEXT_VARS: dict[str, ContextVar[str | None]] = {
    "vm_id": ContextVar("vm_id", default=None),
    "host_id": ContextVar("host_id", default=None),
}


@contextlib.contextmanager
def log_context(**ids: str | None) -> Iterator[None]:
    tokens = [(CONTEXT_VARS[key], CONTEXT_VARS[key].set(value)) for key, value in ids.items()]
    try:
        yield
    finally:
        for var, token in reversed(tokens):
            var.reset(token)


def current_ids() -> dict[str, str]:
    return {key: value for key, var in CONTEXT_VARS.items() if (value := var.get()) is not None}
