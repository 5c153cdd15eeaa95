"""The `chargebus` command line."""

from __future__ import annotations

import argparse
import asyncio
import faulthandler
import logging
import os
import signal
import sys
import threading
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from service import __version__
from service.embedded_broker import BrokerPortTaken
from service.httpkit import HttpPortTaken
from service.log_format import configure_logging
from service.settings import Settings, load_settings
from service.store import StoreError

log = logging.getLogger("chargebus")


def _add_settings(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, help="TOML file with settings")
    for name, field in Settings.model_fields.items():
        flag = "--" + name.replace("_", "-")
        parser.add_argument(
            flag,
            dest=name,
            default=None,
            help=field.description or f"setting {name} (env CHARGEBUS_{name.upper()})",
        )


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="chargebus", description=__doc__)
    parser.add_argument("--version", action="version", version=f"chargebus {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    _add_settings(sub.add_parser("run", help="run the load manager with its /cnf API"))
    _add_settings(
        sub.add_parser(
            "demo",
            help="the load manager with an embedded broker, two simulated Power Brains and a "
            "simulated grid meter, already configured (data in {data_dir}/demo)",
        )
    )
    sim = sub.add_parser("sim", help="simulated cFos Power Brains and a grid meter (Modbus TCP)")
    sim.add_argument("--host", default="127.0.0.1")
    sim.add_argument("--port", type=int, default=4701, help="the first Power Brain's port")
    sim.add_argument("--count", type=int, default=2, help="how many Power Brains")
    sim.add_argument("--grid-port", type=int, default=5020, help="SDM630 grid meter; 0 = none")
    sim.add_argument("--log-level", default="INFO")
    sim.add_argument(
        "--configure",
        metavar="URL",
        help="configure these devices at a chargebus /cnf URL (admin password from "
        "CHARGEBUS_ADMIN_PASSWORD), e.g. http://chargebus:8080/cnf",
    )
    sim.add_argument(
        "--advertise", help="host name the bridge reaches the simulators by (default: --host)"
    )
    bridge = sub.add_parser("bridge", help="run one bridge as a process of its own")
    kinds = bridge.add_subparsers(dest="bridge", required=True)
    _add_settings(kinds.add_parser("modbus", help="poll the Modbus devices of the configuration"))
    _add_settings(kinds.add_parser("http", help="serve set_ajax_meter / set_ajax_evse"))
    return parser


Job = Callable[[asyncio.Event], Awaitable[None]]


# How long an orderly stop may take before the process gives up on it: a service manager
# (and a test) must be able to count on a stopped chargebus being gone.
SHUTDOWN_GRACE_S = 15.0
# The simulator holds no state worth waiting for, and docker stops a container after 10 s.
SIM_SHUTDOWN_GRACE_S = 2.0


def _stop_requested(stop: asyncio.Event, grace_s: float) -> None:
    if stop.is_set():
        return
    stop.set()
    # A thread, not the event loop: the loop may be what is stuck.
    watchdog = threading.Timer(grace_s, _shutdown_overdue, args=(grace_s,))
    watchdog.daemon = True
    watchdog.start()


def _shutdown_overdue(grace_s: float) -> None:
    log.error("stopping took over %g s: exiting now; where it was stuck:", grace_s)
    faulthandler.dump_traceback(all_threads=True)
    os._exit(70)


async def _until_signal(job: Job, grace_s: float = SHUTDOWN_GRACE_S) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, _stop_requested, stop, grace_s)
    await job(stop)


async def _until_set(stop: asyncio.Event, work: Awaitable[None]) -> None:
    """`work` until it ends or `stop` is set, whichever comes first."""
    task = asyncio.ensure_future(work)
    stopped = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait({task, stopped}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for pending in (task, stopped):
            pending.cancel()
        await asyncio.gather(task, stopped, return_exceptions=True)
    if task.done() and not task.cancelled():
        task.result()  # raises what the work raised


def _job(args: argparse.Namespace, settings: Settings) -> Job:
    if args.command == "run":
        from service.app import run_until_stopped

        return lambda stop: run_until_stopped(settings, stop)
    if args.command == "demo":
        from service.demo import run_demo

        return lambda stop: run_demo(settings, stop)
    if args.bridge == "modbus":
        from bridges.modbus.runner import run_modbus_bridge

        return lambda stop: run_modbus_bridge(settings, stop)
    if settings.http_input_remote:
        # The core's /cnf takes the requests and shares them among bridges over the bus.
        from bridges.http_input_rpc import run_rpc_bridge

        return lambda stop: run_rpc_bridge(settings, stop)
    from bridges.http_input import run_http_bridge

    return lambda stop: run_http_bridge(settings, stop)


def _run_sim(args: argparse.Namespace) -> int:
    from bridges.sim.server import run_sim
    from service.demo import configure_remote, demo_devices

    configure_logging(args.log_level, "text")
    grid_port = args.grid_port or None
    password = os.environ.get("CHARGEBUS_ADMIN_PASSWORD", "")
    configure = args.configure
    if configure and not password:
        # Not an exit: under docker compose the container would be restarted again and again.
        log.error(
            "not configuring chargebus at %s: --configure needs its admin password in "
            "CHARGEBUS_ADMIN_PASSWORD (with docker compose: set it in .env, then "
            "`docker compose --profile demo up -d` again); the simulators run unconfigured",
            configure,
        )
        configure = None
    host = args.advertise or ("127.0.0.1" if args.host in ("0.0.0.0", "::") else args.host)
    ports = [args.port + i for i in range(args.count)]

    async def job(stop: asyncio.Event) -> None:
        sim = asyncio.create_task(run_sim(args.host, args.port, args.count, grid_port, stop))
        if configure and grid_port is not None:
            devices = demo_devices(ports, grid_port, host)
            await _until_set(stop, configure_remote(configure, password, devices))
        await sim

    asyncio.run(_until_signal(job, SIM_SHUTDOWN_GRACE_S))
    log.info("simulators stopped")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "sim":
        return _run_sim(args)
    overrides: dict[str, Any] = {name: getattr(args, name, None) for name in Settings.model_fields}
    try:
        settings = load_settings(args.config, overrides)
    except (ValidationError, ValueError, OSError) as exc:
        print(f"chargebus: bad settings: {exc}", file=sys.stderr)
        return 2
    configure_logging(settings.log_level, settings.log_format)
    try:
        asyncio.run(_until_signal(_job(args, settings)))
    except (StoreError, BrokerPortTaken, HttpPortTaken, ValueError) as exc:
        log.error("%s", exc)
        return 2
    except KeyboardInterrupt:
        pass
    return 0
