"""One Modbus bridge polling 100 simulated devices every second; prints its figures.

Run: .venv/bin/python bench/bench_modbus.py [--quick] [--seconds 30]

The site resembles a car park: 34 simulated cFos Power Brains, each one Modbus TCP endpoint
with several Modbus ids behind it (EVSE id 1, meters ids 2 and 3), minus the last Power
Brain's two meters: 34 EVSEs + 66 meters = 100 devices on 34 connections, each device polled
with `poll_interval: 1000`. Every Power Brain has a car plugged in, so the core sends
commands and the bridge writes them too, as it would in use.

Parts, each its own process except where noted: a private mosquitto; the simulators (this
file run with `--serve-sim`, so that their CPU is not the bridge's); the core
(`python -m service run` with CHARGEBUS_MODBUS_BRIDGE=false), configured over cmd=set_params.

Phase 1, the bridge as a process (`python -m service bridge modbus`): its CPU share from
/proc/<pid>/stat (utime + stime) over the window, and what a paho subscriber sees on
`{base}/devices/+/state`: states per second per device and in total, the bus latency
(arrival versus the state's `ts`, taken when the poll finished) and states with `com_err`.

Phase 2, the same bridge in this process (ModbusBridge with keep_latencies=True, after the
process of phase 1 has stopped, so only one bridge polls at a time): each poll's duration
(the Modbus reads, including waiting for the endpoint's connection, which the three ids of
a Power Brain share), polls and errors from its stats.

Rates are per device from its first to its last poll in the window (for the process, the
states' `ts`; in-process, when the worker's poll count moved, sampled every 10 ms), summed
for the total. The last line counts the fail-safe writes the bridge logged: the core is
online all along, so each one is a fail-safe applied before the bridge heard the core's
retained status.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.broker import MosquittoBroker, find_free_port
from tests.integration.service_process import ServiceProcess

ROOT = Path(__file__).resolve().parent.parent
PASSWORD = "bench-admin-pw"
BASE = "bench"
HOST = "127.0.0.1"
POWERBRAINS = 34
DEVICES = 100
POLL_MS = 1000
METER_IDS = (2, 3)
READY_TIMEOUT_S = 30.0
SAMPLE_S = 0.01
# What the bridge logs when it writes an EVSE's fail-safe current.
FAILSAFE_WARNING = "applying the fail-safe current"


# -- pure logic ----------------------------------------------------------------------------


def site_devices(ports: Sequence[int], count: int = DEVICES) -> list[dict[str, Any]]:
    """EVSE and meters of each Power Brain in turn, cut at `count`: the cut falls on the
    last Power Brain's meters, so every wallbox is there."""
    devices: list[dict[str, Any]] = []
    for i, port in enumerate(ports, start=1):
        address = f"{HOST}:{port}"
        devices.append(
            {
                "dev_type": "evse_powerbrain",
                "dev_id": f"E{i}",
                "address": address,
                "id": 1,
                "poll_interval": POLL_MS,
                "pause_min_time": 0,
            }
        )
        devices += [
            {
                "dev_type": "meter_powerbrain",
                "dev_id": f"M{i}_{unit}",
                "address": address,
                "id": unit,
                "poll_interval": POLL_MS,
            }
            for unit in METER_IDS
        ]
    evses = [d for d in devices if d["dev_type"] == "evse_powerbrain"]
    meters = [d for d in devices if d["dev_type"] != "evse_powerbrain"]
    return evses + meters[: max(0, count - len(evses))]


def cpu_ticks(stat_line: str) -> int:
    """utime + stime from a /proc/<pid>/stat line. The command name (field 2) may hold
    spaces and parentheses, so the fields are counted after its last ')'."""
    fields = stat_line[stat_line.rindex(")") + 2 :].split()
    # fields[0] is field 3 (state); utime and stime are fields 14 and 15.
    return int(fields[11]) + int(fields[12])


def count_failsafe_starts(log_text: str) -> int:
    return log_text.count(FAILSAFE_WARNING)


def cpu_percent(ticks: int, seconds: float, hz: int) -> float:
    """Share of one core."""
    return 100.0 * ticks / hz / seconds if seconds > 0 else 0.0


def percentile(values: Sequence[float], fraction: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * fraction))]


@dataclass
class Span:
    """When a device's polls were seen first and last in the window, and how many came
    after the first. A rate from this is not quantised by the window's edges, which for
    devices started together would bias all of them the same way."""

    first: float
    last: float
    polls: int = 0

    def see(self, when: float, polls: int = 1) -> None:
        self.last = when
        self.polls += polls

    @property
    def rate(self) -> float:
        return self.polls / (self.last - self.first) if self.last > self.first else 0.0


def seen(spans: dict[str, Span], dev_id: str, when: float, polls: int = 1) -> None:
    span = spans.get(dev_id)
    if span is None:
        spans[dev_id] = Span(when, when)
    else:
        span.see(when, polls)


@dataclass(frozen=True)
class Rates:
    total: float
    per_device_min: float
    per_device_median: float
    per_device_max: float
    silent: int  # configured devices with fewer than two polls in the window


def rates(spans: dict[str, Span], dev_ids: Sequence[str]) -> Rates:
    per_device = [spans[d].rate if d in spans else 0.0 for d in dev_ids]
    return Rates(
        total=sum(per_device),
        per_device_min=min(per_device),
        per_device_median=statistics.median(per_device),
        per_device_max=max(per_device),
        silent=sum(1 for r in per_device if r == 0),
    )


# -- processes -----------------------------------------------------------------------------


def read_cpu_ticks(pid: int) -> int:
    return cpu_ticks(Path(f"/proc/{pid}/stat").read_text())


def failsafe_starts(log_path: Path) -> int:
    with contextlib.suppress(OSError):
        return count_failsafe_starts(log_path.read_text(errors="replace"))
    return 0


def _accepts(port: int) -> bool:
    try:
        with socket.create_connection((HOST, port), timeout=0.5):
            return True
    except OSError:
        return False


def wait_ports(ports: Sequence[int], process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    pending = list(ports)
    while pending:
        if process.poll() is not None:
            raise RuntimeError(f"the simulators exited with {process.returncode}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"simulators not listening on {pending}")
        pending = [p for p in pending if not _accepts(p)]
        if pending:
            time.sleep(0.1)


def stop_process(process: subprocess.Popen[bytes] | None) -> None:
    if process is None or process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=10)


@contextlib.contextmanager
def started(
    argv: list[str], env: dict[str, str], log_path: Path
) -> Iterator[subprocess.Popen[bytes]]:
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            argv, env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
        )
    try:
        yield process
    finally:
        stop_process(process)


def child_env(extra: dict[str, str]) -> dict[str, str]:
    inherited = {k: v for k, v in os.environ.items() if not k.startswith("CHARGEBUS_")}
    return {**inherited, **extra}


# -- the simulators' process ---------------------------------------------------------------


async def serve_sim(ports: list[int]) -> None:
    from bridges.sim.car import Car
    from bridges.sim.server import simulated_site

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    cars: list[Car | None] = [Car(phases=3 if i % 2 == 0 else 1) for i in range(len(ports))]
    async with simulated_site(HOST, ports, None, cars=cars):
        await stop.wait()


# -- what arrives on the bus ---------------------------------------------------------------


class StateCounter:
    """Counts states per device between `open_window()` and `close_window()`."""

    def __init__(self, host: str, port: int) -> None:
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="bench-modbus")
        self.client.on_message = self._on_message
        self.lock = threading.Lock()
        self.seen: set[str] = set()
        self.counting = False
        self.spans: dict[str, Span] = {}
        self.bus_latencies: list[float] = []
        # Time between a device's consecutive polls (their `ts`): the period actually kept.
        self.last_ts: dict[str, float] = {}
        self.periods: list[float] = []
        self.com_errors = 0
        subscribed = threading.Event()
        self.client.on_subscribe = lambda *args: subscribed.set()
        self.client.connect(host, port)
        self.client.loop_start()
        self.client.subscribe(f"{BASE}/devices/+/state", qos=0)
        if not subscribed.wait(10):
            raise TimeoutError("no SUBACK from the broker")

    def _on_message(self, client: Any, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        arrived = time.time()
        if msg.retain:
            return
        dev_id = msg.topic.split("/")[2]
        try:
            state = json.loads(msg.payload)
            ts = float(state["ts"])
        except (ValueError, KeyError, TypeError):
            return
        with self.lock:
            self.seen.add(dev_id)
            if self.counting:
                seen(self.spans, dev_id, ts)
                self.bus_latencies.append(arrived - ts)
                if dev_id in self.last_ts:
                    self.periods.append(ts - self.last_ts[dev_id])
                self.com_errors += bool(state.get("com_err"))
            self.last_ts[dev_id] = ts

    def wait_all(self, dev_ids: Sequence[str], timeout: float = READY_TIMEOUT_S) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                if self.seen.issuperset(dev_ids):
                    return
            time.sleep(0.1)
        with self.lock:
            missing = sorted(set(dev_ids) - self.seen)
        raise TimeoutError(f"no state from {len(missing)} devices: {missing[:10]}")

    def open_window(self) -> None:
        with self.lock:
            self.spans, self.bus_latencies, self.com_errors = {}, [], 0
            self.periods = []
            self.counting = True

    def close_window(self) -> None:
        with self.lock:
            self.counting = False

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


# -- phases --------------------------------------------------------------------------------


@dataclass(frozen=True)
class ProcessFigures:
    rates: Rates
    cpu_percent: float
    sim_cpu_percent: float
    bus_p50_ms: float
    bus_p99_ms: float
    period_p50_ms: float
    period_p99_ms: float
    period_mean_ms: float
    com_errors: int


def measure_process(
    broker: MosquittoBroker,
    dev_ids: Sequence[str],
    seconds: float,
    warmup: float,
    sim_pid: int,
    log_path: Path,
) -> ProcessFigures:
    env = child_env(
        {
            "CHARGEBUS_MQTT_URL": broker.url,
            "CHARGEBUS_BASE_TOPIC": BASE,
            "CHARGEBUS_LOG_LEVEL": "WARNING",
        }
    )
    hz = os.sysconf("SC_CLK_TCK")
    counter = StateCounter(broker.host, broker.port)
    try:
        with started(
            [sys.executable, "-m", "service", "bridge", "modbus"], env, log_path
        ) as bridge:
            counter.wait_all(dev_ids)
            time.sleep(warmup)
            counter.open_window()
            t0 = time.monotonic()
            cpu0, sim0 = read_cpu_ticks(bridge.pid), read_cpu_ticks(sim_pid)
            time.sleep(seconds)
            cpu1, sim1 = read_cpu_ticks(bridge.pid), read_cpu_ticks(sim_pid)
            elapsed = time.monotonic() - t0
            counter.close_window()
            if bridge.poll() is not None:
                raise RuntimeError(f"the bridge exited with {bridge.returncode}")
    finally:
        counter.close()
    return ProcessFigures(
        rates=rates(counter.spans, dev_ids),
        cpu_percent=cpu_percent(cpu1 - cpu0, elapsed, hz),
        sim_cpu_percent=cpu_percent(sim1 - sim0, elapsed, hz),
        bus_p50_ms=percentile(counter.bus_latencies, 0.5) * 1000,
        bus_p99_ms=percentile(counter.bus_latencies, 0.99) * 1000,
        period_p50_ms=percentile(counter.periods, 0.5) * 1000,
        period_p99_ms=percentile(counter.periods, 0.99) * 1000,
        period_mean_ms=statistics.fmean(counter.periods) * 1000 if counter.periods else 0.0,
        com_errors=counter.com_errors,
    )


@dataclass(frozen=True)
class InProcessFigures:
    rates: Rates
    poll_p50_ms: float
    poll_p99_ms: float
    poll_max_ms: float
    poll_errors: int
    cpu_percent: float


async def sample_polls(
    workers: Mapping[str, Any], dev_ids: Sequence[str], spans: dict[str, Span]
) -> None:
    """Notes when each worker's poll count moves, every 10 ms, until cancelled."""
    last = {d: workers[d].polls for d in dev_ids}
    while True:
        await asyncio.sleep(SAMPLE_S)
        now = time.monotonic()
        for dev_id in dev_ids:
            polls = workers[dev_id].polls
            if polls != last[dev_id]:
                seen(spans, dev_id, now, polls - last[dev_id])
                last[dev_id] = polls


async def _measure_in_process(
    broker: MosquittoBroker, dev_ids: Sequence[str], seconds: float, warmup: float
) -> InProcessFigures:
    from bridges.modbus.bridge import ModbusBridge
    from service.bus import LastWill
    from service.bus_setup import make_bus
    from service.settings import Settings
    from service.topics import Topics

    settings = Settings(mqtt_url=broker.url, base_topic=BASE)
    target = settings.mqtt_target()
    assert target is not None
    bridge = ModbusBridge(Topics(BASE), keep_latencies=True)
    bus = make_bus(
        settings,
        target,
        "bench-modbus",
        subscriptions=bridge.subscriptions(),
        on_message=bridge.on_message,
        will=LastWill(bridge.status_topic, b"offline"),
    )
    async with bus, bridge.running(bus):
        deadline = time.monotonic() + READY_TIMEOUT_S
        while not all(d in bridge.workers and bridge.workers[d].polls for d in dev_ids):
            if time.monotonic() > deadline:
                raise TimeoutError("the in-process bridge did not poll every device")
            await asyncio.sleep(0.1)
        await asyncio.sleep(warmup)
        errors0 = bridge.stats.poll_errors
        bridge.stats.latencies.clear()
        spans: dict[str, Span] = {}
        cpu0 = time.process_time()
        t0 = time.monotonic()
        sampler = asyncio.create_task(sample_polls(bridge.workers, dev_ids, spans))
        await asyncio.sleep(seconds)
        sampler.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await sampler
        elapsed = time.monotonic() - t0
        cpu = time.process_time() - cpu0
        latencies = list(bridge.stats.latencies)
        errors = bridge.stats.poll_errors - errors0
    return InProcessFigures(
        rates=rates(spans, dev_ids),
        poll_p50_ms=percentile(latencies, 0.5) * 1000,
        poll_p99_ms=percentile(latencies, 0.99) * 1000,
        poll_max_ms=max(latencies, default=float("nan")) * 1000,
        poll_errors=errors,
        cpu_percent=100.0 * cpu / elapsed,
    )


def measure_in_process(
    broker: MosquittoBroker, dev_ids: Sequence[str], seconds: float, warmup: float
) -> InProcessFigures:
    return asyncio.run(_measure_in_process(broker, dev_ids, seconds, warmup))


# -- main ----------------------------------------------------------------------------------


def run(seconds: float, warmup: float) -> tuple[ProcessFigures, InProcessFigures, tuple[int, int]]:
    with tempfile.TemporaryDirectory(prefix="chargebus-bench-modbus-") as tmp:
        workdir = Path(tmp)
        # The in-process bridge's warnings go to a file, like the process's, not into the table.
        handler = logging.FileHandler(workdir / "in_process.log")
        logging.basicConfig(level=logging.WARNING, handlers=[handler])
        ports = [find_free_port() for _ in range(POWERBRAINS)]
        devices = site_devices(ports)
        dev_ids = [d["dev_id"] for d in devices]
        with MosquittoBroker(workdir / "broker") as broker:
            sim_argv = [sys.executable, __file__, "--serve-sim", ",".join(map(str, ports))]
            with started(sim_argv, child_env({}), workdir / "sim.log") as sim:
                try:
                    wait_ports(ports, sim)
                except Exception:
                    sys.stderr.write((workdir / "sim.log").read_text(errors="replace")[-3000:])
                    raise
                (workdir / "data").mkdir()
                env = {
                    "CHARGEBUS_MQTT_URL": broker.url,
                    "CHARGEBUS_BASE_TOPIC": BASE,
                    "CHARGEBUS_ADMIN_PASSWORD": PASSWORD,
                    "CHARGEBUS_LOG_LEVEL": "WARNING",
                    "CHARGEBUS_MODBUS_BRIDGE": "false",
                }
                with ServiceProcess(workdir / "data", workdir / "service.log", env) as svc:
                    svc.wait_ready()
                    # Room for every car at 16 A: the bench measures polling, not sharing.
                    svc.set_params({"max_total_current": 600_000, "devices": devices}, PASSWORD)
                    try:
                        own_process = measure_process(
                            broker, dev_ids, seconds, warmup, sim.pid, workdir / "bridge.log"
                        )
                    except Exception:
                        sys.stderr.write(
                            (workdir / "bridge.log").read_text(errors="replace")[-3000:]
                        )
                        raise
                    in_this_process = measure_in_process(broker, dev_ids, seconds, warmup)
        failsafes = (
            failsafe_starts(workdir / "bridge.log"),
            failsafe_starts(workdir / "in_process.log"),
        )
    return own_process, in_this_process, failsafes


def report(
    seconds: float, a: ProcessFigures, b: InProcessFigures, failsafes: tuple[int, int]
) -> None:
    evses = POWERBRAINS
    print(
        f"Modbus bridge: {DEVICES} devices ({evses} Power Brain EVSEs id 1 + "
        f"{DEVICES - evses} meters ids 2, 3 on {POWERBRAINS} TCP endpoints), "
        f"poll_interval {POLL_MS} ms, {seconds:.0f} s windows, {os.cpu_count()} CPUs"
    )
    target = DEVICES * 1000 / POLL_MS
    print(f"  target rate                 {target:8.1f} polls/s")
    for name, r in (("bridge process", a.rates), ("in-process", b.rates)):
        print(
            f"  achieved ({name:<14})  {r.total:8.2f} polls/s   per device "
            f"min {r.per_device_min:.3f} / median {r.per_device_median:.3f} / "
            f"max {r.per_device_max:.3f}; silent {r.silent}"
        )
    print(
        f"  poll latency (in-process)   p50 {b.poll_p50_ms:.1f} ms   p99 {b.poll_p99_ms:.1f} ms"
        f"   max {b.poll_max_ms:.1f} ms"
    )
    print(f"  bus latency (ts → arrival)  p50 {a.bus_p50_ms:.1f} ms   p99 {a.bus_p99_ms:.1f} ms")
    print(
        f"  poll period (process, ts)   p50 {a.period_p50_ms:.1f} ms   p99 "
        f"{a.period_p99_ms:.1f} ms   mean {a.period_mean_ms:.1f} ms"
    )
    print(f"  CPU, bridge process         {a.cpu_percent:8.1f} % of one core")
    print(f"  CPU, bench process (ph. 2)  {b.cpu_percent:8.1f} % of one core (bridge in it)")
    print(f"  CPU, simulators' process    {a.sim_cpu_percent:8.1f} % of one core")
    print(
        f"  errors                      {a.com_errors} com_err states (process), "
        f"{b.poll_errors} poll errors (in-process)"
    )
    print(
        f"  fail-safe writes logged     {failsafes[0]} (process), {failsafes[1]} (in-process)"
        f" of {POWERBRAINS} EVSEs, the core online throughout"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="10 s windows (a smoke run)")
    parser.add_argument("--seconds", type=float, help="window length (default 30, quick 10)")
    parser.add_argument("--serve-sim", metavar="PORTS", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_sim:
        asyncio.run(serve_sim([int(p) for p in args.serve_sim.split(",")]))
        return
    seconds = args.seconds or (10.0 if args.quick else 30.0)
    warmup = 2.0 if args.quick else 5.0
    a, b, failsafes = run(seconds, warmup)
    report(seconds, a, b, failsafes)


if __name__ == "__main__":
    main()
