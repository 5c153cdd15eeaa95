"""`chargebus demo`: the quick start's main job. The service with its embedded broker, two
simulated cFos Power Brains with cars and a simulated grid meter, already configured, so that
load balancing shows at /cnf?cmd=get_dev_info within seconds.

The demo keeps its data apart (`{data_dir}/demo`) so it never touches a real configuration.
The simulators take free loopback ports; the devices' addresses are rewritten to them at
each start, everything else configured stays as the user left it.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp

from bridges.sim.car import Car
from bridges.sim.ocpp_cp import SimChargePoint
from bridges.sim.server import SimSite, simulated_site
from service.app import RunningService, device_registry, running_service
from service.embedded_broker import free_port
from service.settings import Settings
from service.state import ServiceState
from service.store import Store

log = logging.getLogger(__name__)

HOST = "127.0.0.1"
# A small house: 25 A per phase, two wallboxes that would take 16 A each, 2 A of other load.
MAIN_FUSE_MA = 25_000
BASE_LOAD_MA = 2_000


def demo_devices(
    powerbrain_ports: list[int], grid_port: int, host: str = HOST
) -> list[dict[str, Any]]:
    devices: list[dict[str, Any]] = [
        {
            "dev_type": "meter_sdm630",
            "dev_id": "M1",
            "name": "Grid (simulated SDM630)",
            "address": f"{host}:{grid_port}",
            "id": 1,
            "role": 3,
        }
    ]
    for i, port in enumerate(powerbrain_ports, start=1):
        devices.append(
            {
                "dev_type": "evse_powerbrain",
                "dev_id": f"E{i}",
                "name": f"Wallbox {i} (simulated Power Brain)",
                "address": f"{host}:{port}",
                "id": 1,
                "number": i,
                "min_charging_cur": 6000,
                "max_charging_cur": 16_000,
                "pause_min_time": 10,
                "failsafe_current": 6000,
            }
        )
    return devices


async def configure(data_dir: Path, devices: list[dict[str, Any]]) -> None:
    """Before the service starts, so that its bridge never polls last run's ports."""
    state = ServiceState.load(Store(data_dir), device_registry())
    if not state.installation.devices:
        await state.set_params(
            {"title": "chargebus demo", "max_total_current": MAIN_FUSE_MA, "cycle_time": 1000}
        )
    for device in devices:
        if device["dev_id"] in state.installation.devices:
            # Only the simulators' new ports; the rest stays as the user configured it.
            device = {"dev_id": device["dev_id"], "address": device["address"]}
        await state.set_params({"devices": [device]})


@contextlib.asynccontextmanager
async def running_demo(settings: Settings) -> AsyncIterator[tuple[RunningService, SimSite]]:
    ports = [free_port(HOST) for _ in range(2)]
    grid_port = free_port(HOST)
    cars: list[Car | None] = [Car(phases=3, ramp_ma_per_s=3000), Car(phases=1, ramp_ma_per_s=3000)]
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    devices = demo_devices(ports, grid_port)
    if settings.demo_ocpp:
        devices.append(DEMO_OCPP_DEVICE)
    await configure(settings.data_dir, devices)
    async with (
        simulated_site(HOST, ports, grid_port, base_load_ma=BASE_LOAD_MA, cars=cars) as site,
        running_service(settings) as service,
        contextlib.AsyncExitStack() as extras,
    ):
        if settings.demo_ocpp and service.ocpp is not None:
            await _start_ocpp_box(service, extras)
        log.info(
            "demo: two simulated Power Brains (%s) and a grid meter (%s:%d) are configured; "
            "watch them share %d A: curl 'http://%s:%d/cnf?cmd=get_dev_info'",
            ", ".join(f"{HOST}:{p}" for p in ports),
            HOST,
            grid_port,
            MAIN_FUSE_MA // 1000,
            settings.http_host,
            service.http_port,
        )
        yield service, site


# With demo_ocpp: a simulated OCPP 1.6J charge point, its car plugged in after a few seconds.
DEMO_OCPP_DEVICE: dict[str, Any] = {
    "dev_type": "evse_ocpp",
    "dev_id": "E3",
    "name": "Wallbox 3 (simulated OCPP charge point)",
    "address": "DEMO-OCPP",
    "id": 1,
    "min_charging_cur": 6000,
    "max_charging_cur": 16000,
}


async def _start_ocpp_box(service: RunningService, extras: contextlib.AsyncExitStack) -> None:
    assert service.ocpp is not None
    port = await service.ocpp.listen()
    box = SimChargePoint(
        DEMO_OCPP_DEVICE["address"],
        f"ws://{HOST}:{port}/demo/",
        cars=[Car(phases=3, ramp_ma_per_s=3000)],
    )
    stop_box = asyncio.Event()
    task = asyncio.create_task(box.run(stop_box))
    extras.push_async_callback(_await_quietly, task)
    extras.callback(stop_box.set)
    asyncio.get_running_loop().call_later(3.0, box.plug, 1)
    log.info("demo: a simulated OCPP charge point (DEMO-OCPP) connects to port %d", port)


# Between attempts to configure a chargebus that is not there yet: short at first (containers
# start within seconds of each other), then no more often than this.
RETRY_FIRST_S = 1.0
RETRY_MAX_S = 10.0
# One attempt: a chargebus that accepts the connection but does not answer is retried too.
ATTEMPT_TIMEOUT_S = 10.0


def _why_failed(exc: BaseException, url: str) -> str:
    """One line on why an attempt failed, and what would help."""
    if isinstance(exc, aiohttp.ClientResponseError):
        if exc.status == 401:
            return (
                "HTTP 401: CHARGEBUS_ADMIN_PASSWORD is not that chargebus's admin password "
                "(set the one it uses, or reset it there with `chargebus admin-password`)"
            )
        if exc.status == 429:
            return "HTTP 429: too many failed logins, chargebus throttles this address"
        return f"HTTP {exc.status} {exc.message}"
    if isinstance(exc, aiohttp.ClientConnectorError):
        return f"cannot connect to {url} ({exc.os_error.strerror or exc}): not started yet?"
    if isinstance(exc, TimeoutError):
        return f"no answer within {ATTEMPT_TIMEOUT_S:g} s"
    return f"{type(exc).__name__}: {exc}"


async def _configure_once(
    session: aiohttp.ClientSession, url: str, auth: aiohttp.BasicAuth, payloads: list[Any]
) -> None:
    for payload in payloads:
        async with session.post(url, params={"cmd": "set_params"}, json=payload, auth=auth) as resp:
            resp.raise_for_status()


async def configure_remote(url: str, password: str, devices: list[dict[str, Any]]) -> None:
    """Configures a chargebus that runs elsewhere (the compose demo): its /cnf set_params,
    retried until it answers, as containers start in any order. Each failed attempt is
    logged with its cause; cancel the task to give up."""
    auth = aiohttp.BasicAuth("admin", password)
    payloads: list[Any] = [
        {"max_total_current": MAIN_FUSE_MA, "cycle_time": 1000},
        *({"devices": [d]} for d in devices),
    ]
    delay = RETRY_FIRST_S
    timeout = aiohttp.ClientTimeout(total=ATTEMPT_TIMEOUT_S)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        for attempt in itertools.count(1):
            try:
                await _configure_once(session, url, auth, payloads)
            except (aiohttp.ClientError, TimeoutError, OSError) as exc:
                log.warning(
                    "configuring the demo devices at %s: attempt %d failed: %s; retrying in %g s",
                    url,
                    attempt,
                    _why_failed(exc, url),
                    delay,
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, RETRY_MAX_S)
                continue
            log.info("demo devices configured at %s (attempt %d)", url, attempt)
            return


async def _await_quietly(task: asyncio.Task[None]) -> None:
    with contextlib.suppress(Exception, asyncio.CancelledError):
        await asyncio.wait_for(task, 10)


async def run_demo(settings: Settings, stop: asyncio.Event) -> None:
    demo_settings = settings.model_copy(update={"data_dir": settings.data_dir / "demo"})
    async with running_demo(demo_settings):
        await stop.wait()
