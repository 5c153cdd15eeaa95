"""Many sites on one mosquitto: broker load and core CPU per site; prints a table.

Run: .venv/bin/python bench/bench_sites.py [--sites 1,10,50] [--evses 4] [--seconds 20]

For each number of sites K: a private mosquitto (`set_tcp_nodelay true`, `$SYS` every
second) and one "site host" process that runs K chargebus cores in one event loop (each
`running_service` with its own base topic, data dir, HTTP port and bus connections; no
in-process Modbus bridge, no Home Assistant discovery). This process plays every site's
bridges: each site's grid meter and M EVSEs publish a state once a second (the sites spread
over the second, as unsynchronised bridges would be), and it subscribes to all commands,
as the bridges do.

Measured over the window, after a warm-up:
* packets/s the broker received and sent, of any type (its own `$SYS/broker/messages/*`
  counters count PUBLISH, PUBACK, PINGREQ, ... alike),
* CPU of mosquitto, of the site host (÷ K = per site) and of this bridge-playing process,
  in % of one core, and the site host's resident memory,
* state → command: from an EVSE state's `ts` to the arrival of the command that answers it
  (`state_ts`), p50 / p99 / max, all on one clock.

The figures are this machine's (see the printed header); other work on it shows in them.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import select
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from base64 import b64encode
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.broker import MosquittoBroker

PASSWORD = "bench-admin-pw"
MAX_TOTAL = 63_000
EVSE_DRAW = 6000


def base_topic(site: int) -> str:
    return f"site{site:04d}"


def installation(evses: int) -> dict[str, Any]:
    meter = {"dev_type": "meter_ajax", "dev_id": "M1", "name": "Grid", "role": 3}
    chargers = [
        {"dev_type": "evse_ajax", "dev_id": f"E{n}", "used_phases": 7, "min_charging_cur": 6000}
        for n in range(1, evses + 1)
    ]
    return {"max_total_current": MAX_TOTAL, "devices": [meter, *chargers]}


# -- the site host: K cores in one process ------------------------------------------------


async def host_sites(sites: int, evses: int, broker_url: str, workdir: Path) -> None:
    import aiohttp

    from service.app import running_service
    from service.log_format import configure_logging
    from service.settings import Settings

    configure_logging("WARNING", "text")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    auth = {"Authorization": "Basic " + b64encode(f"admin:{PASSWORD}".encode()).decode()}
    async with contextlib.AsyncExitStack() as stack:
        ports = []
        for site in range(sites):
            settings = Settings(
                mqtt_url=broker_url,
                http_port=0,
                data_dir=workdir / base_topic(site),
                base_topic=base_topic(site),
                admin_password=PASSWORD,
                modbus_bridge=False,
                ha_discovery=False,
                log_level="WARNING",
            )
            service = await stack.enter_async_context(running_service(settings))
            await service.bus.wait_connected(30)
            ports.append(service.http_port)
        async with aiohttp.ClientSession() as session:
            for port in ports:
                async with session.post(
                    f"http://127.0.0.1:{port}/cnf?cmd=set_params",
                    json=installation(evses),
                    headers=auth,
                ) as resp:
                    assert resp.status == 200, await resp.text()
        print("READY", flush=True)
        await stop.wait()


# -- this process: the bridges of every site ----------------------------------------------


class SysBroker(MosquittoBroker):
    """mosquitto with `$SYS` updated every second, for its message counters."""

    def _config(self, port: int) -> str:
        return super()._config(port) + "sys_interval 1\n"


class Bridges:
    def __init__(self, host: str, port: int, sites: int, evses: int) -> None:
        self.sites = sites
        self.evses = evses
        self.lock = threading.Lock()
        self.sys: dict[str, int] = {}
        self.latencies: list[float] = []
        self.commands = 0
        self.answered: set[tuple[str, float]] = set()
        self.measuring = False
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="bench-bridges")
        self.client.on_message = self._on_message
        subscribed = threading.Event()
        self.client.on_subscribe = lambda *args: subscribed.set()
        self.client.connect(host, port)
        self.client.loop_start()
        self.client.subscribe(
            [
                ("+/devices/+/command", 1),
                ("$SYS/broker/messages/received", 0),
                ("$SYS/broker/messages/sent", 0),
            ]
        )
        if not subscribed.wait(10):
            raise TimeoutError("no SUBACK from the broker")

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        now = time.time()
        if msg.topic.startswith("$SYS/"):
            with self.lock:
                self.sys[msg.topic.rsplit("/", 1)[1]] = int(msg.payload)
            return
        if msg.retain:
            return
        try:
            state_ts = json.loads(msg.payload).get("state_ts")
        except ValueError:
            return
        with self.lock:
            # The cycle repeats a command with the state_ts it answered: only the first one
            # is the answer to that state, also when it came before the window opened.
            key = (msg.topic, state_ts)
            first = isinstance(state_ts, int | float) and key not in self.answered
            if first:
                self.answered.add(key)
            if not self.measuring:
                return
            self.commands += 1
            if first:
                self.latencies.append(now - state_ts)

    def publish_site(self, site: int) -> None:
        base = base_topic(site)
        now = time.time()
        grid = self.evses * EVSE_DRAW + 2000
        meter = {"ts": now, "current": [grid] * 3, "power_w": grid * 3 * 230 / 1000}
        self.client.publish(f"{base}/devices/M1/state", json.dumps(meter), qos=1)
        for n in range(1, self.evses + 1):
            evse = {"ts": now, "state": 3, "current": [EVSE_DRAW] * 3, "total_energy": 1000}
            self.client.publish(f"{base}/devices/E{n}/state", json.dumps(evse), qos=1)

    def run(self, seconds: float) -> None:
        """Every site once a second, the sites spread evenly over the second."""
        start = time.monotonic()
        tick = 0
        while time.monotonic() - start < seconds:
            for site in range(self.sites):
                due = start + tick + site / self.sites
                delay = due - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                self.publish_site(site)
            tick += 1

    def counters(self) -> tuple[int, int]:
        # The next $SYS update, so that the counters are read at a known moment.
        with self.lock:
            before = dict(self.sys)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            with self.lock:
                if self.sys != before and "received" in self.sys and "sent" in self.sys:
                    return self.sys["received"], self.sys["sent"]
            time.sleep(0.02)
        raise TimeoutError("no $SYS counters from the broker")

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def _cpu(pid: int) -> float:
    """User + system CPU seconds of a process (Linux /proc, no dependency for it)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def measure(sites: int, evses: int, seconds: float, warmup: float) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="bench-sites-") as tmp:
        workdir = Path(tmp)
        host_log = workdir / "site-host.log"
        with SysBroker(workdir / "mosquitto") as broker:
            with host_log.open("wb") as errors:
                host = subprocess.Popen(
                    [
                        sys.executable,
                        __file__,
                        "--host",
                        str(sites),
                        "--evses",
                        str(evses),
                        "--broker",
                        broker.url,
                        "--workdir",
                        str(workdir),
                    ],
                    stdout=subprocess.PIPE,
                    stderr=errors,
                    stdin=subprocess.DEVNULL,
                )
            try:
                assert host.stdout is not None
                # Bounded: a site host that hangs while starting must not hang the bench.
                readable, _, _ = select.select([host.stdout], [], [], 60 + sites)
                line = host.stdout.readline() if readable else b""
                if b"READY" not in line:
                    raise RuntimeError(f"site host did not start: {host_log.read_text()[-2000:]}")
                assert broker.pid is not None
                broker_pid = broker.pid
                bridges = Bridges(broker.host, broker.port, sites, evses)
                try:
                    bridges.run(warmup)
                    received0, sent0 = bridges.counters()
                    cpu0 = (_cpu(broker_pid), _cpu(host.pid), time.process_time())
                    wall0 = time.monotonic()
                    with bridges.lock:
                        bridges.measuring = True
                    bridges.run(seconds)
                    wall = time.monotonic() - wall0
                    cpu1 = (_cpu(broker_pid), _cpu(host.pid), time.process_time())
                    with bridges.lock:
                        bridges.measuring = False
                    received1, sent1 = bridges.counters()
                    wall_sys = time.monotonic() - wall0
                    rss = _rss(host.pid)
                    latencies = sorted(bridges.latencies)
                    commands = bridges.commands
                finally:
                    bridges.close()
            finally:
                host.send_signal(signal.SIGTERM)
                try:
                    host.wait(timeout=60)
                except subprocess.TimeoutExpired:
                    host.kill()
                    host.wait()
    broker_cpu, host_cpu, own_cpu = (b - a for a, b in zip(cpu0, cpu1, strict=True))
    return {
        "sites": sites,
        "evses": sites * evses,
        "states_s": sites * (evses + 1),
        "received_s": (received1 - received0) / wall_sys,
        "sent_s": (sent1 - sent0) / wall_sys,
        "commands_s": commands / wall,
        "broker_cpu": 100 * broker_cpu / wall,
        "host_cpu": 100 * host_cpu / wall,
        "site_cpu": 100 * host_cpu / wall / sites,
        "bridges_cpu": 100 * own_cpu / wall,
        "host_rss_mb": rss / 2**20,
        "p50_ms": 1000 * statistics.median(latencies) if latencies else float("nan"),
        "p99_ms": 1000 * latencies[int(0.99 * (len(latencies) - 1))] if latencies else float("nan"),
        "max_ms": 1000 * latencies[-1] if latencies else float("nan"),
    }


COLUMNS = [
    ("sites", "sites", "{:.0f}"),
    ("evses", "EVSEs", "{:.0f}"),
    ("states_s", "states/s", "{:.0f}"),
    ("received_s", "broker in/s", "{:.0f}"),
    ("sent_s", "broker out/s", "{:.0f}"),
    ("commands_s", "commands/s", "{:.0f}"),
    ("broker_cpu", "mosquitto %", "{:.1f}"),
    ("host_cpu", "cores %", "{:.1f}"),
    ("site_cpu", "per site %", "{:.2f}"),
    ("host_rss_mb", "cores MB", "{:.0f}"),
    ("bridges_cpu", "bridges %", "{:.1f}"),
    ("p50_ms", "p50 ms", "{:.1f}"),
    ("p99_ms", "p99 ms", "{:.1f}"),
    ("max_ms", "max ms", "{:.1f}"),
]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sites", default="1,10,50", help="comma-separated site counts")
    parser.add_argument("--evses", type=int, default=4, help="EVSEs per site")
    parser.add_argument("--seconds", type=float, default=20.0, help="measuring window")
    parser.add_argument("--warmup", type=float, default=5.0)
    parser.add_argument("--host", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--broker", help=argparse.SUPPRESS)
    parser.add_argument("--workdir", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.host is not None:
        asyncio.run(host_sites(args.host, args.evses, args.broker, args.workdir))
        return 0
    print(
        f"# {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
        f"Python {platform.python_version()}, {args.evses} EVSEs + 1 grid meter per site, "
        f"each state once a second, {args.seconds:g} s window"
    )
    print("| " + " | ".join(title for _, title, _ in COLUMNS) + " |")
    print("|" + "|".join("---:" for _ in COLUMNS) + "|")
    for sites in (int(s) for s in args.sites.split(",")):
        row = measure(sites, args.evses, args.seconds, args.warmup)
        print("| " + " | ".join(fmt.format(row[key]) for key, _, fmt in COLUMNS) + " |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
