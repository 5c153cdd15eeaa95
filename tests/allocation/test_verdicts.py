"""The per-EVSE verdict and wish, run after run with the cache the service keeps.

Two faults that once survived the whole suite are pinned down here: a cached verdict that
outlives the freshness of its state (a silent EVSE kept its current instead of counting as
lost), and the battery-saver and target reasons swapped for an EVSE of the common kind
(no users, rules or overrides). Each test asserts what the cached run itself returns, run
after run, and every run also goes through the checker (cached against plain).
"""

from __future__ import annotations

from typing import Any

import pytest

from service.core.allocation import (
    R_BATTERY_SAVE,
    R_COM_ERR,
    R_NO_CURRENT,
    R_OK,
    R_TARGET,
    Allocation,
    AllocationCache,
    AllocationInput,
    EvseInput,
    Memory,
    allocate,
    override,
)
from service.core.models import ChargingRule, EvseConfig, EvseState, Params, RfidEntry, User
from tests.allocation.checker import checked_allocate

NOW = 1_700_000_000.0
STALE = 9.0
USERS = {"u1": User(id="u1", rfids=[RfidEntry(id="R1")])}


def _input(evses: dict[str, EvseInput], now: float, fuse: int = 20_000) -> AllocationInput:
    return AllocationInput(
        params=Params(max_total_current=fuse),
        groups=[],
        evses=evses,
        meters={},
        users=USERS,
        now=now,
        stale_after_s=STALE,
    )


def _config(dev_id: str, **fields: Any) -> EvseConfig:
    return EvseConfig(dev_type="evse_ajax", dev_id=dev_id, used_phases=7, **fields)


def _runs(
    steps: list[AllocationInput], memory: Memory | None = None
) -> tuple[list[Allocation], list[Allocation]]:
    """Each step once through the service's way (one cache, carried) and once checked; the
    cached results and the checked ones."""
    memory = memory or Memory()
    cache, checked_cache = AllocationCache(), AllocationCache()
    cached: list[Allocation] = []
    checked: list[Allocation] = []
    for inp in steps:
        result = allocate(inp, memory, cache)
        cached.append(result)
        checked.append(checked_allocate(inp, memory, checked_cache))
        memory = result.memory
    return cached, checked


@pytest.mark.parametrize("new_state_object", [False, True], ids=["same state", "moved state"])
def test_a_cached_verdict_ends_when_its_state_goes_stale(new_state_object: bool) -> None:
    """Two cars share a 20 A fuse. E1 then falls silent: its last state grows old. From the
    run its age passes the staleness age, E1 is lost and counts at its maximum (16 A), so
    E2's minimum no longer fits. A verdict cached while E1 was fresh must not carry it on,
    whether the state is the very same object or a new one with only moved measurements."""
    e1, e2 = _config("E1"), _config("E2")
    state = EvseState(ts=NOW, state=3, current=[9000, 9000, 9000])
    other = EvseState(ts=NOW, state=3, current=[9000, 9000, 9000])
    steps = [
        _input({"E1": EvseInput(e1, state, 1.0), "E2": EvseInput(e2, other, 1.0)}, NOW + k)
        for k in range(3)
    ]
    late = state
    if new_state_object:
        late = state.model_copy(update={"current": [9100, 9000, 9000]})
    steps.append(
        _input({"E1": EvseInput(e1, late, STALE + 1), "E2": EvseInput(e2, other, 1.0)}, NOW + 3)
    )
    cached, _ = _runs(steps)
    for fresh in cached[:3]:
        assert fresh.evses["E1"].charging_current == 10_000
        assert fresh.evses["E2"].charging_current == 10_000
    lost = cached[3]
    assert lost.evses["E1"].reason == R_COM_ERR
    assert lost.evses["E1"].charging_current == 0
    assert "E1" in lost.com_err
    assert lost.evses["E2"].reason == R_NO_CURRENT  # 20 A - 16 A leaves less than 6 A
    assert lost.evses["E2"].charging_current == 0


# (min_charging_cur, battery_save_threshold, max_charging_cur, expected reason)
PAUSES = [
    (6000, 12_000, 10_000, R_BATTERY_SAVE),  # could charge, but not below the threshold
    (6000, 0, 5000, R_TARGET),  # its maximum is below its minimum
    (6000, 8000, 5000, R_TARGET),  # below min_charging_cur whatever the threshold
    (6000, 12_000, 12_000, R_OK),
]


@pytest.mark.parametrize(("minimum", "threshold", "maximum", "reason"), PAUSES)
@pytest.mark.parametrize("kind", ["plain", "users", "rules", "override"])
def test_a_target_below_the_minimum_says_why(
    kind: str, minimum: int, threshold: int, maximum: int, reason: str
) -> None:
    """battery_save and target, for every kind of EVSE (plain ones were once decided by a
    copy of the general code, with the two reasons swapped), in the first run and in the
    runs that follow from the cache."""
    extra: dict[str, Any] = {}
    rfid = ""
    memory = Memory()
    if kind == "users":
        extra["users"] = ["u1"]
        rfid = "R1"
    elif kind == "rules":
        # A rule that allows more than the maximum: the maximum still decides.
        extra["charging_rules"] = [ChargingRule(mode=0, current=32_000)]
    elif kind == "override":
        memory = override(memory, "E1", "", maximum)
        maximum = 32_000
    cfg = _config(
        "E1",
        min_charging_cur=minimum,
        battery_save_threshold=threshold,
        max_charging_cur=maximum,
        **extra,
    )
    state = EvseState(ts=NOW, state=2, rfid=rfid)
    steps = [_input({"E1": EvseInput(cfg, state, 1.0)}, NOW + k, fuse=32_000) for k in range(4)]
    cached, checked = _runs(steps, memory)
    for result in cached + checked:
        assert result.evses["E1"].reason == reason, (kind, result.evses["E1"])
        assert result.evses["E1"].paused == (reason != R_OK)
