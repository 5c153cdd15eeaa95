"""The dashboard hub's updates: only what changed, merged within a tick, removals, sessions."""

from __future__ import annotations

import json
from typing import Any

from service.http.events import DashboardHub


def encode(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


def update_of(hub: DashboardHub) -> dict[str, Any]:
    data = hub._update_event().split(b"data: ", 1)[1]
    decoded: dict[str, Any] = json.loads(data)
    return decoded


async def test_an_update_holds_only_the_changed_fields_merged_within_a_tick() -> None:
    hub = DashboardHub(clock=lambda: 1000.0)
    hub.info("E1", encode({"dev_id": "E1", "is_evse": True, "state": 1, "current_l1": 0,
                           "name": "Garage", "total_energy": 500}))  # fmt: skip
    hub._broadcast()
    hub.info("E1", encode({"dev_id": "E1", "is_evse": True, "state": 2, "current_l1": 0,
                           "name": "Garage", "total_energy": 500}))  # fmt: skip
    hub.info("E1", encode({"dev_id": "E1", "is_evse": True, "state": 3, "current_l1": 6000,
                           "total_energy": 510}))  # fmt: skip
    update = update_of(hub)
    assert update["infos"] == [
        {"dev_id": "E1", "state": 3, "current_l1": 6000, "total_energy": 510, "name": None}
    ]
    # A vehicle arrived: its session counts from the energy counter then.
    assert update["sessions"] == {"E1": [500.0, 1000]}
    assert b'"state":3' in hub.snapshot()
    hub.close()


async def test_a_removed_device_is_named_and_leaves_the_snapshot() -> None:
    hub = DashboardHub()
    hub.info("M1", encode({"dev_id": "M1", "power_w": 5}))
    hub._broadcast()
    hub.removed("M1")
    assert update_of(hub)["removed"] == ["M1"]
    assert json.loads(hub.snapshot())["infos"] == []
    hub.close()


async def test_params_bring_the_group_tree_when_it_changed() -> None:
    groups = [{"id": 1, "name": "Garage", "parent": 0, "max_current": 16000}]
    hub = DashboardHub(groups=lambda: groups)
    hub.params(encode({"max_total_current": 25000}))
    update = update_of(hub)
    assert update["params"] == {"max_total_current": 25000}
    assert update["groups"] == groups
    hub._broadcast()
    hub.params(encode({"max_total_current": 32000}))
    assert "groups" not in update_of(hub)
    hub.close()
