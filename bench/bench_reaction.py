"""Reaction to a grid overload on a busy site, against the floor of the same broker; prints a
table.

Run: .venv/bin/python bench/bench_reaction.py [--quick] [--sizes 100,1000] [--rounds 40]

In one run, through one private mosquitto (`set_tcp_nodelay true`), for each size N:

* floor: a bare echo process (`bench/bench_reaction.py --echo`, the service's own MQTT
  client class) that answers one message on its meter topic with N commands, one per EVSE,
  formatted and published as the core publishes its commands (QoS 0, retained);
* quiet: chargebus (`python -m service run`, as bench_end_to_end starts it) with N HTTP-input
  EVSEs (`evse_ajax`) that reported a while ago, answering a grid overload that makes every
  EVSE's command lower;
* reports: the same, but every EVSE has just sent its state (as the HTTP-input bridge
  publishes it: QoS 1, with `ts`, currents that move a little from report to report, as a
  real wallbox's do) and the overload is published a few tens of ms after the last of them.

The states and readings come from a publisher process of their own (`--publisher`, two
connections as two bridges), apart from this process's observer: a thousand reports and their
acknowledgements handled in the observer's interpreter would delay its arrival times.

Measured: from just before publishing the overload (or the echo's trigger; taken in the
publisher process from the machine's monotonic clock) to the arrival, in this process, of the
last of the N answers: for the echo, a command with `ts` after the
publish; for chargebus, a command with `ts` after the publish whose current is the reduced
one. The three kinds of round are interleaved, so that load from other work on the machine
falls on all of them alike. Between rounds the meter returns to normal and the service gives
every EVSE its maximum again (not timed).

The EVSEs charge on one phase each (L1, L2, L3 in turn), so that 1,000 of them fit the
models' 2,000 A per phase; their maximum is 16 A or what 1,800 A per phase leaves each.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from service.core.control_law import NO_WAITS
from tests.broker import MosquittoBroker
from tests.integration.service_process import ServiceProcess

PASSWORD = "bench-admin-pw"
BASE = "bench"
ECHO_BASE = "echo"
# How long before the overload the EVSEs' reports go out (after the last one is published).
REPORT_LEAD_S = 0.03
SETTLE_S = 0.3


# -- the echo process -----------------------------------------------------------------------


async def echo(url: str, n: int) -> None:
    """Answers each message on {ECHO_BASE}/devices/M1/state with n commands, like a core
    that does nothing but send them."""
    from service.bus import MqttBus
    from service.control_loop import gc_paused
    from service.settings import MqttTarget

    target = MqttTarget.from_url(url)
    topics = [f"{ECHO_BASE}/devices/E{i}/command" for i in range(1, n + 1)]
    bus: MqttBus

    def on_message(topic: str, payload: bytes, retained: bool) -> None:
        if retained:
            return
        # The meter's first current is the command's current: the answer depends on the
        # message, as a real answer would.
        current = int(json.loads(payload)["current"][0]) // 1000
        now = time.time()
        # With the collector paused, as the core publishes a run's commands (gc_paused).
        with gc_paused():
            publish_all(current, now)
        # Written at once, as the core writes a run's commands (MqttBus.flush).
        bus.flush()

    def publish_all(current: int, now: float) -> None:
        for topic_out in topics:
            bus.hold_retained(
                topic_out,
                (
                    '{"device_enabled":true,"charging_enabled":true,"paused":false,'
                    f'"charging_current":{current},"ts":{now!r},"state_ts":null}}'
                ).encode(),
                qos=0,
            )

    bus = MqttBus(
        target,
        client_id=f"bench-echo-{os.getpid()}",
        subscriptions=[f"{ECHO_BASE}/devices/M1/state"],
        on_message=on_message,
    )
    async with bus:
        await bus.wait_connected(10)
        print("READY", flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)


Draws = dict[str, list[int]]

# -- the site -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Site:
    n: int
    maximum: int  # mA, every EVSE's max_charging_cur
    per_phase: int  # EVSEs on the fullest phase
    limit: int  # max_total_current

    @staticmethod
    def of(n: int) -> Site:
        per_phase = (n + 2) // 3
        maximum = min(16_000, 1_800_000 // per_phase)
        # Room for all at their maximum, with the spread of the reported draws.
        limit = per_phase * (maximum + 300) + 10_000
        return Site(n, maximum, per_phase, limit)

    def at_max(self, current: int) -> bool:
        # A control law leaves a command short of the maximum when the rest is within its
        # deadband (0.3 A by default), or was when the site came up at different times.
        return current >= self.maximum * 90 // 100

    def ids(self) -> list[str]:
        return [f"E{i}" for i in range(1, self.n + 1)]

    @staticmethod
    def phase(i: int) -> int:
        return (i - 1) % 3

    def installation(self) -> dict[str, Any]:
        devices: list[dict[str, Any]] = [
            {"dev_type": "meter_ajax", "dev_id": "M1", "role": 3, "name": "grid"}
        ]
        devices += [
            {
                "dev_type": "evse_ajax",
                "dev_id": f"E{i}",
                "used_phases": 1 << self.phase(i),
                "max_charging_cur": self.maximum,
                "min_charging_cur": self.maximum * 3 // 8,
                "pause_min_time": 0,
            }
            for i in range(1, self.n + 1)
        ]
        return {
            "max_total_current": self.limit,
            "reserve_current": 0,
            "cycle_time": 60_000,
            "stale_time": 3_600_000,
            # The control law's waits off (control_law.NO_WAITS): cuts are what this
            # measures, and between rounds the site returns to normal at once.
            **NO_WAITS,
            "devices": devices,
        }

    def draws(self, rng: random.Random | None) -> Draws:
        """Each EVSE draws 30 % of its maximum on its phase (± 0.2 A when rng is given): less
        than any command it gets here (a car whose own charger takes less), so that it always
        counts as following its command."""
        out: dict[str, list[int]] = {}
        for i in range(1, self.n + 1):
            amps = self.maximum * 3 // 10 + (rng.randint(-200, 200) if rng else 0)
            current = [0, 0, 0]
            current[self.phase(i)] = amps
            out[f"E{i}"] = current
        return out

    def grid(self, draws: Draws, overload: bool) -> list[int]:
        """The grid meter: the EVSEs' draw plus other load. Normal: 5 A. Overload: so much
        that the EVSEs of the fullest phase have 70 % of their maxima left."""
        other = self.limit - self.per_phase * self.maximum * 7 // 10 if overload else 5_000
        total = [other, other, other]
        for current in draws.values():
            total = [t + c for t, c in zip(total, current, strict=True)]
        return total


# -- this process: bridges and observer ------------------------------------------------------


class Observer:
    """Subscribes to every command; arrival times are taken before any parsing."""

    def __init__(self, host: str, port: int) -> None:
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="bench-reaction-obs")
        self.client.on_message = self._on_message
        self.cond = threading.Condition()
        self.seen: list[tuple[float, str, bytes]] = []
        self.subscribed = threading.Event()
        self.client.on_subscribe = lambda *args: self.subscribed.set()
        self.client.connect(host, port)
        self.client.loop_start()
        self.client.subscribe(
            [(f"{BASE}/devices/+/command", 0), (f"{ECHO_BASE}/devices/+/command", 0)]
        )
        if not self.subscribed.wait(10):
            raise TimeoutError("no SUBACK from the broker")

    def _on_message(self, client: Any, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        arrived = time.monotonic()
        with self.cond:
            self.seen.append((arrived, msg.topic, bytes(msg.payload)))
            self.cond.notify()

    def take(self) -> list[tuple[float, str, bytes]]:
        with self.cond:
            seen, self.seen = self.seen, []
        return seen

    def wait_for(
        self, base: str, ids: set[str], wall: float, want: Callable[[int], bool], timeout: float
    ) -> float:
        """Arrival of the last command (per EVSE in `ids`, topic under `base`) with ts ≥
        wall and a charging_current that `want` accepts. Takes the answered ones out of
        `ids`."""
        missing = ids
        last = 0.0
        example = b""
        deadline = time.monotonic() + timeout
        prefix = f"{base}/devices/"
        while missing:
            with self.cond:
                if not self.seen:
                    self.cond.wait(max(0.0, deadline - time.monotonic()))
                seen, self.seen = self.seen, []
            for arrived, topic, payload in seen:
                if not topic.startswith(prefix):
                    continue
                dev_id = topic[len(prefix) :].split("/", 1)[0]
                if dev_id not in missing:
                    continue
                example = payload
                command = json.loads(payload)
                if command["ts"] < wall:
                    continue
                if not want(command["charging_current"]):
                    continue
                missing.discard(dev_id)
                last = max(last, arrived)
            if missing and time.monotonic() > deadline:
                raise TimeoutError(
                    f"{len(missing)} of {len(ids)} EVSEs got no answer (one command: {example!r})"
                )
        return last

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


# A state to publish: (base topic, device id, payload); a payload's "ts" of None is filled in
# with the time it is published.
Message = tuple[str, str, dict[str, Any]]


def publisher_process(url: str) -> None:
    """The bridges, in a process of their own (`--publisher`), each on a connection of its
    own: the HTTP-input bridge publishes the EVSEs' states, a meter's bridge the grid meter's
    (QoS 1, without a window of unacknowledged messages, as the service's bridges publish).
    Apart from the observer, so that the observer's arrival times do not wait for the
    publishing (a thousand reports and their acknowledgements) in the same interpreter.

    Reads one JSON line per burst from stdin: {"states": [...], "lead": s, "last": message};
    publishes the states, waits `lead`, publishes `last` and answers with a line
    [monotonic, wall] taken just before publishing `last`."""
    target = urlsplit(url)
    clients: dict[str, mqtt.Client] = {}
    for role in ("evses", "meter"):
        client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"bench-reaction-{role}")
        client.max_inflight_messages_set(0)
        client.connect(target.hostname or "127.0.0.1", target.port or 1883)
        client.loop_start()
        clients[role] = client

    def publish(message: list[Any]) -> None:
        base, dev_id, payload = message
        if "ts" in payload and payload["ts"] is None:
            payload["ts"] = time.time()
        client = clients["meter" if dev_id.startswith("M") else "evses"]
        client.publish(
            f"{base}/devices/{dev_id}/state", json.dumps(payload, separators=(",", ":")), qos=1
        )

    print("READY", flush=True)
    for line in sys.stdin:
        burst = json.loads(line)
        for message in burst["states"]:
            publish(message)
        if burst["lead"]:
            time.sleep(burst["lead"])
        started, wall = time.monotonic(), time.time()
        publish(burst["last"])
        print(json.dumps([started, wall]), flush=True)
    for client in clients.values():
        client.loop_stop()
        client.disconnect()


class Publisher:
    """This process's end of publisher_process."""

    def __init__(self, url: str) -> None:
        self.process = subprocess.Popen(
            [sys.executable, __file__, "--publisher", url],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.process.stdout is not None
        if self.process.stdout.readline().strip() != "READY":
            raise RuntimeError("the publisher process did not start")

    def burst(self, states: list[Message], last: Message, lead: float = 0.0) -> tuple[float, float]:
        """Publishes `states`, then after `lead` seconds `last`; (monotonic, wall) time of
        the moment just before `last` was published."""
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.write(json.dumps({"states": states, "lead": lead, "last": last}))
        self.process.stdin.write("\n")
        self.process.stdin.flush()
        started, wall = json.loads(self.process.stdout.readline())
        return float(started), float(wall)

    def state(self, base: str, dev_id: str, payload: dict[str, Any]) -> None:
        self.burst([], (base, dev_id, payload))

    def close(self) -> None:
        if self.process.stdin is not None:
            self.process.stdin.close()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def restore(
    publisher: Publisher, observer: Observer, site: Site, draws: Draws, timeout: float = 60
) -> None:
    """Back to normal: every EVSE at its maximum again. The normal reading is repeated, as
    a meter reports every second: a control law may raise only once a cut car has followed
    or a hold has passed, which takes a run after that time."""
    ids = set(site.ids())
    wall = time.time()
    deadline = time.monotonic() + timeout
    while True:
        reading = {"current": site.grid(draws, False), "ts": None}
        publisher.state(BASE, "M1", reading)
        try:
            observer.wait_for(BASE, ids, wall, site.at_max, timeout=0.5)
            return
        except TimeoutError:
            if time.monotonic() > deadline:
                raise


def progress(text: str) -> None:
    print(f"  {text}", file=sys.stderr, flush=True)


def percentiles(values: list[float]) -> tuple[float, float, float]:
    ordered = sorted(values)

    def at(q: float) -> float:
        return ordered[min(len(ordered) - 1, int(len(ordered) * q))]

    return statistics.median(ordered), at(0.95), at(0.99)


def measure(n: int, rounds: int, workdir: Path, kinds: list[str]) -> dict[str, list[float]]:
    site = Site.of(n)
    ids = set(site.ids())
    run_dir = Path(tempfile.mkdtemp(dir=workdir, prefix=f"{n}-"))

    # The overload takes every EVSE to about 70 % of its maximum.
    def lowered(current: int) -> bool:
        return current <= site.maximum * 80 // 100

    def anything(current: int) -> bool:
        return True

    results: dict[str, list[float]] = {"floor": [], "quiet": [], "reports": []}
    rng = random.Random(n)
    with MosquittoBroker(run_dir / "broker") as broker:
        env = {
            "CHARGEBUS_MQTT_URL": broker.url,
            "CHARGEBUS_BASE_TOPIC": BASE,
            "CHARGEBUS_ADMIN_PASSWORD": PASSWORD,
            "CHARGEBUS_LOG_LEVEL": os.environ.get("BENCH_LOG_LEVEL", "WARNING"),
        }
        (run_dir / "data").mkdir()
        echo_proc = subprocess.Popen(
            [sys.executable, __file__, "--echo", broker.url, "--echo-n", str(n)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        try:
            assert echo_proc.stdout is not None
            if echo_proc.stdout.readline().strip() != b"READY":
                raise RuntimeError("the echo process did not start")
            with ServiceProcess(run_dir / "data", run_dir / "service.log", env) as svc:
                svc.wait_ready()
                t0 = time.monotonic()
                svc.set_params(site.installation(), PASSWORD)
                progress(f"{n} EVSEs configured in {time.monotonic() - t0:.1f} s")
                # The core hears its own configs back (it subscribes to them, QoS 1): states
                # published into that flood would pass mosquitto's queue of 1,000 messages per
                # client and be dropped. Let it pass first.
                time.sleep(2 + n / 250)
                observer = Observer(broker.host, broker.port)
                publisher = Publisher(broker.url)
                try:
                    draws = site.draws(None)
                    publisher.burst(
                        [
                            (BASE, d, {"state": 3, "current": c, "ts": None})
                            for d, c in draws.items()
                        ],
                        (BASE, "M1", {"current": site.grid(draws, False), "ts": None}),
                    )
                    restore(publisher, observer, site, draws, timeout=120)
                    progress(f"every EVSE at its maximum after {time.monotonic() - t0:.1f} s")
                    reduced = False
                    for number in range(rounds):
                        rng.shuffle(kinds)
                        for kind in kinds:
                            if reduced:
                                restore(publisher, observer, site, draws)
                                reduced = False
                            time.sleep(SETTLE_S)
                            observer.take()
                            if kind == "floor":
                                started, wall = publisher.burst(
                                    [],
                                    (
                                        ECHO_BASE,
                                        "M1",
                                        {"current": [site.maximum * 700] * 3, "ts": None},
                                    ),
                                )
                                last = observer.wait_for(ECHO_BASE, set(ids), wall, anything, 30)
                            else:
                                reports: list[Message] = []
                                lead = 0.0
                                if kind == "reports":
                                    draws = site.draws(rng)
                                    reports = [
                                        (BASE, d, {"state": 3, "current": c, "ts": None})
                                        for d, c in draws.items()
                                    ]
                                    lead = REPORT_LEAD_S
                                started, wall = publisher.burst(
                                    reports,
                                    (BASE, "M1", {"current": site.grid(draws, True), "ts": None}),
                                    lead,
                                )
                                last = observer.wait_for(BASE, set(ids), wall, lowered, 30)
                                reduced = True
                            results[kind].append((last - started) * 1000)
                        if number == 0:
                            # The first round of each kind warms caches: not counted.
                            for values in results.values():
                                values.clear()
                except Exception:
                    sys.stderr.write(svc.log())
                    raise
                finally:
                    observer.close()
                    publisher.close()
        finally:
            if echo_proc.stdin is not None:
                echo_proc.stdin.close()
            try:
                echo_proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                echo_proc.kill()
                echo_proc.wait()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="few rounds (a smoke run)")
    parser.add_argument("--sizes", default="100,1000")
    parser.add_argument("--rounds", type=int, default=0, help="rounds per kind (default 40/15)")
    parser.add_argument("--kinds", default="floor,quiet,reports", help=argparse.SUPPRESS)
    parser.add_argument("--echo", help=argparse.SUPPRESS)
    parser.add_argument("--echo-n", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--publisher", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.echo:
        asyncio.run(echo(args.echo, args.echo_n))
        return
    if args.publisher:
        publisher_process(args.publisher)
        return
    print(
        "reaction: overload reading → every EVSE's reduced command received, "
        f"against an echo of N commands ({os.cpu_count()} CPUs)"
    )
    print(
        f"{'EVSEs':>6} {'case':>8} {'rounds':>6} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8} "
        f"{'p50 x':>6} {'p95 x':>6}"
    )
    with tempfile.TemporaryDirectory(prefix="chargebus-bench-") as tmp:
        for n in (int(s) for s in args.sizes.split(",")):
            rounds = args.rounds or (4 if args.quick else (40 if n <= 100 else 15))
            results = measure(n, rounds + 1, Path(tmp), args.kinds.split(","))
            floor = percentiles(results["floor"] or [1.0])
            for kind in args.kinds.split(","):
                p50, p95, p99 = percentiles(results[kind])
                print(
                    f"{n:>6} {kind:>8} {len(results[kind]):>6} {p50:>8.1f} {p95:>8.1f} "
                    f"{p99:>8.1f} {p50 / floor[0]:>6.2f} {p95 / floor[1]:>6.2f}",
                    flush=True,
                )


if __name__ == "__main__":
    main()
