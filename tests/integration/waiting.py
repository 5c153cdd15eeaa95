"""Waiting in integration tests for a condition another task or process brings about."""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable

import pytest

# A deadline for conditions, not a measurement: generous, as CI machines are shared.
WAIT_S = 15.0


async def eventually(
    check: Callable[[], bool | Awaitable[bool]], what: str, timeout: float = WAIT_S
) -> None:
    """Until `check()` (plain or awaitable) is true; fails the test after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if inspect.isawaitable(result):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            pytest.fail(f"not within {timeout:g} s: {what}")
        await asyncio.sleep(0.05)
