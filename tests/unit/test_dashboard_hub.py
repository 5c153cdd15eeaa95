"""The dashboard hub's updates: only what changed, merged within a tick, removals, sessions;
no decoding while nobody watches; the places per address."""

from __future__ import annotations

import json
from typing import Any

import pytest
from aiohttp import web

from service.http.events import DashboardHub


def encode(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


def update_of(hub: DashboardHub) -> dict[str, Any]:
    data = hub._update_event().split(b"data: ", 1)[1]
    decoded: dict[str, Any] = json.loads(data)
    return decoded


async def test_an_update_holds_only_the_changed_fields_merged_within_a_tick() -> None:
    hub = DashboardHub(clock=lambda: 1000.0)
    hub.attach("127.0.0.1")
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


async def test_nobody_watching_no_meter_info_is_decoded_and_a_snapshot_is_complete(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    now = [1000.0]
    hub = DashboardHub(clock=lambda: now[0])
    hub.info("M1", encode({"dev_id": "M1", "power_w": 5}))
    hub.info("E1", encode({"dev_id": "E1", "is_evse": True, "state": 1, "total_energy": 500}))
    decoded: list[bytes] = []
    real_loads = json.loads

    def counting_loads(data: Any) -> Any:
        decoded.append(data)
        return real_loads(data)

    monkeypatch.setattr(json, "loads", counting_loads)  # as events.py calls it
    for watts in range(6, 50):
        hub.info("M1", encode({"dev_id": "M1", "power_w": watts}))
    assert decoded == []
    # An EVSE's info is still read for its session: a vehicle arrives while nobody watches.
    now[0] = 1010.0
    hub.info("E1", encode({"dev_id": "E1", "is_evse": True, "state": 3, "total_energy": 510}))
    now[0] = 1020.0
    hub.info("E1", encode({"dev_id": "E1", "is_evse": True, "state": 3, "total_energy": 520}))
    # Nothing diffed for nobody.
    assert "infos" not in update_of(hub)
    monkeypatch.undo()
    hub.attach("127.0.0.1")
    snapshot = json.loads(hub.snapshot())
    assert {i["dev_id"]: i for i in snapshot["infos"]}["M1"]["power_w"] == 49
    assert snapshot["sessions"] == {"E1": [510.0, 1010]}
    # Watched again: deltas against what the snapshot held.
    hub.info("M1", encode({"dev_id": "M1", "power_w": 50}))
    assert update_of(hub)["infos"] == [{"dev_id": "M1", "power_w": 50}]
    hub.close()


async def test_one_address_gets_a_few_places_and_gets_them_back() -> None:
    hub = DashboardHub(max_per_address=2, max_clients=10)
    first = hub.attach("10.0.0.1")
    hub.attach("10.0.0.1")
    with pytest.raises(web.HTTPTooManyRequests):
        hub.attach("10.0.0.1")
    # IPv6: one /64 is one address; IPv4 mapped into IPv6 is the IPv4 address.
    hub.attach("2001:db8::1")
    hub.attach("2001:db8::2")
    with pytest.raises(web.HTTPTooManyRequests):
        hub.attach("2001:db8::ffff:1")
    with pytest.raises(web.HTTPTooManyRequests):
        hub.attach("::ffff:10.0.0.1")
    hub.attach("2001:db8:0:1::1")
    hub.attach("10.0.0.2")
    assert hub.refused == 3
    hub.detach(first)
    hub.attach("10.0.0.1")
    assert hub.clients == 6
    hub.close()
