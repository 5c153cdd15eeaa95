"""Runs every tests/scenarios/*.json: an installation, then steps in time with expectations.

A scenario file:

    {
      "description": "what it shows",
      "params": {...},                 Params fields
      "groups": [...],                 GroupConfig objects
      "users": [...],                  User objects
      "stale_after_s": 9,              optional (default 9)
      "utc_offset_s": 0,               optional
      "evses":  {"E1": {"config": {...}, "state": {...} | null, "age": 1.0,
                        "counted_current": [mA, mA, mA], "ramp_credit": 0,
                        "draw_spread": [mA, mA, mA], "commanded_above_max": 0,
                        "car_limit": 0, "own_ramp": 0}},
                                       all but config, state and age optional: what the
                                       control loop tells the allocation (EvseInput)
      "meters": {"M1": {"config": {...}, "state": {...} | null, "age": 1.0}},
      "steps": [
        {
          "now": 1000,
          "params": {...},             merged into the params from here on
          "evses": {"E1": {...}},      per device: "config" is merged, "state"/"age" replace
          "meters": {...},
          "events": [                  applied in order before allocating
            {"enter_rfid": {"rfid": "…", "dev_id": "E1"}, "expect": {"accepted": true}},
            {"override": {"dev_id": "E1", "flags": "C", "mamps": 8000}}
          ],
          "expect": {
            "E1": {"charging_current": 6000, "paused": false, ...},    EvseResult fields
            "allocation": {"grid_meter_lost": false, "notes_contain": ["…"], ...}
          }
        }
      ]
    }

Device configs get `dev_type` (evse_ajax / meter_ajax) and `dev_id` from their key unless
given; a state without `ts` gets the step's time. Memory is carried from step to step.
"""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path
from typing import Any

import pytest

from service.core.allocation import (
    Allocation,
    AllocationCache,
    AllocationInput,
    EvseInput,
    Memory,
    MeterInput,
    allocate,
    enter_rfid,
    override,
)
from service.core.allocation.model import NO_SPREAD
from service.core.models import (
    EvseConfig,
    EvseState,
    GroupConfig,
    MeterConfig,
    MeterState,
    Params,
    User,
)
from tests.allocation.checker import checked_allocate

SCENARIOS = Path(__file__).resolve().parent.parent / "scenarios"
FILES = sorted(SCENARIOS.glob("*.json"))


def test_there_are_enough_scenarios() -> None:
    assert len(FILES) >= 15


def _merge(base: dict[str, Any], update: dict[str, Any]) -> None:
    for key, value in update.items():
        if key == "config":
            base.setdefault("config", {}).update(value)
        else:
            base[key] = value


def _evse_input(dev_id: str, spec: dict[str, Any], now: float) -> EvseInput:
    config = {"dev_type": "evse_ajax", "dev_id": dev_id, **spec.get("config", {})}
    state = spec.get("state")
    counted = spec.get("counted_current")
    return EvseInput(
        EvseConfig.model_validate(config),
        None if state is None else EvseState.model_validate({"ts": now, **state}),
        spec.get("age", 1.0) if state is not None else None,
        None if counted is None else (int(counted[0]), int(counted[1]), int(counted[2])),
        int(spec.get("ramp_credit", 0)),
        _three(spec.get("draw_spread")) or NO_SPREAD,
        int(spec.get("commanded_above_max", 0)),
        int(spec.get("car_limit", 0)),
        int(spec.get("own_ramp", 0)),
    )


def _three(values: list[int] | None) -> tuple[int, int, int] | None:
    return None if values is None else (int(values[0]), int(values[1]), int(values[2]))


def _meter_input(dev_id: str, spec: dict[str, Any], now: float) -> MeterInput:
    config = {"dev_type": "meter_ajax", "dev_id": dev_id, **spec.get("config", {})}
    state = spec.get("state")
    return MeterInput(
        MeterConfig.model_validate(config),
        None if state is None else MeterState.model_validate({"ts": now, **state}),
        spec.get("age", 1.0) if state is not None else None,
    )


def _check_allocation(allocation: Allocation, expected: dict[str, Any], where: str) -> None:
    for key, want in expected.items():
        if key == "notes_contain":
            for fragment in want:
                assert any(fragment in n for n in allocation.notes), (
                    f"{where}: no note contains {fragment!r}: {allocation.notes}"
                )
        elif key == "budget_per_phase":
            got = {str(g): list(b) for g, b in allocation.budget_per_phase.items()}
            for group, budget in want.items():
                assert got[group] == budget, f"{where}: budget of group {group}: {got[group]}"
        elif key == "energy_wh":
            for dev_id, wh in want.items():
                assert math.isclose(allocation.energy_wh.get(dev_id, 0.0), wh, abs_tol=1e-6), (
                    f"{where}: energy of {dev_id}: {allocation.energy_wh.get(dev_id)}"
                )
        elif key == "com_err":
            for dev_id, flag in want.items():
                assert (dev_id in allocation.com_err) is flag, f"{where}: com_err of {dev_id}"
        else:
            got_value = getattr(allocation, key)
            assert got_value == want, f"{where}: {key} is {got_value!r}, expected {want!r}"


@pytest.mark.parametrize("path", FILES, ids=[p.stem for p in FILES])
def test_scenario(path: Path) -> None:
    scenario = json.loads(path.read_text())
    assert scenario.get("description"), f"{path.name} needs a description"
    run_scenario(scenario, path.stem)


def run_scenario(scenario: dict[str, Any], name: str) -> int:
    """Replays one scenario (a file's content) and asserts every expectation; returns the
    number of steps. Also replays what chargebus records while diagnostic logging is on."""
    # A scenario is a sequence of snapshots: the hold of the other load over time (a
    # control-loop matter, see hold_peaks) is off unless the scenario sets it.
    params_raw: dict[str, Any] = {"load_hold_time": 0, **scenario.get("params", {})}
    groups = [GroupConfig.model_validate(g) for g in scenario.get("groups", [])]
    users = {u["id"]: User.model_validate(u) for u in scenario.get("users", [])}
    evse_specs: dict[str, dict[str, Any]] = copy.deepcopy(scenario.get("evses", {}))
    meter_specs: dict[str, dict[str, Any]] = copy.deepcopy(scenario.get("meters", {}))
    stale = float(scenario.get("stale_after_s", 9))
    offset = int(scenario.get("utc_offset_s", 0))
    memory = Memory()
    cache = AllocationCache()  # carried from step to step, as the service does
    assert scenario["steps"], f"{name} has no steps"
    for number, step in enumerate(scenario["steps"], 1):
        where = f"{name} step {number}"
        now = float(step["now"])
        params_raw.update(step.get("params", {}))
        for dev_id, update in step.get("evses", {}).items():
            _merge(evse_specs.setdefault(dev_id, {}), update)
        for dev_id, update in step.get("meters", {}).items():
            _merge(meter_specs.setdefault(dev_id, {}), update)
        evses = {d: _evse_input(d, spec, now) for d, spec in evse_specs.items()}
        meters = {d: _meter_input(d, spec, now) for d, spec in meter_specs.items()}
        for event in step.get("events", []):
            if "enter_rfid" in event:
                args = event["enter_rfid"]
                memory, rfid_result = enter_rfid(
                    memory, args["rfid"], args.get("dev_id"), users, evses, now, stale
                )
                for key, want in event.get("expect", {}).items():
                    got_rfid = getattr(rfid_result, key)
                    assert got_rfid == want, f"{where}: enter_rfid {key}: {rfid_result}"
            elif "override" in event:
                args = event["override"]
                memory = override(memory, args["dev_id"], args.get("flags", ""), args.get("mamps"))
            else:
                raise AssertionError(f"{where}: unknown event {event}")
        inp = AllocationInput(
            params=Params.model_validate(params_raw),
            groups=groups,
            evses=evses,
            meters=meters,
            users=users,
            now=now,
            stale_after_s=stale,
            utc_offset_s=offset,
        )
        allocation = checked_allocate(inp, memory, cache)
        assert allocate(inp, memory) == allocation, f"{where}: not deterministic"
        memory = allocation.memory
        expected: dict[str, Any] = step.get("expect", {})
        assert expected, f"{where}: a step without expectations proves nothing"
        for dev_id, fields in expected.items():
            if dev_id == "allocation":
                _check_allocation(allocation, fields, where)
                continue
            result = allocation.evses[dev_id]
            for key, want in fields.items():
                got = getattr(result, key)
                assert got == want, f"{where}: {dev_id}.{key} is {got!r}, expected {want!r}"
        # The caller writes overdraft_cur back, as the allocation docstring asks.
        params_raw["overdraft_cur"] = allocation.overdraft_cur
    return len(scenario["steps"])
