"""HTTP-input throughput: set_ajax_meter (and set_ajax_evse) through /cnf onto the bus.

Run: .venv/bin/python bench/bench_http_input.py [--seconds 5] [--connections 8] [--no-evse]

chargebus runs as its own process (`python -m service run`) against a private mosquitto. An
aiohttp client keeps `--connections` requests in flight (one keep-alive connection each, one
meter each, with basic auth as curl sends it) for `--seconds`; a paho subscriber counts the
states that arrive on `devices/+/state`, to show that every "ok" put a state on the bus.
Latency is measured per request, from sending it to reading the answer.

set_ajax_evse is measured the same way but is a round trip through the core: the answer is
the command the load manager published for that very state.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from base64 import b64encode
from pathlib import Path
from typing import Any

import aiohttp
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.broker import MosquittoBroker
from tests.integration.service_process import ServiceProcess

PASSWORD = "bench-admin-pw"
BASE = "bench"
AUTH = {"Authorization": "Basic " + b64encode(f"admin:{PASSWORD}".encode()).decode()}
METER_BODY = {
    "model": "Bench",
    "import_wh": 12345,
    "export_wh": 23456,
    "voltage": [231, 232, 233],
    "current": [10001, 10002, 10003],
}
EVSE_BODY = {"state": 3, "current": [6000, 6000, 6000], "max_charging_current": 16000}


class StateCounter:
    """Counts states per device as any MQTT client would see them."""

    def __init__(self, host: str, port: int) -> None:
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="bench-http-input")
        self.client.on_message = self._on_message
        self.lock = threading.Lock()
        self.count = 0
        self.subscribed = threading.Event()
        self.client.on_subscribe = lambda *args: self.subscribed.set()
        self.client.connect(host, port)
        self.client.loop_start()
        self.client.subscribe(f"{BASE}/devices/+/state", qos=1)
        if not self.subscribed.wait(10):
            raise TimeoutError("no SUBACK from the broker")

    def _on_message(self, client: Any, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        with self.lock:
            self.count += 1

    def reset(self) -> None:
        with self.lock:
            self.count = 0

    def wait_for(self, expected: int, timeout: float = 10.0) -> int:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                if self.count >= expected:
                    return self.count
            time.sleep(0.02)
        return self.count

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


async def wait_known(session: aiohttp.ClientSession, url: str, cmd: str, dev_id: str) -> None:
    """Until the bridge has learned the device from its retained config (404 before)."""
    deadline = time.monotonic() + 20
    body = METER_BODY if cmd == "set_ajax_meter" else EVSE_BODY
    while time.monotonic() < deadline:
        async with session.post(
            url, params={"cmd": cmd, "dev_id": dev_id}, json=body, headers=AUTH
        ) as resp:
            await resp.read()
            if resp.status == 200:
                return
        await asyncio.sleep(0.05)
    raise TimeoutError(f"the service never accepted {cmd} for {dev_id}")


async def drive(
    url: str, cmd: str, dev_ids: list[str], seconds: float
) -> tuple[list[float], int, int]:
    """Keeps one request per device in flight; latencies (ms) of the OK ones, OK and failed."""
    body = json.dumps(METER_BODY if cmd == "set_ajax_meter" else EVSE_BODY).encode()
    headers = {"Content-Type": "application/json", **AUTH}
    latencies: list[float] = []
    failed = 0
    connector = aiohttp.TCPConnector(limit=len(dev_ids))
    async with aiohttp.ClientSession(connector=connector) as session:
        for dev_id in dev_ids:
            await wait_known(session, url, cmd, dev_id)
        end = time.monotonic() + seconds

        async def worker(dev_id: str) -> None:
            nonlocal failed
            params = {"cmd": cmd, "dev_id": dev_id}
            while time.monotonic() < end:
                started = time.perf_counter()
                async with session.post(url, params=params, data=body, headers=headers) as resp:
                    await resp.read()
                    if resp.status == 200:
                        latencies.append((time.perf_counter() - started) * 1000)
                    else:
                        failed += 1

        await asyncio.gather(*(worker(d) for d in dev_ids))
    return latencies, len(latencies), failed


def percentile(sorted_values: list[float], q: float) -> float:
    return sorted_values[min(len(sorted_values) - 1, int(len(sorted_values) * q))]


def report(name: str, latencies: list[float], failed: int, seconds: float, states: int) -> None:
    latencies.sort()
    ok = len(latencies)
    print(
        f"{name:<15} {ok / seconds:>8.0f} {statistics.median(latencies):>8.2f} "
        f"{percentile(latencies, 0.99):>8.2f} {ok:>8} {failed:>7} {states:>8}"
    )


def run(args: argparse.Namespace, workdir: Path) -> None:
    n = args.connections
    with MosquittoBroker(workdir / "broker") as broker:
        env = {
            "CHARGEBUS_MQTT_URL": broker.url,
            "CHARGEBUS_BASE_TOPIC": BASE,
            "CHARGEBUS_ADMIN_PASSWORD": PASSWORD,
            "CHARGEBUS_LOG_LEVEL": "WARNING",
            "CHARGEBUS_HA_DISCOVERY": "false",
        }
        (workdir / "data").mkdir()
        with ServiceProcess(workdir / "data", workdir / "service.log", env) as svc:
            svc.wait_ready()
            meters = [f"M{i}" for i in range(1, n + 1)]
            evses = [f"E{i}" for i in range(1, n + 1)]
            devices: list[dict[str, Any]] = [
                {"dev_type": "meter_ajax", "dev_id": m, "role": 3 if m == "M1" else 0}
                for m in meters
            ]
            devices += [{"dev_type": "evse_ajax", "dev_id": e, "used_phases": 7} for e in evses]
            svc.set_params({"max_total_current": 1_000_000, "devices": devices}, PASSWORD)
            counter = StateCounter(broker.host, broker.port)
            try:
                print(
                    f"HTTP input through /cnf: {n} connections, {args.seconds:g} s each, "
                    f"{os.cpu_count()} CPUs"
                )
                print(
                    f"{'cmd':<15} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'ok':>8} "
                    f"{'failed':>7} {'states':>8}"
                )
                phases = [("set_ajax_meter", meters)]
                if not args.no_evse:
                    phases.append(("set_ajax_evse", evses))
                for cmd, dev_ids in phases:
                    # Warm-up requests (wait_known) are counted too: subtract them below.
                    counter.reset()
                    latencies, ok, failed = asyncio.run(drive(svc.url, cmd, dev_ids, args.seconds))
                    warmup = len(dev_ids)
                    states = counter.wait_for(ok + warmup) - warmup
                    report(cmd, latencies, failed, args.seconds, states)
                    if states != ok:
                        print(f"  !! {ok} requests answered ok but {states} states arrived")
            finally:
                counter.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--no-evse", action="store_true", help="only set_ajax_meter")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="chargebus-bench-http-") as tmp:
        run(args, Path(tmp))


if __name__ == "__main__":
    main()
