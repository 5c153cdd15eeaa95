"""Wiring: the service's parts and their lifetimes, in one `async with` each."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import signal
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass

from service.auth import AdminAccount, FailureThrottle
from service.bus import LastWill, MqttBus
from service.control_loop import ControlLoop
from service.core.device_types import builtin_registry
from service.diag_log import DiagLogging
from service.embedded_broker import embedded_broker
from service.ha_link import HaDiscovery
from service.http.cnf import CnfContext
from service.http.server import create_app, serve_http
from service.mqtt_link import MqttLink
from service.settings import MqttTarget, Settings
from service.state import ServiceState
from service.store import Store
from service.topics import Topics

log = logging.getLogger(__name__)


@dataclass
class RunningService:
    settings: Settings
    state: ServiceState
    bus: MqttBus
    link: MqttLink
    broker: MqttTarget
    http_port: int
    cnf: CnfContext
    control: ControlLoop


@contextlib.asynccontextmanager
async def running_service(settings: Settings) -> AsyncIterator[RunningService]:
    store = Store(settings.data_dir)
    registry = builtin_registry()
    state = ServiceState.load(store, registry)
    admin = AdminAccount.load_or_create(store, settings.admin_password)
    topics = Topics(settings.base_topic)
    link = MqttLink(state, topics)
    ha = HaDiscovery(
        state, topics, prefix=settings.ha_discovery_prefix, enabled=settings.ha_discovery
    )

    def on_message(topic: str, payload: bytes, retained: bool) -> None:
        link.on_message(topic, payload, retained)
        ha.on_message(topic, payload, retained)

    async with contextlib.AsyncExitStack() as stack:
        target = settings.mqtt_target()
        if target is None:
            target = await stack.enter_async_context(
                embedded_broker(settings.embedded_broker_host, settings.embedded_broker_port)
            )

        bus = MqttBus(
            target,
            client_id=f"chargebus-core-{socket.gethostname()}-{os.getpid()}",
            subscriptions=link.subscriptions() + ha.subscriptions(),
            on_message=on_message,
            will=LastWill(topics.status, b"offline"),
            tls_ca_file=str(settings.mqtt_ca_file) if settings.mqtt_ca_file else None,
            tls_cert_file=str(settings.mqtt_cert_file) if settings.mqtt_cert_file else None,
            tls_key_file=str(settings.mqtt_key_file) if settings.mqtt_key_file else None,
        )
        await stack.enter_async_context(bus)
        # Held like every retained topic, so each reconnect overrides the will's "offline".
        bus.hold_retained(topics.status, b"online")
        link.attach(bus)
        ha.attach(bus)
        stack.callback(link.close)
        control = await stack.enter_async_context(ControlLoop(state, link).running())
        ctx = CnfContext(
            state=state,
            admin=admin,
            throttle=FailureThrottle(),
            diag=DiagLogging(settings.data_dir / "diag", settings.diag_log_seconds),
            control=control,
        )
        stack.callback(ctx.diag.stop)
        app = create_app(ctx, settings.max_body_bytes)
        http_port = await stack.enter_async_context(
            serve_http(app, settings.http_host, settings.http_port)
        )
        # What exists now (configuration, models, modules) lives as long as the process: out
        # of the collector's sight, a full collection no longer stalls a run for milliseconds.
        gc.collect()
        gc.freeze()
        log.info(
            "chargebus ready: API http://%s:%d/cnf, MQTT %s%s, base topic %r, data in %s",
            settings.http_host,
            http_port,
            target.redacted(),
            " (embedded)" if settings.mqtt_url is None else "",
            settings.base_topic,
            settings.data_dir,
        )
        yield RunningService(settings, state, bus, link, target, http_port, ctx, control)


async def run_until_stopped(settings: Settings) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with running_service(settings):
        await stop.wait()
        log.info("stopping")
