"""The exposition service.metrics renders from a state built in memory."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from service.bus import BusStats
from service.control_loop import LoopStats
from service.core.allocation import allocate
from service.core.device_types import builtin_registry
from service.core.models import GroupConfig, Installation, Params
from service.metrics import Metrics
from service.state import ServiceState
from service.store import EnergyCounters, Store, UserBook

NOW = 1_700_000_000.0

DEVICES = {
    "M1": {"dev_type": "meter_ajax", "dev_id": "M1", "role": 3},
    "E1": {"dev_type": "evse_ajax", "dev_id": "E1", "used_phases": 7, "group": 1},
    "E2": {"dev_type": "evse_ajax", "dev_id": "E2", "used_phases": 7},
}


def make_state(tmp_path: Path) -> ServiceState:
    installation = Installation.model_validate(
        {
            "params": Params(max_total_current=32_000).model_dump(),
            "groups": [GroupConfig(id=1, max_current=20_000).model_dump()],
            "devices": DEVICES,
        }
    )
    return ServiceState(
        Store(tmp_path),
        builtin_registry(),
        installation,
        UserBook(),
        EnergyCounters(),
        clock=lambda: NOW,
    )


def record(target: ServiceState, dev_id: str, **fields: object) -> None:
    target.record_state(dev_id, json.dumps({"ts": NOW, **fields}).encode())


def run_allocation(state: ServiceState) -> None:
    result = allocate(state.allocation_input(NOW), state.memory)
    state.apply_allocation(result, NOW)


def samples(metrics: Metrics) -> dict[str, list[Sample]]:
    body, _ = metrics.render()
    return {family.name: family.samples for family in text_string_to_metric_families(body.decode())}


def value(found: dict[str, list[Sample]], name: str, **labels: str) -> float:
    everything = [s for family in found.values() for s in family]
    matches = [s.value for s in everything if s.name == name and s.labels == labels]
    assert len(matches) == 1, (name, labels, matches)
    return matches[0]


def assert_mqtt_counts(
    found: dict[str, list[Sample]],
    *,
    received: int,
    published: int,
    connects: int,
    rejected: dict[str, int],
) -> None:
    assert value(found, "chargebus_mqtt_messages_received_total") == received
    assert value(found, "chargebus_mqtt_messages_published_total") == published
    assert value(found, "chargebus_mqtt_connects_total") == connects
    for reason, count in rejected.items():
        assert value(found, "chargebus_mqtt_messages_rejected_total", reason=reason) == count


@pytest.fixture
def state(tmp_path: Path) -> ServiceState:
    return make_state(tmp_path)


def test_device_gauges_show_the_last_measurements(state: ServiceState) -> None:
    record(state, "E1", state=3, current=[16_000, 15_500, 0], power_w=7_300.5)
    record(state, "M1", current=[20_000, 21_000, 22_000], power_w=14_000)
    found = samples(Metrics(state))

    assert value(found, "chargebus_device_current_amperes", dev_id="E1", phase="L1") == 16.0
    assert value(found, "chargebus_device_current_amperes", dev_id="E1", phase="L2") == 15.5
    assert value(found, "chargebus_device_current_amperes", dev_id="M1", phase="L3") == 22.0
    assert value(found, "chargebus_device_power_watts", dev_id="E1") == 7_300.5
    assert value(found, "chargebus_device_power_watts", dev_id="M1") == 14_000
    # E2 never reported: it has no measurement, but its com_err gauge is there.
    assert not [s for s in found["chargebus_device_current_amperes"] if s.labels["dev_id"] == "E2"]
    assert value(found, "chargebus_device_com_err", dev_id="E2") == 0


def test_a_bridge_reported_communication_error_shows(state: ServiceState) -> None:
    record(state, "E1", state=3, com_err=True, last_error="timeout")
    found = samples(Metrics(state))
    assert value(found, "chargebus_device_com_err", dev_id="E1") == 1


def test_allocation_figures_follow_the_last_run(state: ServiceState) -> None:
    metrics = Metrics(state)
    assert samples(metrics)["chargebus_group_budget_amperes"] == []
    assert samples(metrics)["chargebus_evse_allocated_current_amperes"] == []

    record(state, "M1", current=[0, 0, 0])
    record(state, "E1", state=3, current=[0, 0, 0])
    record(state, "E2", state=3, current=[0, 0, 0])
    run_allocation(state)
    found = samples(metrics)

    assert state.allocation is not None
    for dev_id in ("E1", "E2"):
        commanded = state.allocation.evses[dev_id].charging_current
        assert commanded > 0
        assert (
            value(found, "chargebus_evse_allocated_current_amperes", dev_id=dev_id)
            == commanded / 1000
        )
    # Meters get no allocation.
    assert len(found["chargebus_evse_allocated_current_amperes"]) == 2
    for group, per_phase in state.allocation.budget_per_phase.items():
        for phase, milliamps in zip(("L1", "L2", "L3"), per_phase, strict=True):
            got = value(found, "chargebus_group_budget_amperes", group=str(group), phase=phase)
            assert got == milliamps / 1000
    assert {s.labels["group"] for s in found["chargebus_group_budget_amperes"]} >= {"0", "1"}


def test_bus_loop_and_modbus_counters(state: ServiceState) -> None:
    bus = BusStats(received=12, published=7, connects=2)
    bus.reject("not_json", "x")
    bus.reject("not_json", "y")
    bus.reject("unknown_device", "z")
    loop = LoopStats(runs=5, failures=1, commands_sent=9)
    metrics = Metrics(state, modbus_errors=lambda: {"E1": 3, "M1": 0})
    metrics.sources.bus = bus
    metrics.sources.loop = loop
    found = samples(metrics)

    assert_mqtt_counts(
        found, received=12, published=7, connects=2, rejected={"not_json": 2, "unknown_device": 1}
    )
    assert value(found, "chargebus_control_runs_total") == 5
    assert value(found, "chargebus_control_failures_total") == 1
    assert value(found, "chargebus_control_commands_sent_total") == 9
    assert value(found, "chargebus_modbus_errors_total", dev_id="E1") == 3

    # Read at scrape time: later changes show without re-registering anything.
    bus.received += 1
    loop.runs += 1
    found = samples(metrics)
    assert value(found, "chargebus_mqtt_messages_received_total") == 13
    assert value(found, "chargebus_control_runs_total") == 6


def test_a_failing_modbus_source_costs_only_its_family(state: ServiceState) -> None:
    def broken() -> dict[str, int]:
        raise RuntimeError("bridge gone")

    found = samples(Metrics(state, modbus_errors=broken))
    assert "chargebus_modbus_errors" not in found
    assert "chargebus_device_com_err" in found


def test_run_histogram_and_request_counter() -> None:
    metrics = Metrics()
    metrics.observe_run(0.0003)
    metrics.observe_run(0.02)
    metrics.count_request("get_dev_info", 200)
    metrics.count_request("get_dev_info", 200)
    metrics.count_request("set_params", 401)
    found = samples(metrics)

    runs = "chargebus_allocation_run_seconds"
    assert value(found, f"{runs}_count") == 2
    assert value(found, f"{runs}_bucket", le="0.0001") == 0
    assert value(found, f"{runs}_bucket", le="0.0005") == 1
    assert value(found, f"{runs}_bucket", le="1.0") == 2
    requests = "chargebus_http_requests_total"
    assert value(found, requests, cmd="get_dev_info", status="200") == 2
    assert value(found, requests, cmd="set_params", status="401") == 1
    # Without a state or stats attached there is nothing live to report.
    assert "chargebus_device_com_err" not in found


def test_each_metrics_object_has_its_own_registry() -> None:
    first, second = Metrics(), Metrics()
    first.count_request("get_dev_info", 200)
    assert "chargebus_http_requests" in samples(first)
    assert samples(second)["chargebus_http_requests"] == []


def test_render_gives_the_exposition_content_type() -> None:
    _, content_type = Metrics().render()
    assert content_type.startswith("text/plain")


def test_the_control_lane_counts_with_the_main_connection(state: ServiceState) -> None:
    main = BusStats(received=12, published=7, connects=1)
    main.reject("state", "x")
    lane = BusStats(received=5, published=1000, connects=2)
    lane.reject("state", "y")
    lane.reject("handler_error", "z")
    metrics = Metrics(state)
    metrics.sources.bus = main
    metrics.sources.lane = lane
    metrics.sources.loop = LoopStats(runs=3, given_way=2)
    found = samples(metrics)
    assert_mqtt_counts(
        found, received=17, published=1007, connects=3, rejected={"state": 2, "handler_error": 1}
    )
    assert value(found, "chargebus_control_given_way_total") == 2
    # Neither connection's own counts changed.
    assert main.received == 12 and lane.received == 5
