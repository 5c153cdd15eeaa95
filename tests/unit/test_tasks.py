"""Stopping tasks that may lose a cancellation (bridges/common/tasks.py)."""

from __future__ import annotations

import asyncio

from bridges.common.tasks import cancelled


async def test_a_task_that_loses_a_cancellation_is_cancelled_again_until_it_ends() -> None:
    lost = 0

    async def loop_of_calls() -> None:
        # As a loop of OCPP calls behaves when Python 3.11's wait_for loses the cancellation
        # of a call whose answer came at that moment: it goes on.
        nonlocal lost
        while True:
            try:
                await asyncio.sleep(0.05)
            except asyncio.CancelledError:
                if lost < 2:
                    lost += 1
                    continue
                raise

    task = asyncio.create_task(loop_of_calls())
    await asyncio.sleep(0)
    await asyncio.wait_for(cancelled(task), 5)
    assert task.cancelled()
    assert lost == 2


async def test_an_error_on_the_way_out_is_taken() -> None:
    async def fails_at_cancel() -> None:
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            raise RuntimeError("closing a closed connection") from None

    task = asyncio.create_task(fails_at_cancel())
    await asyncio.sleep(0)
    await cancelled(task)
    assert isinstance(task.exception(), RuntimeError)
