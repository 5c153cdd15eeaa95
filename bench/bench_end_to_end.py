"""End-to-end reaction time through a real mosquitto on loopback; prints a table.

Run: .venv/bin/python bench/bench_end_to_end.py [--quick] [--sizes 10,1000]

chargebus runs as its own process (`python -m service run`) against a private mosquitto
(`set_tcp_nodelay true`). The EVSEs report that they charge; then the grid meter alternates
between a normal reading and one with more non-EVSE load on every phase than the headroom
left, which forces a reduction of every EVSE's current. Measured, in this process: from just
before publishing an overload reading to the arrival of the last command the service sent in
answer to it (a command whose `ts` is after the publish; the burst is over when no command
has come for 0.3 s). Only the overload readings are timed: those are the ones a fuse cares
about. The cycle refresh is set to 60 s so that it does not mix into the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from service.core.control_law import NO_WAITS
from tests.broker import MosquittoBroker
from tests.integration.service_process import ServiceProcess

PASSWORD = "bench-admin-pw"
BASE = "bench"
QUIET_S = 0.3
CONTROL_KEYS = ("device_enabled", "charging_enabled", "paused", "charging_current")


class Recorder:
    def __init__(self, host: str, port: int) -> None:
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="bench-e2e")
        self.client.on_message = self._on_message
        self.lock = threading.Lock()
        # arrival, dev_id, command ts: only commands that differ from the device's previous
        # one (the cycle refresh repeats unchanged commands; those are no reaction).
        self.commands: list[tuple[float, str, float]] = []
        self.last: dict[str, tuple[object, ...]] = {}
        self.last_arrival = 0.0
        self.subscribed = threading.Event()
        self.client.on_subscribe = lambda *args: self.subscribed.set()
        self.client.connect(host, port)
        self.client.loop_start()
        self.client.subscribe(f"{BASE}/devices/+/command", qos=1)
        if not self.subscribed.wait(10):
            raise TimeoutError("no SUBACK from the broker")

    def _on_message(self, client: Any, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        arrived = time.monotonic()
        try:
            command = json.loads(msg.payload)
            ts = float(command["ts"])
            control = tuple(command[k] for k in CONTROL_KEYS)
        except (ValueError, KeyError, TypeError):
            return
        dev_id = msg.topic.split("/")[2]
        with self.lock:
            self.last_arrival = arrived
            if self.last.get(dev_id) != control:
                self.last[dev_id] = control
                self.commands.append((arrived, dev_id, ts))

    def publish(self, dev_id: str, payload: dict[str, Any]) -> None:
        self.client.publish(f"{BASE}/devices/{dev_id}/state", json.dumps(payload), qos=0)

    def burst_after(self, wall_ts: float, timeout: float = 10.0) -> tuple[float, int]:
        """Arrival of the last command answering a publish at `wall_ts`, and how many."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            time.sleep(0.02)
            with self.lock:
                answer = [c for c in self.commands if c[2] >= wall_ts]
            if answer and time.monotonic() - answer[-1][0] > QUIET_S:
                return answer[-1][0], len(answer)
        raise TimeoutError("no command answered the overload")

    def wait_quiet(self, quiet_s: float, timeout: float) -> None:
        """Returns once commands have come and then none for `quiet_s`."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            time.sleep(0.1)
            with self.lock:
                last = self.last_arrival
            if last and time.monotonic() - last > quiet_s:
                return
        raise TimeoutError("the service did not settle")

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def site(n: int) -> dict[str, Any]:
    """n three-phase EVSEs of 6-16 A behind a fuse that fits all of them at about 10 A."""
    # Meter readings stop at 2,000 A per phase (the models' range): leave room for overload.
    per_phase = min(1_600_000, n * 10_000)
    devices: list[dict[str, Any]] = [
        {"dev_type": "meter_ajax", "dev_id": "M1", "role": 3, "name": "grid"}
    ]
    devices += [
        {
            "dev_type": "evse_ajax",
            "dev_id": f"E{i}",
            "used_phases": 7 if n <= 200 else 1 << (i % 3),
            "pause_min_time": 0,
        }
        for i in range(1, n + 1)
    ]
    return {
        "max_total_current": per_phase,
        "cycle_time": 60_000,
        "stale_time": 3_600_000,
        # What is measured is how fast a cut answers an overload, and cuts never wait. The
        # control law's waits (they delay raises) and its hold of the other load would leave
        # nothing to cut in the next round: off, as in the plumbing tests.
        **NO_WAITS,
        "devices": devices,
    }


def measure(n: int, rounds: int, workdir: Path, verbose: bool = False) -> dict[str, float]:
    run_dir = Path(tempfile.mkdtemp(dir=workdir, prefix=f"{n}-"))
    with MosquittoBroker(run_dir / "broker") as broker:
        env = {
            "CHARGEBUS_MQTT_URL": broker.url,
            "CHARGEBUS_BASE_TOPIC": BASE,
            "CHARGEBUS_ADMIN_PASSWORD": PASSWORD,
            "CHARGEBUS_LOG_LEVEL": os.environ.get("BENCH_LOG_LEVEL", "WARNING"),
        }
        (run_dir / "data").mkdir()
        with ServiceProcess(run_dir / "data", run_dir / "service.log", env) as svc:
            svc.wait_ready()
            body = site(n)
            svc.set_params(body, PASSWORD)
            recorder = Recorder(broker.host, broker.port)
            try:
                limit = body["max_total_current"]
                evses = body["devices"][1:]
                per_phase_count = max(
                    sum(1 for d in evses if d["used_phases"] & (1 << p)) for p in range(3)
                )
                # The EVSEs draw 60 % of the fuse together, at most 6 A each.
                each = min(6000, limit * 6 // 10 // per_phase_count)
                draw = [0, 0, 0]
                for device in evses:
                    phases = device["used_phases"]
                    current = [each if phases & (1 << p) else 0 for p in range(3)]
                    draw = [a + b for a, b in zip(draw, current, strict=True)]
                    recorder.publish(device["dev_id"], {"state": 3, "current": current})
                # What the grid meter sees: the EVSEs' draw plus other load.
                normal = [d + limit // 10 for d in draw]
                overload = [d + limit // 2 for d in draw]
                latencies: list[float] = []
                counts: list[int] = []
                recorder.publish("M1", {"current": normal})
                # Start-up work (a thousand configs, infos and Home Assistant announcements
                # going out) is not what is measured: wait until the service is quiet.
                recorder.wait_quiet(quiet_s=2.0, timeout=120)
                for _ in range(rounds):
                    recorder.publish("M1", {"current": normal})
                    time.sleep(QUIET_S + 0.1)
                    wall = time.time()
                    started = time.monotonic()
                    recorder.publish("M1", {"current": overload, "ts": wall})
                    try:
                        last, count = recorder.burst_after(wall)
                    except TimeoutError:
                        sys.stderr.write(svc.log())
                        raise
                    latencies.append((last - started) * 1000)
                    counts.append(count)
            finally:
                recorder.close()
    if verbose:
        rounds_text = " ".join(f"{x:.1f}" for x in latencies)
        print(f"  {n} EVSEs, each round in ms: {rounds_text}", file=sys.stderr)
    latencies.sort()
    return {
        "p50": statistics.median(latencies),
        "p99": latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))],
        "max": latencies[-1],
        "commands": statistics.median(counts),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="few rounds (a smoke run)")
    parser.add_argument("--sizes", default="10,1000")
    parser.add_argument("--verbose", action="store_true", help="print every round's latency")
    args = parser.parse_args()
    rounds = 10 if args.quick else 200
    print(
        "end to end: overload reading → last reduced command "
        f"({rounds} rounds, {os.cpu_count()} CPUs)"
    )
    print(f"{'EVSEs':>6} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8} {'commands':>9}")
    with tempfile.TemporaryDirectory(prefix="chargebus-bench-") as tmp:
        for n in (int(s) for s in args.sizes.split(",")):
            r = measure(n, rounds if n <= 100 else max(10, rounds // 4), Path(tmp), args.verbose)
            print(
                f"{n:>6} {r['p50']:>8.2f} {r['p99']:>8.2f} {r['max']:>8.2f} "
                f"{r['commands']:>9.0f}"
            )


if __name__ == "__main__":
    main()
