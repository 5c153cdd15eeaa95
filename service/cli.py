"""The `chargebus` command line: runs a command until SIGINT or SIGTERM (the arguments are in
cli_args.py)."""

from __future__ import annotations

import argparse
import asyncio
import faulthandler
import getpass
import logging
import os
import signal
import sys
import threading
import tomllib
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from service.auth import MIN_PASSWORD_LENGTH, generate_password, hash_password
from service.cli_args import CliError, Parsers, config_file_error, fail, settings_error
from service.embedded_broker import BrokerPortTaken, BrokerUnavailable
from service.httpkit import HttpPortTaken
from service.log_format import configure_logging
from service.mosquitto_child import MosquittoFailed
from service.settings import Settings, load_settings
from service.store import Store, StoreError, StoreWriteError, data_dir_problem

log = logging.getLogger("chargebus")


Job = Callable[[asyncio.Event], Awaitable[None]]


# How long an orderly stop may take before the process gives up on it: a service manager
# (and a test) must be able to count on a stopped chargebus being gone.
SHUTDOWN_GRACE_S = 15.0
# The simulator holds no state worth waiting for, and docker stops a container after 10 s.
SIM_SHUTDOWN_GRACE_S = 2.0


def _stop_requested(stop: asyncio.Event, grace_s: float, sig: signal.Signals) -> None:
    if stop.is_set():
        return
    log.info("%s: stopping", sig.name)
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
        loop.add_signal_handler(sig, _stop_requested, stop, grace_s, sig)
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
    if args.bridge == "ocpp":
        from bridges.ocpp.runner import run_ocpp_bridge

        return lambda stop: run_ocpp_bridge(settings, stop)
    if settings.http_input_remote:
        # The core's /cnf takes the requests and shares them among bridges over the bus.
        from bridges.http_input_rpc import run_rpc_bridge

        return lambda stop: run_rpc_bridge(settings, stop)
    from bridges.http_input import run_http_bridge

    return lambda stop: run_http_bridge(settings, stop)


def _run_sim(args: argparse.Namespace) -> int:
    from bridges.sim.ocpp_cp import parse_quirks, run_ocpp_sims, sim_devices
    from bridges.sim.server import run_sim
    from service.demo import configure_remote, demo_devices

    configure_logging(args.log_level, "text")
    try:
        quirks = parse_quirks(args.ocpp_quirks)
    except ValueError as exc:
        return fail("chargebus sim", f"--ocpp-quirks: {exc}")
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
        boxes = None
        if args.ocpp > 0:
            boxes = asyncio.create_task(run_ocpp_sims(args.ocpp_url, args.ocpp, quirks, stop))
        devices = sim_devices(args.ocpp)
        if grid_port is not None:
            devices = [*demo_devices(ports, grid_port, host), *devices]
        if configure and devices:
            await _until_set(stop, configure_remote(configure, password, devices))
        await sim
        if boxes is not None:
            await boxes

    asyncio.run(_until_signal(job, SIM_SHUTDOWN_GRACE_S))
    log.info("simulators stopped")
    return 0


def _settings(args: argparse.Namespace) -> Settings:
    """The settings from file, environment and flags; any problem as one CliError."""
    overrides: dict[str, Any] = {name: getattr(args, name, None) for name in Settings.model_fields}
    try:
        return load_settings(args.config, overrides)
    except ValidationError as exc:
        raise settings_error(exc, overrides, args.config) from None
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise config_file_error(exc, args.config) from None


def _check_data_dir(args: argparse.Namespace, settings: Settings) -> None:
    """Before anything starts, so that a data dir chargebus cannot use is one line, not a
    traceback from deep inside the start."""
    if args.command not in ("run", "demo"):
        return  # a bridge keeps nothing there
    path = settings.data_dir / "demo" if args.command == "demo" else settings.data_dir
    problem = data_dir_problem(path)
    if problem is not None:
        raise CliError(
            f"data dir {path} {problem}: choose another with --data-dir or CHARGEBUS_DATA_DIR, "
            "or fix its permissions"
        )


def _read_new_password(args: argparse.Namespace) -> str:
    if args.generate:
        return generate_password()
    if sys.stdin.isatty():
        first = getpass.getpass("new admin password: ")
        if getpass.getpass("again: ") != first:
            raise CliError("the two passwords differ; nothing changed")
        return first
    # Piped in (a script, `docker compose exec -T`): the first line, without its newline.
    return sys.stdin.readline().rstrip("\r\n")


def _admin_password(args: argparse.Namespace, settings: Settings) -> None:
    """`chargebus admin-password`: replaces the stored hash. It needs what the service
    needs, write access to the data dir; a running service picks it up at its next check."""
    data_dir = settings.data_dir / "demo" if args.demo else settings.data_dir
    if not data_dir.is_dir():
        # Not created: a mistyped path would hold a password nobody uses.
        what = "is not a directory" if data_dir.exists() else "does not exist"
        raise CliError(
            f"data dir {data_dir} {what}: give the one chargebus runs with "
            "(--data-dir, CHARGEBUS_DATA_DIR; the demo's with --demo)"
        )
    password = _read_new_password(args)
    if len(password) < MIN_PASSWORD_LENGTH:
        raise CliError(f"the password needs at least {MIN_PASSWORD_LENGTH} characters")
    store = Store(data_dir)
    try:
        store.save(store.ADMIN, hash_password(password))
    except OSError as exc:
        raise CliError(f"cannot write {store.path(store.ADMIN)}: {exc.strerror or exc}") from None
    _same_owner_as_dir(store.path(store.ADMIN), data_dir)
    if args.generate:
        print(password)
    print(
        f"chargebus admin-password: stored in {store.path(store.ADMIN)} (log in as 'admin'); "
        "a running chargebus uses it from its next login",
        file=sys.stderr,
    )


def _same_owner_as_dir(path: Path, data_dir: Path) -> None:
    """Run as root (sudo, `docker exec`) on a service user's data dir, the new file would be
    root's own and unreadable for the service."""
    if os.geteuid() != 0:
        return
    owner = data_dir.stat()
    if owner.st_uid != 0:
        os.chown(path, owner.st_uid, owner.st_gid)


def main(argv: list[str] | None = None) -> int:
    parsers = Parsers()
    args = parsers.parse(argv)
    if args.command == "sim":
        return _run_sim(args)
    prog = parsers.command_parser(args).prog
    try:
        settings = _settings(args)
        if args.command == "admin-password":
            _admin_password(args, settings)
            return 0
        _check_data_dir(args, settings)
    except CliError as exc:
        return fail(prog, f"{exc} (see {prog} --help)")
    configure_logging(settings.log_level, settings.log_format)
    try:
        asyncio.run(_until_signal(_job(args, settings)))
    except (
        StoreError,
        StoreWriteError,
        BrokerPortTaken,
        BrokerUnavailable,
        MosquittoFailed,
        HttpPortTaken,
        ValueError,
    ) as exc:
        log.error("%s", exc)
        return 2
    except KeyboardInterrupt:
        pass
    log.info("%s stopped", prog)
    return 0
