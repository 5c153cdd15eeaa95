"""Wiring: the service's parts and their lifetimes, in one `async with` each."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import socket
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass

from bridges.http_input import HttpInputBridge
from bridges.http_input_rpc import HTTP_INPUT_BRIDGE
from bridges.modbus.bridge import ModbusBridge
from bridges.modbus.profiles import device_types as modbus_device_types
from service.auth import AdminAccount, FailureThrottle
from service.bus import LastWill, MessageHandler, MqttBus, Subscription
from service.control_loop import ControlLoop
from service.core.allocation import Allocation, AllocationInput
from service.core.device_types import DeviceTypeRegistry, builtin_registry
from service.decisions import DecisionLog, ScenarioRecorder
from service.diag_log import DiagLogging
from service.embedded_broker import embedded_broker
from service.ha_link import HaDiscovery
from service.http.cnf import CnfContext
from service.http.server import create_app, http_listener, serve_http
from service.metrics import Metrics
from service.modbus_rpc import ModbusRpcClient
from service.mqtt_link import MqttLink
from service.rpc_client import RpcClient
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


def device_registry() -> DeviceTypeRegistry:
    """The built-in device types and those of the Modbus profiles."""
    registry = builtin_registry()
    for device_type in modbus_device_types():
        registry.register(device_type)
    return registry


def make_bus(
    settings: Settings,
    target: MqttTarget,
    role: str,
    *,
    subscriptions: Sequence[Subscription],
    on_message: MessageHandler,
    will: LastWill | None = None,
) -> MqttBus:
    """A connection of one part of chargebus (core, a bridge) with the configured TLS files."""
    return MqttBus(
        target,
        # The site's base topic too: client ids are global on a broker that serves many sites,
        # and containers share host names (host network) and pids (1); a clash would make the
        # broker drop one connection for the other, back and forth.
        client_id=(
            f"chargebus-{settings.base_topic.replace('/', '_')}-{role}"
            f"-{socket.gethostname()}-{os.getpid()}"
        ),
        subscriptions=subscriptions,
        on_message=on_message,
        will=will,
        tls_ca_file=str(settings.mqtt_ca_file) if settings.mqtt_ca_file else None,
        tls_cert_file=str(settings.mqtt_cert_file) if settings.mqtt_cert_file else None,
        tls_key_file=str(settings.mqtt_key_file) if settings.mqtt_key_file else None,
    )


@contextlib.asynccontextmanager
async def modbus_bridge(settings: Settings, target: MqttTarget) -> AsyncIterator[ModbusBridge]:
    """The Modbus bridge with its own connection, status topic and last will."""
    bridge = ModbusBridge(Topics(settings.base_topic), settings.modbus_bridge_name)
    bus = make_bus(
        settings,
        target,
        f"bridge-{settings.modbus_bridge_name}",
        subscriptions=bridge.subscriptions(),
        on_message=bridge.on_message,
        will=LastWill(bridge.status_topic, b"offline"),
    )
    async with bus, bridge.running(bus):
        yield bridge


@contextlib.asynccontextmanager
async def http_input_bridge(
    settings: Settings,
    target: MqttTarget,
    registry: DeviceTypeRegistry | None = None,
    *,
    role: str = "http",
) -> AsyncIterator[HttpInputBridge]:
    """The HTTP-input bridge (set_ajax_*): a bridge like any other, with its own connection
    and only the bus to the core. No will: it holds no retained topic of its own."""
    bridge = HttpInputBridge(Topics(settings.base_topic), registry=registry)
    bus = make_bus(
        settings,
        target,
        role,
        subscriptions=bridge.subscriptions(),
        on_message=bridge.on_message,
    )
    async with bus:
        bridge.attach(bus)
        yield bridge


@contextlib.asynccontextmanager
async def running_service(settings: Settings) -> AsyncIterator[RunningService]:
    store = Store(settings.data_dir)
    state = ServiceState.load(store, device_registry())
    metrics = Metrics(state)
    admin = AdminAccount.load_or_create(store, settings.admin_password)
    topics = Topics(settings.base_topic)
    link = MqttLink(state, topics)
    ha = HaDiscovery(
        state, topics, prefix=settings.ha_discovery_prefix, enabled=settings.ha_discovery
    )

    modbus = ModbusRpcClient(
        topics, f"core-{socket.gethostname()}-{os.getpid()}", bridge=settings.modbus_bridge_name
    )
    # http_input_remote: set_ajax_* shared among `chargebus bridge http` processes.
    http_rpc = RpcClient(
        topics, f"core-{socket.gethostname()}-{os.getpid()}-http-input", HTTP_INPUT_BRIDGE
    )

    def on_message(topic: str, payload: bytes, retained: bool) -> None:
        link.on_message(topic, payload, retained)
        ha.on_message(topic, payload, retained)
        modbus.on_message(topic, payload, retained)
        http_rpc.on_message(topic, payload, retained)

    async with contextlib.AsyncExitStack() as stack:
        listener = stack.enter_context(http_listener(settings.http_host, settings.http_port))
        target = settings.mqtt_target()
        if target is None:
            target = await stack.enter_async_context(
                embedded_broker(settings.embedded_broker_host, settings.embedded_broker_port)
            )

        bus = make_bus(
            settings,
            target,
            "core",
            subscriptions=[
                *link.subscriptions(),
                *ha.subscriptions(),
                *modbus.subscriptions(),
                *http_rpc.subscriptions(),
            ],
            on_message=on_message,
            will=LastWill(topics.status, b"offline"),
        )
        await stack.enter_async_context(bus)
        # Held like every retained topic, so each reconnect overrides the will's "offline".
        bus.hold_retained(topics.status, b"online")
        link.attach(bus)
        metrics.sources.bus = bus.stats
        ha.attach(bus)
        stack.callback(ha.close)
        modbus.attach(bus)
        http_rpc.attach(bus)
        if settings.modbus_bridge:
            # In this process, but over the broker like a bridge on another host.
            bridge = await stack.enter_async_context(modbus_bridge(settings, target))
            metrics.sources.modbus_errors = lambda: {
                dev_id: worker.poll_errors for dev_id, worker in bridge.workers.items()
            }
        stack.callback(link.close)
        http_input = None
        if not settings.http_input_remote:
            http_input = await stack.enter_async_context(
                http_input_bridge(settings, target, state.registry)
            )
        diag = DiagLogging(settings.data_dir / "diag", settings.diag_log_seconds)
        decisions = DecisionLog()
        # While diagnostic logging is on, every run is also a step of a replayable scenario.
        recorder = ScenarioRecorder(settings.data_dir / "diag", lambda: diag.active)
        stack.callback(recorder.close)

        def explain(
            inp: AllocationInput, allocated: Allocation, commanded: Allocation, elapsed: float
        ) -> None:
            decisions.run(inp, commanded, elapsed)
            recorder.run(inp, allocated)

        control = await stack.enter_async_context(
            ControlLoop(state, link, on_run=metrics.observe_run, on_result=explain).running()
        )
        metrics.sources.loop = control.stats
        # Device info waits while a run is due, so that it never delays a meter reading's
        # commands (MqttLink).
        link.control_busy = control.busy
        ctx = CnfContext(
            state=state,
            admin=admin,
            throttle=FailureThrottle(),
            diag=diag,
            control=control,
            modbus=modbus,
            http_input=http_input,
            http_input_rpc=http_rpc if settings.http_input_remote else None,
        )
        stack.callback(ctx.diag.stop)
        app = create_app(ctx, settings.max_body_bytes, metrics)
        http_port = await stack.enter_async_context(serve_http(app, listener))
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


async def run_until_stopped(settings: Settings, stop: asyncio.Event) -> None:
    async with running_service(settings):
        await stop.wait()
        log.info("stopping")
