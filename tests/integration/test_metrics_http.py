"""GET /metrics on the running service: the exposition parses and follows the bus and /cnf."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable

import pytest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from service.app import RunningService
from tests.integration.conftest import IMMEDIATE, Api
from tests.integration.mqtt_observer import MqttObserver

pytestmark = pytest.mark.integration

E1 = {"dev_type": "evse_ajax", "dev_id": "E1", "used_phases": 7, "min_charging_cur": 6000}


async def scrape(api: Api, port: int) -> list[Sample]:
    async with api.session.get(f"http://127.0.0.1:{port}/metrics") as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"].startswith("text/plain")
        text = await resp.text()
    return [s for family in text_string_to_metric_families(text) for s in family.samples]


def find(samples: list[Sample], name: str, **labels: str) -> float | None:
    matches = [s.value for s in samples if s.name == name and s.labels == labels]
    return matches[0] if matches else None


async def scrape_until(
    api: Api, port: int, done: Callable[[list[Sample]], bool], timeout: float = 10
) -> list[Sample]:
    """Scrapes until `done` holds: the bus delivers in its own time."""
    deadline = time.monotonic() + timeout
    while True:
        samples = await scrape(api, port)
        if done(samples) or time.monotonic() > deadline:
            return samples
        await asyncio.sleep(0.05)


async def test_metrics_parse_and_count_cnf_requests(api: Api, service: RunningService) -> None:
    port = service.http_port
    await api.ok(cmd="get_dev_info")
    refused, _ = await api.get(cmd="set_params")  # needs admin and POST
    assert refused >= 400
    status, _ = await api.get(cmd="no_such_cmd")
    assert status == 400

    samples = await scrape(api, port)
    requests = "chargebus_http_requests_total"
    assert find(samples, requests, cmd="get_dev_info", status="200") == 1
    assert find(samples, requests, cmd="set_params", status=str(refused)) == 1
    # A client's made-up cmd does not become a label value of its own.
    assert find(samples, requests, cmd="unknown", status="400") == 1
    assert not [s for s in samples if s.labels.get("cmd") == "no_such_cmd"]
    # The service is connected and has run the allocation at least once by now.
    assert (find(samples, "chargebus_mqtt_connects_total") or 0) >= 1
    assert find(samples, "chargebus_allocation_run_seconds_count") is not None


async def test_a_cmd_in_a_form_body_is_counted(api: Api, service: RunningService) -> None:
    # Counted under the cmd the form named, answered or refused.
    async with api.session.post(api.url, data={"cmd": "get_dev_info"}, headers=api.admin) as resp:
        assert resp.status == 200
    async with api.session.post(api.url, data={"cmd": "set_user"}, headers=api.admin) as resp:
        assert resp.status == 400  # no JSON body
    samples = await scrape(api, service.http_port)
    assert find(samples, "chargebus_http_requests_total", cmd="get_dev_info", status="200") == 1
    assert find(samples, "chargebus_http_requests_total", cmd="set_user", status="400") == 1


async def test_device_gauge_follows_a_published_state(
    api: Api, service: RunningService, observer: MqttObserver, base_topic: str
) -> None:
    port = service.http_port
    await api.set_params(
        {"max_total_current": 32000, "cycle_time": 500, **IMMEDIATE, "devices": [E1]}
    )
    observer.publish(
        f"{base_topic}/devices/E1/state",
        json.dumps({"ts": time.time(), "state": 3, "current": [12500, 12000, 11500]}),
    )

    def shows_state(samples: list[Sample]) -> bool:
        # The state and the run that used it (report runs are spaced: a scrape may come
        # between them and show the verdict of before the first state).
        return (
            find(samples, "chargebus_device_current_amperes", dev_id="E1", phase="L1") is not None
            and find(samples, "chargebus_device_com_err", dev_id="E1") == 0
        )

    samples = await scrape_until(api, port, shows_state)
    current = "chargebus_device_current_amperes"
    assert find(samples, current, dev_id="E1", phase="L1") == 12.5
    assert find(samples, current, dev_id="E1", phase="L2") == 12.0
    assert find(samples, current, dev_id="E1", phase="L3") == 11.5
    assert find(samples, "chargebus_device_com_err", dev_id="E1") == 0
    assert (find(samples, "chargebus_mqtt_messages_received_total") or 0) >= 1

    def commanded(samples: list[Sample]) -> bool:
        # The run that used the state, not the one before it (E1 without a vehicle: 0 A);
        # report runs are spaced, so a scrape may come between the state and its run.
        found = find(samples, "chargebus_evse_allocated_current_amperes", dev_id="E1")
        return found is not None and found > 0

    samples = await scrape_until(api, port, commanded)
    allocated = find(samples, "chargebus_evse_allocated_current_amperes", dev_id="E1")
    assert allocated is not None and 6.0 <= allocated <= 32.0
    assert find(samples, "chargebus_group_budget_amperes", group="0", phase="L1") is not None
    assert (find(samples, "chargebus_control_commands_sent_total") or 0) >= 1


async def test_metrics_is_a_get_route(api: Api, service: RunningService) -> None:
    async with api.session.post(f"http://127.0.0.1:{service.http_port}/metrics") as resp:
        assert resp.status == 405


async def test_head_metrics_answers_like_get(api: Api, service: RunningService) -> None:
    """Monitoring probes ask with HEAD (issue 14 item 12: it answered 405)."""
    async with api.session.head(f"http://127.0.0.1:{service.http_port}/metrics") as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"].startswith("text/plain")
        assert await resp.read() == b""
