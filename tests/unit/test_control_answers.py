"""Answers-only commands (service/control_loop.py): the in-process listeners hear them at
once, the bus a moment later, and a run in between sends its newer command instead."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

from service.control_loop import ANSWER_MAX_DELAY_S, ControlLoop
from service.state import ServiceState
from tests.unit.control_site import RecordingSink, meter_and_evse

NOW = 1_000_000.0


async def site(tmp_path: Path) -> tuple[ServiceState, ControlLoop, RecordingSink]:
    return await meter_and_evse(tmp_path, lambda: NOW, max_total_current=32_000, follow_time=1)


def report(service: ServiceState, dev_id: str, ts: float, **fields: Any) -> None:
    service.record_state(dev_id, json.dumps({"ts": ts, **fields}).encode())


async def test_an_answer_is_heard_in_process_at_once_and_on_the_bus_later(
    tmp_path: Path,
) -> None:
    state, loop, sink = await site(tmp_path)
    report(state, "M1", NOW - 0.5, current=[10_000] * 3)
    report(state, "E1", NOW - 0.5, state=3, current=[8000] * 3)
    await loop.run_once(refresh=False)
    first = sink.last_published("E1")
    # The same draw again: the command only answers the new state.
    report(state, "E1", NOW - 0.2, state=3, current=[8000] * 3)
    await loop.run_once(refresh=False)
    dev_id, heard = sink.previewed[-1]
    assert dev_id == "E1" and heard["state_ts"] == NOW - 0.2
    assert sink.last_published("E1") == first
    await asyncio.sleep(ANSWER_MAX_DELAY_S + 0.05)
    answer = sink.last_published("E1")
    assert answer["state_ts"] == NOW - 0.2
    assert answer["charging_current"] == first["charging_current"]


async def test_a_cut_in_between_is_never_followed_by_an_older_answer(tmp_path: Path) -> None:
    state, loop, sink = await site(tmp_path)
    report(state, "M1", NOW - 0.5, current=[10_000] * 3)
    report(state, "E1", NOW - 0.5, state=3, current=[8000] * 3)
    await loop.run_once(refresh=False)
    before = sink.last_published("E1")["charging_current"]
    report(state, "E1", NOW - 0.2, state=3, current=[8000] * 3)
    await loop.run_once(refresh=False)  # an answer waits
    # An overload before it went out: the cut goes at once and answers that state too.
    report(state, "M1", NOW - 0.1, current=[36_000] * 3)
    await loop.run_once(refresh=False)
    cut = sink.last_published("E1")
    assert cut["charging_current"] < before
    assert cut["state_ts"] == NOW - 0.2
    await asyncio.sleep(ANSWER_MAX_DELAY_S + 0.05)
    assert sink.last_published("E1") == cut


async def test_a_report_run_gives_way_to_a_meter_reading_that_comes_meanwhile(
    tmp_path: Path,
) -> None:
    state, loop, sink = await site(tmp_path)
    state.listeners.append(loop)  # as ControlLoop.running() does
    report(state, "M1", NOW - 0.5, current=[10_000] * 3)
    report(state, "E1", NOW - 0.5, state=3, current=[8000] * 3)
    await loop.run_once(refresh=False)
    before = sink.last_published("E1")["charging_current"]
    # A report starts a run; while it runs, an overload arrives (read from the bus at the
    # run's first look).
    report(state, "E1", NOW - 0.2, state=3, current=[8000] * 3)
    asyncio.get_running_loop().call_soon(
        lambda: report(state, "M1", NOW - 0.1, current=[36_000] * 3)
    )
    await loop.run_once(refresh=False)
    assert loop.stats.given_way == 1
    # The run that went out is the one with the overload: E1 is cut.
    assert sink.last_published("E1")["charging_current"] < before


async def test_a_run_for_a_meter_reading_does_not_give_way(tmp_path: Path) -> None:
    state, loop, _ = await site(tmp_path)
    state.listeners.append(loop)
    report(state, "E1", NOW - 0.5, state=3, current=[8000] * 3)
    report(state, "M1", NOW - 0.5, current=[10_000] * 3)
    asyncio.get_running_loop().call_soon(
        lambda: report(state, "M1", NOW - 0.1, current=[36_000] * 3)
    )
    await loop.run_once(refresh=False)
    assert loop.stats.given_way == 0
