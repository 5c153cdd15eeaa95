"""For the unit tests of the control loop: a site of one grid meter (M1) and one EVSE (E1) on
all three phases, and a CommandSink that keeps what the loop gives it."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from service.app import device_registry
from service.control_loop import ControlLoop
from service.core.control_law import NO_WAITS
from service.state import ServiceState
from service.store import Store


class RecordingSink:
    """The control loop's CommandSink: keeps every command published and previewed, decoded."""

    def __init__(self) -> None:
        self.published: list[tuple[str, dict[str, Any]]] = []
        self.previewed: list[tuple[str, dict[str, Any]]] = []

    def publish_command(self, dev_id: str, payload: bytes) -> None:
        self.published.append((dev_id, json.loads(payload)))

    def preview_command(self, dev_id: str, payload: bytes) -> None:
        self.previewed.append((dev_id, json.loads(payload)))

    def flush_commands(self) -> None:
        pass

    def results_changed(self, dev_ids: set[str], params: bool) -> None:
        pass

    def last_published(self, dev_id: str) -> dict[str, Any]:
        return [c for d, c in self.published if d == dev_id][-1]


async def meter_and_evse(
    tmp_path: Path, clock: Callable[[], float], *, max_total_current: int, follow_time: int
) -> tuple[ServiceState, ControlLoop, RecordingSink]:
    """The site, with no waits, and a control loop for it that sends to a RecordingSink; both
    on `clock`."""
    state = ServiceState.load(Store(tmp_path), device_registry())
    state.clock = clock
    await state.set_params(
        {
            "max_total_current": max_total_current,
            **NO_WAITS,
            "follow_time": follow_time,
            "devices": [
                {"dev_type": "meter_ajax", "dev_id": "M1", "role": 3},
                {"dev_type": "evse_ajax", "dev_id": "E1", "used_phases": 7},
            ],
        }
    )
    sink = RecordingSink()
    return state, ControlLoop(state, sink, clock=clock), sink
