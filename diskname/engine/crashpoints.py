"""Named points of a hot-plug or unplug where a test may hold the engine, to kill it there.

SPEC §19 "Crashes" is tested by killing an engine process (SIGKILL) at each step
of a plug. Sleeping until the step is reached would be a guess; instead the test
starts the engine with ``DISKNAME_TEST_HOLD_AT=<point>``, and the engine, on
reaching that point, logs it and waits there for good: whatever the test sees
written (the intent, the host's device) is then exactly what that step leaves.
Unset (always, outside tests), :func:`reached` returns at once.

Points: ``plug.claimed`` (the claim and its intent are written, the host not yet
called), ``plug.called`` (the host plugged the disk, the outcome is not yet
written), ``unplug.intended`` and ``unplug.called`` likewise; ``image.intended`` (a
floating disk and its image intent are written, the host not yet asked) and
``image.called`` (the host made the image, the disk is still locked).
"""

from __future__ import annotations

import asyncio
import logging
import os

log = logging.getLogger(__name__)

ENV = "DISKNAME_TEST_HOLD_AT"
POINTS = frozenset(
    {
        "plug.claimed",
        "plug.called",
        "unplug.intended",
        "unplug.called",
        "image.intended",
        "image.called",
    }
)


async def reached(point: str) -> None:
    """Hold here for good if a test asked to (``DISKNAME_TEST_HOLD_AT``)."""
    assert point in POINTS, point
    if os.environ.get(ENV) != point:
        return
    log.warning("held at %s for a test (%s)", point, ENV)
    await asyncio.Event().wait()
