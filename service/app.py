"""Wiring: the service's parts and their lifetimes, in one `async with` each."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass

from bridges.http_input import HttpInputBridge, http_input_bridge
from bridges.http_input_rpc import HTTP_INPUT_BRIDGE, RemoteHttpInput
from bridges.mockup import DEVICE_TYPES as MOCKUP_DEVICE_TYPES
from bridges.mockup import mockup_bridge
from bridges.modbus.profiles import device_types as modbus_device_types
from bridges.modbus.runner import modbus_bridge
from bridges.ocpp.bridge import OcppBridge
from bridges.ocpp.device_types import device_types as ocpp_device_types
from bridges.ocpp.runner import ocpp_bridge
from service.auth import AdminAccount, FailureThrottle
from service.bus import LastWill, MqttBus
from service.bus_setup import make_bus
from service.control_lane import ControlLane
from service.control_loop import ControlLoop
from service.core.allocation import Allocation, AllocationInput
from service.core.device_types import DeviceTypeRegistry, builtin_registry
from service.decisions import DecisionLog, ScenarioRecorder
from service.diag_log import DiagLogging
from service.embedded_broker import embedded_broker
from service.ha_link import HaDiscovery
from service.http.cnf import CnfContext, HttpInput
from service.http.events import DashboardHub
from service.http.server import create_app
from service.httpkit import http_listener, serve_http
from service.metrics import Metrics
from service.modbus_rpc import ModbusRpcClient
from service.mqtt_link import MqttLink
from service.rpc_client import RpcClient
from service.settings import MqttTarget, Settings
from service.site_sampler import chart_sampler, group_tree
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
    # The HTTP-input bridge in this process; None with http_input_remote.
    http_input: HttpInputBridge | None = None
    # The OCPP bridge in this process; None with ocpp_bridge off.
    ocpp: OcppBridge | None = None


def device_registry() -> DeviceTypeRegistry:
    """The API's own device types and those every bridge brings."""
    registry = builtin_registry()
    for device_type in [*modbus_device_types(), *ocpp_device_types(), *MOCKUP_DEVICE_TYPES]:
        registry.register(device_type)
    return registry


@contextlib.asynccontextmanager
async def running_service(settings: Settings) -> AsyncIterator[RunningService]:
    store = Store(settings.data_dir)
    state = ServiceState.load(store, device_registry())
    metrics = Metrics(state)
    # Stored (and a generated one shown) only once the start has succeeded, below.
    admin = AdminAccount.prepare(store, settings.admin_password)
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
                embedded_broker(
                    settings.embedded_broker_host,
                    settings.embedded_broker_port,
                    settings.data_dir / "mosquitto",
                )
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
        # Meter readings in and commands out on a connection of their own (control_lane).
        lane = ControlLane(state, topics)
        lane_bus = make_bus(
            settings,
            target,
            "core-control",
            subscriptions=lane.subscriptions(),
            on_message=link.on_lane_message,
        )
        await stack.enter_async_context(lane_bus)
        lane.attach(lane_bus)
        stack.callback(lane.detach)
        link.lane = lane
        # Held like every retained topic, so each reconnect overrides the will's "offline".
        bus.hold_retained(topics.status, b"online")
        link.attach(bus)
        metrics.sources.bus = bus.stats
        metrics.sources.lane = lane_bus.stats
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
        # get_params shows the OCPP server's settings under the product's names.
        state.server_params = {
            "ocpp_srv_port": settings.ocpp_port,
            "ocpp_srv_tls_mode": "on" if settings.ocpp_tls_cert_file else "off",
            "ocpp_srv_use_ext_cert": settings.ocpp_tls_cert_file is not None,
            "ocpp_srv_cert_fn": str(settings.ocpp_tls_cert_file or ""),
            "ocpp_srv_private_key_fn": str(settings.ocpp_tls_key_file or ""),
        }
        # The guess throttle: one per process, shared by /cnf and the OCPP bridge here.
        throttle = FailureThrottle()
        ocpp = None
        if settings.ocpp_bridge:
            # Listens once an evse_ocpp device is configured: no port opened for nothing.
            ocpp = await stack.enter_async_context(ocpp_bridge(settings, target, throttle=throttle))
        # Simulated devices (evse_mockup, meter_mockup) configured in the installation.
        await stack.enter_async_context(mockup_bridge(settings, target))
        stack.callback(link.close)
        http_input = None
        if not settings.http_input_remote:
            http_input = await stack.enter_async_context(
                http_input_bridge(settings, target, state.registry, commands_handed_in=True)
            )
            link.command_listeners.append(http_input.command_published)
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
        cnf_http_input: HttpInput | None = (
            RemoteHttpInput(http_rpc) if settings.http_input_remote else http_input
        )
        ctx = CnfContext(
            state=state,
            admin=admin,
            throttle=throttle,
            diag=diag,
            control=control,
            modbus=modbus,
            http_input=cnf_http_input,
        )
        stack.callback(ctx.diag.stop)
        # The dashboard's live feed: the info payloads the link publishes, as they go out.
        dashboard = DashboardHub(group_tree(state), chart_sampler(state))
        link.observe(dashboard)
        dashboard.start()
        stack.callback(dashboard.close)
        app = create_app(ctx, settings.max_body_bytes, metrics, dashboard)
        http_port = await stack.enter_async_context(serve_http(app, listener))
        admin.commit()
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
        yield RunningService(
            settings, state, bus, link, target, http_port, ctx, control, http_input, ocpp
        )


async def run_until_stopped(settings: Settings, stop: asyncio.Event) -> None:
    async with running_service(settings):
        await stop.wait()
