"""One OCPP bridge process with 200 simulated OCPP charge points; prints its figures.

Run: .venv/bin/python bench/bench_ocpp.py [--boxes 200] [--seconds 30]

Parts: a private mosquitto; the bridge as a process of its own (`python -m service bridge
ocpp`), whose CPU share (utime + stime from /proc/<pid>/stat over the window) and memory
(VmRSS at the end) are measured; this process plays the core (it publishes the retained
configs of 200 `evse_ocpp` devices, `status online`, `params` and a command for every
device every second, as the core's cycle does) and runs the 200 simulated charge points
(bridges/sim/ocpp_cp.py, a car plugged in each, meter values every 10 s).

Every 2 s, a quarter of the devices get a new current (profile changes): the latency is
from publishing that command to the simulated box receiving the SetChargingProfile that
carries it (same clock, this process). The floor, measured in the same run: a message
published to mosquitto and received back by this process (the bus part of the path).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bridges.sim.car import Car
from bridges.sim.ocpp_cp import SimChargePoint
from service.bus import MqttBus
from service.settings import MqttTarget
from tests.broker import MosquittoBroker, find_free_port

ROOT = Path(__file__).resolve().parent.parent
BASE = "bench-ocpp"
HOST = "127.0.0.1"


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))] if ordered else float("nan")


def cpu_ticks(pid: int) -> int:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def command(current: int) -> bytes:
    return json.dumps(
        {"device_enabled": True, "charging_enabled": True, "paused": False,
         "charging_current": current, "ts": time.time(), "state_ts": None},
        separators=(",", ":"),
    ).encode()  # fmt: skip


class Core:
    """Plays the core on the bus: configs, status, params, commands; and the floor probe."""

    def __init__(self, url: str, count: int) -> None:
        self.count = count
        self.dev_ids = [f"E{i}" for i in range(1, count + 1)]
        self.currents = dict.fromkeys(self.dev_ids, 16000)
        self.probes: dict[str, float] = {}
        self.floor: list[float] = []
        self.bus = MqttBus(
            MqttTarget.from_url(url),
            client_id=f"bench-ocpp-core-{os.getpid()}",
            subscriptions=[f"{BASE}/probe/#"],
            on_message=self.on_message,
        )

    def on_message(self, topic: str, payload: bytes, retained: bool) -> None:
        sent = self.probes.pop(topic, None)
        if sent is not None:
            self.floor.append(time.perf_counter() - sent)

    def configure(self) -> None:
        for i, dev_id in enumerate(self.dev_ids, start=1):
            config = {"dev_type": "evse_ocpp", "dev_id": dev_id, "address": f"BENCH-{i}",
                      "id": 1, "ocpp_meter_interval": 10}  # fmt: skip
            self.bus.hold_retained(f"{BASE}/devices/{dev_id}/config", json.dumps(config).encode())
        self.bus.hold_retained(f"{BASE}/status", b"online")
        self.bus.hold_retained(f"{BASE}/params", b'{"cycle_time":1000,"stale_time":0}')

    def send(self, dev_id: str) -> None:
        self.bus.publish_nowait(
            f"{BASE}/devices/{dev_id}/command", command(self.currents[dev_id]), qos=0
        )

    def probe(self, n: int) -> None:
        topic = f"{BASE}/probe/{n}"
        self.probes[topic] = time.perf_counter()
        self.bus.publish_nowait(topic, b"x", qos=0)


async def run(count: int, seconds: float, warmup: float) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="chargebus-bench-ocpp-") as tmp:
        workdir = Path(tmp)
        with MosquittoBroker(workdir / "broker") as broker:
            port = find_free_port()
            env = {k: v for k, v in os.environ.items() if not k.startswith("CHARGEBUS_")}
            env.update({"CHARGEBUS_MQTT_URL": broker.url, "CHARGEBUS_BASE_TOPIC": BASE,
                        "CHARGEBUS_OCPP_PORT": str(port), "CHARGEBUS_LOG_LEVEL": "WARNING"})
            log = (workdir / "bridge.log").open("wb")
            # Started once, before anything is measured: blocking here costs the run nothing.
            bridge = subprocess.Popen(  # noqa: ASYNC220
                [sys.executable, "-m", "service", "bridge", "ocpp"],
                cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
            )  # fmt: skip
            core = Core(broker.url, count)
            stop = asyncio.Event()
            try:
                async with core.bus:
                    await core.bus.wait_connected(10)
                    core.configure()
                    return await measure(core, bridge.pid, port, stop, seconds, warmup)
            finally:
                stop.set()
                bridge.send_signal(signal.SIGTERM)
                try:
                    bridge.wait(15)
                except subprocess.TimeoutExpired:
                    bridge.kill()
                    bridge.wait(5)
                log.close()


async def measure(
    core: Core, pid: int, port: int, stop: asyncio.Event, seconds: float, warmup: float
) -> dict[str, Any]:
    url = f"ws://{HOST}:{port}/ocpp/"
    boxes = [SimChargePoint(f"BENCH-{i}", url, meter_interval=10.0, tick_s=1.0,
                            cars=[Car(phases=3, capacity_wh=1e9)])
             for i in range(1, core.count + 1)]  # fmt: skip
    sent_at: dict[tuple[str, float], float] = {}
    latencies: list[float] = []
    # Each box reports the profiles it takes: match them to the command that asked.
    for box, dev_id in zip(boxes, core.dev_ids, strict=True):
        original = box.take_profile

        def taking(connector_id: int, profile: dict[str, Any], *, _o: Any = original,
                   _d: str = dev_id) -> Any:  # fmt: skip
            status = _o(connector_id, profile)
            limit = float(profile["charging_schedule"]["charging_schedule_period"][0]["limit"])
            started = sent_at.pop((_d, limit), None)
            if started is not None:
                latencies.append(time.perf_counter() - started)
            return status

        box.take_profile = taking  # type: ignore[method-assign]
    runners = [asyncio.create_task(box.run(stop)) for box in boxes]
    deadline = time.monotonic() + 60
    while not all(box.accepted.is_set() for box in boxes):
        if time.monotonic() > deadline:
            raise TimeoutError(f"{sum(b.accepted.is_set() for b in boxes)} of {len(boxes)} up")
        await asyncio.sleep(0.2)
    for box in boxes:
        box.plug(1)

    async def cycle(window: bool) -> None:
        n = 0
        tick = 0
        while not stop.is_set():
            tick += 1
            if window and tick % 2 == 0:
                # A quarter of the devices get a new current (6-16 A in whole amps).
                for dev_id in core.dev_ids[(tick // 2) % 4 :: 4]:
                    amps = 6 + (tick + int(dev_id[1:])) % 11
                    if core.currents[dev_id] != amps * 1000:
                        core.currents[dev_id] = amps * 1000
                        sent_at[(dev_id, float(amps))] = time.perf_counter()
            for dev_id in core.dev_ids:
                core.send(dev_id)
            core.probe(n)
            n += 1
            await asyncio.sleep(1.0)

    warm = asyncio.create_task(cycle(False))
    await asyncio.sleep(warmup)
    warm.cancel()
    latencies.clear()
    core.floor.clear()
    hz = os.sysconf("SC_CLK_TCK")
    ticks0, t0 = cpu_ticks(pid), time.monotonic()
    window = asyncio.create_task(cycle(True))
    await asyncio.sleep(seconds)
    window.cancel()
    ticks1, t1 = cpu_ticks(pid), time.monotonic()
    rss = rss_mib(pid)
    stop.set()
    for runner in runners:
        with contextlib.suppress(BaseException):
            await asyncio.wait_for(runner, 10)
    return {
        "boxes": core.count,
        "seconds": round(t1 - t0, 1),
        "cpu_percent": 100 * (ticks1 - ticks0) / hz / (t1 - t0),
        "rss_mib": rss,
        "changes": len(latencies),
        "p50_ms": 1000 * percentile(latencies, 0.5),
        "p99_ms": 1000 * percentile(latencies, 0.99),
        "floor_p50_ms": 1000 * percentile(core.floor, 0.5),
        "floor_p99_ms": 1000 * percentile(core.floor, 0.99),
        "mean_ms": 1000 * statistics.fmean(latencies) if latencies else float("nan"),
        "unanswered": sum(1 for _ in sent_at),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--boxes", type=int, default=200)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--warmup", type=float, default=12.0)
    args = parser.parse_args()
    figures = asyncio.run(run(args.boxes, args.seconds, args.warmup))
    print(f"OCPP bridge, {figures['boxes']} charge points, meter values every 10 s, "
          f"commands every 1 s, window {figures['seconds']} s")  # fmt: skip
    print(f"  bridge process: {figures['cpu_percent']:.1f} % of one core, "
          f"{figures['rss_mib']:.0f} MiB resident")  # fmt: skip
    print(f"  command -> SetChargingProfile at the box: {figures['changes']} changes, "
          f"p50 {figures['p50_ms']:.1f} ms, p99 {figures['p99_ms']:.1f} ms "
          f"(mean {figures['mean_ms']:.1f} ms; {figures['unanswered']} not seen)")  # fmt: skip
    print(f"  floor, a message through mosquitto and back: p50 {figures['floor_p50_ms']:.2f} ms, "
          f"p99 {figures['floor_p99_ms']:.2f} ms")  # fmt: skip


if __name__ == "__main__":
    main()
