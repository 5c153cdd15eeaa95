"""Stopping tasks that may lose a cancellation.

Python 3.11's `asyncio.wait_for` (inside the `ocpp` library's `ChargePoint.call`) loses a
cancellation that comes just as the call's answer arrives: the task goes on as if it had never
been cancelled. A `while True` loop of OCPP calls then runs on, and a single `await` of the
task after one `cancel()` waits for ever (seen under load in CI: the OCPP simulator's stop
hung past its grace). Fixed in Python 3.12, which reimplements `wait_for`.
"""

from __future__ import annotations

import asyncio
from typing import Any

# How long to wait for a cancelled task before cancelling it again.
RECANCEL_S = 0.1


async def cancelled(task: asyncio.Task[Any]) -> None:
    """Cancels `task` and waits until it has ended, cancelling again while it goes on. What
    it raised on the way out is taken and dropped: at a stop it is no news."""
    while not task.done():
        task.cancel()
        await asyncio.wait({task}, timeout=RECANCEL_S)
    if not task.cancelled():
        task.exception()
