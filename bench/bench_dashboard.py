"""The dashboard's cost: page weight, time to first tile, and the service's CPU with 50
browsers open on a site of 200 EVSEs, against the same service with no browser, in one run.

Run: .venv/bin/python bench/bench_dashboard.py [--evses 200] [--browsers 50] [--seconds 20]

chargebus runs as its own process (`python -m service run`) against a private mosquitto, with
`--evses` HTTP-input wallboxes and a grid meter. A feeder in this process publishes every
device's state once a second on the bus (currents that change every time, as charging cars'
do), so every EVSE's info changes every second. The service's CPU (utime + stime from
/proc/<pid>/stat) is measured over `--seconds`:

1. with no browser open (the floor),
2. with `--browsers` dashboard streams open (/ui/events read by aiohttp clients, which read
   what a browser's EventSource reads: a snapshot, then an update at most every 100 ms),
3. the floor again, to see how far the machine drifted meanwhile.

Page weight and time to first tile come from a real browser (Playwright driving Debian's
chromium; skipped with a note without it): everything the page loads, as transferred
(compressed) and decoded, and the time from navigation start until the first tile is in the
DOM, median of 5 fresh loads, on the same 200-EVSE site.
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
from pathlib import Path
from typing import Any

import aiohttp
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.broker import MosquittoBroker
from tests.integration.browser import ARGS, chromium_path, skip_reason
from tests.integration.service_process import ServiceProcess
from tests.integration.sse_client import events

PASSWORD = "bench-admin-pw"
BASE = "bench"


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    # After the command name: field 3 is index 0; utime and stime are fields 14 and 15.
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Feeder:
    """Publishes every device's state once a second from a thread of its own, spread over
    the second as real wallboxes report."""

    def __init__(self, host: str, port: int, evses: list[str]) -> None:
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="bench-dashboard-feed")
        self.client.connect(host, port)
        self.client.loop_start()
        self.evses = evses
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        tick = 0
        while not self.stop.is_set():
            started = time.monotonic()
            tick += 1
            for i, dev_id in enumerate(self.evses):
                current = 6000 + (tick * 37 + i * 101) % 4000
                payload = {"ts": time.time(), "state": 3, "current": [current, current, current],
                           "total_energy": 1000 + tick * 3 + i}  # fmt: skip
                self.client.publish(f"{BASE}/devices/{dev_id}/state", json.dumps(payload), qos=0)
                # Spread over the second.
                due = started + (i + 1) / (len(self.evses) + 1)
                self.stop.wait(max(0.0, due - time.monotonic()))
            grid = 10000 + (tick * 53) % 5000
            self.client.publish(f"{BASE}/devices/M1/state", json.dumps(
                {"ts": time.time(), "current": [grid, grid, grid], "power_w": grid * 0.69}), qos=0)
            self.stop.wait(max(0.0, started + 1.0 - time.monotonic()))

    def __enter__(self) -> Feeder:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(5)
        self.client.loop_stop()
        self.client.disconnect()


async def measure_cpu(pid: int, seconds: float) -> float:
    """% of one core the process used over `seconds`."""
    before, started = cpu_seconds(pid), time.monotonic()
    await asyncio.sleep(seconds)
    return 100 * (cpu_seconds(pid) - before) / (time.monotonic() - started)


async def with_browsers(url: str, count: int, pid: int, seconds: float) -> dict[str, float]:
    """CPU with `count` streams open; what each stream received meanwhile."""
    received = [0] * count
    updates = [0] * count
    snapshot_bytes: list[int] = []
    opened = asyncio.Event()
    connected = 0

    async def reader(index: int, session: aiohttp.ClientSession) -> None:
        nonlocal connected
        async with session.get(url) as response:
            async for event in events(response):
                if event.name == "snapshot":
                    snapshot_bytes.append(len(event.data))
                    connected += 1
                    if connected == count:
                        opened.set()
                elif event.name == "update":
                    updates[index] += 1
                received[index] += len(event.data)

    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as session:
        tasks = [asyncio.create_task(reader(i, session)) for i in range(count)]
        await asyncio.wait_for(opened.wait(), 30)
        await asyncio.sleep(2)  # past the snapshots
        for i in range(count):
            received[i] = updates[i] = 0
        started = time.monotonic()
        cpu = await measure_cpu(pid, seconds)
        elapsed = time.monotonic() - started
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    return {
        "cpu": cpu,
        "kb_per_s": statistics.mean(received) / elapsed / 1024,
        "updates_per_s": statistics.mean(updates) / elapsed,
        "snapshot_kb": statistics.mean(snapshot_bytes) / 1024,
    }


async def page_figures(base: str, loads: int = 5) -> dict[str, float] | None:
    reason = skip_reason()
    if reason is not None:
        print(f"page weight and time to first tile: skipped ({reason})")
        return None
    from playwright.async_api import async_playwright

    path = chromium_path()
    assert path is not None
    firsts: list[float] = []
    transferred = decoded = 0
    files = 0
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=path, args=ARGS)
        try:
            for n in range(loads):
                context = await browser.new_context()
                page = await context.new_page()
                responses: list[Any] = []

                def finished(request: Any, seen: list[Any] = responses) -> None:
                    seen.append(request)

                page.on("requestfinished", finished)
                await page.goto(base + "/")
                await page.wait_for_selector(".tile[data-dev]", state="attached")
                # Marked by the page when it drew its first tiles (live.js).
                marks = await page.evaluate(
                    "['snapshot', 'first-tile'].map(n => performance.getEntriesByName(n)[0]"
                    "?.startTime)"
                )
                firsts.append(marks[1])
                if n == 0:
                    await page.wait_for_load_state("networkidle")
                    for request in responses:
                        if request.url.endswith("/ui/events"):
                            continue  # the stream: counted below as the snapshot
                        sizes = await request.sizes()
                        transferred += sizes["responseBodySize"] + sizes["responseHeadersSize"]
                        response = await request.response()
                        decoded += len(await response.body()) if response is not None else 0
                        files += 1
                await context.close()
        finally:
            await browser.close()
    return {
        "first_tile_ms": statistics.median(firsts),
        "first_tile_max_ms": max(firsts),
        "transferred_kb": transferred / 1024,
        "decoded_kb": decoded / 1024,
        "files": files,
    }


async def run(args: argparse.Namespace, workdir: Path) -> None:
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
            await asyncio.to_thread(svc.wait_ready)
            evses = [f"E{i}" for i in range(1, args.evses + 1)]
            devices: list[dict[str, Any]] = [{"dev_type": "meter_ajax", "dev_id": "M1", "role": 3}]
            devices += [
                {"dev_type": "evse_ajax", "dev_id": e, "name": f"Bay {e[1:]}"} for e in evses
            ]
            await asyncio.to_thread(svc.set_params, {
                "max_total_current": 400_000, "cycle_time": 1000, "devices": devices}, PASSWORD)
            base = f"http://127.0.0.1:{svc.http_port}"
            with Feeder(broker.host, broker.port, evses):
                await asyncio.sleep(3)  # every device reported, the loop runs
                floor = await measure_cpu(svc.pid, args.seconds)
                loaded = await with_browsers(base + "/ui/events", args.browsers, svc.pid,
                                             args.seconds)  # fmt: skip
                floor_after = await measure_cpu(svc.pid, args.seconds)
                page = await page_figures(base)
    print(f"dashboard: {args.evses} EVSEs + 1 grid meter, every state once a second; "
          f"{os.cpu_count()} CPUs; service CPU over {args.seconds:g} s each")  # fmt: skip
    print(f"  service CPU, no browser:            {floor:6.1f} % of one core")
    print(f"  service CPU, {args.browsers:>3} browsers open:     {loaded['cpu']:6.1f} % "
          f"(+{loaded['cpu'] - floor:.1f} points, {loaded['cpu'] / max(floor, 0.1):.2f}x)")
    print(f"  service CPU, no browser again:      {floor_after:6.1f} %")
    print(f"  per browser: {loaded['updates_per_s']:.1f} updates/s, "
          f"{loaded['kb_per_s']:.1f} KiB/s; snapshot {loaded['snapshot_kb']:.1f} KiB")
    if page is not None:
        print(f"  page weight: {page['transferred_kb']:.1f} KiB transferred "
              f"({page['decoded_kb']:.1f} KiB decoded) in {page['files']:.0f} files, "
              f"plus the stream's snapshot")
        print(f"  time to first tile: median {page['first_tile_ms']:.0f} ms, "
              f"max {page['first_tile_max_ms']:.0f} ms (5 loads, from navigation start)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--evses", type=int, default=200)
    parser.add_argument("--browsers", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=20.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-dashboard-") as tmp:
        asyncio.run(run(args, Path(tmp)))


if __name__ == "__main__":
    main()
