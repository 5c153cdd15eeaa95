"""Prometheus metrics: what happens (counters, the run-time histogram) and what is (gauges).

Gauges and the bus/loop counters are not kept up to date as things change: a collector reads
the live state, `BusStats`, `LoopStats` and the Modbus error source at scrape time, so the hot
paths (message dispatch, the allocation run) pay nothing for them. The registry is the
`Metrics` object's own, never prometheus_client's global one, so several services (tests) can
live in one process.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.registry import Collector

from service.bus import BusStats
from service.control_loop import LoopStats
from service.core.models import EvseConfig
from service.state import ServiceState

log = logging.getLogger(__name__)

# A run of a few EVSEs takes well under a millisecond, a thousand EVSEs some tens.
RUN_BUCKETS = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
)  # fmt: skip
PHASES = ("L1", "L2", "L3")

ModbusErrorSource = Callable[[], Mapping[str, int]]


@dataclass
class Sources:
    """What the collector reads at scrape time; parts are attached as the service starts."""

    state: ServiceState | None = None
    bus: BusStats | None = None
    # The core's control lane (service/control_lane.py): counted with `bus`.
    lane: BusStats | None = None
    loop: LoopStats | None = None
    modbus_errors: ModbusErrorSource | None = None


def _amperes(milliamps: int) -> float:
    return milliamps / 1000


def device_families(state: ServiceState) -> list[Metric]:
    current = GaugeMetricFamily(
        "chargebus_device_current_amperes",
        "Last measured current per phase",
        labels=["dev_id", "phase"],
    )
    power = GaugeMetricFamily(
        "chargebus_device_power_watts", "Last measured active power", labels=["dev_id"]
    )
    allocated = GaugeMetricFamily(
        "chargebus_evse_allocated_current_amperes",
        "Charging current the last allocation commanded",
        labels=["dev_id"],
    )
    com_err = GaugeMetricFamily(
        "chargebus_device_com_err",
        "1 while the device has a communication error (bridge report or stale data)",
        labels=["dev_id"],
    )
    results = state.allocation.evses if state.allocation is not None else {}
    for dev_id, config in state.installation.devices.items():
        runtime = state.runtime.get(dev_id)
        com_err.add_metric([dev_id], 1.0 if runtime is not None and runtime.com_err else 0.0)
        measured = runtime.state if runtime is not None else None
        if measured is not None:
            for phase, milliamps in zip(PHASES, measured.current, strict=True):
                current.add_metric([dev_id, phase], _amperes(milliamps))
            if measured.power_w is not None:
                power.add_metric([dev_id], measured.power_w)
        result = results.get(dev_id)
        if isinstance(config, EvseConfig) and result is not None:
            allocated.add_metric([dev_id], _amperes(result.charging_current))
    return [current, power, allocated, com_err]


def budget_family(state: ServiceState) -> Metric:
    budget = GaugeMetricFamily(
        "chargebus_group_budget_amperes",
        "Per-phase current the last allocation left for a group's EVSEs (group 0 = main)",
        labels=["group", "phase"],
    )
    if state.allocation is not None:
        for group, per_phase in sorted(state.allocation.budget_per_phase.items()):
            for phase, milliamps in zip(PHASES, per_phase, strict=True):
                budget.add_metric([str(group), phase], _amperes(milliamps))
    return budget


def bus_families(stats: BusStats) -> list[Metric]:
    received = CounterMetricFamily(
        "chargebus_mqtt_messages_received", "MQTT messages received", value=stats.received
    )
    published = CounterMetricFamily(
        "chargebus_mqtt_messages_published", "MQTT messages published", value=stats.published
    )
    rejected = CounterMetricFamily(
        "chargebus_mqtt_messages_rejected",
        "MQTT messages refused, by reason",
        labels=["reason"],
    )
    for reason, count in sorted(stats.rejected_by_reason.items()):
        rejected.add_metric([reason], count)
    unexplained = stats.rejected - sum(stats.rejected_by_reason.values())
    if unexplained > 0:
        rejected.add_metric(["unspecified"], unexplained)
    connects = CounterMetricFamily(
        "chargebus_mqtt_connects", "Connections made to the broker", value=stats.connects
    )
    return [received, published, rejected, connects]


def loop_families(stats: LoopStats) -> list[Metric]:
    return [
        CounterMetricFamily(
            "chargebus_control_runs", "Load-balancing runs completed", value=stats.runs
        ),
        CounterMetricFamily(
            "chargebus_control_failures", "Load-balancing runs that failed", value=stats.failures
        ),
        CounterMetricFamily(
            "chargebus_control_commands_sent",
            "EVSE commands published",
            value=stats.commands_sent,
        ),
        CounterMetricFamily(
            "chargebus_control_given_way",
            "Report or cycle runs given up for a meter reading that came meanwhile",
            value=stats.given_way,
        ),
    ]


def modbus_family(errors: Mapping[str, int]) -> Metric:
    family = CounterMetricFamily(
        "chargebus_modbus_errors", "Modbus request failures, by device", labels=["dev_id"]
    )
    for dev_id, count in sorted(errors.items()):
        family.add_metric([dev_id], count)
    return family


def collect_families(sources: Sources) -> list[Metric]:
    families: list[Metric] = []
    if sources.state is not None:
        families += device_families(sources.state)
        families.append(budget_family(sources.state))
    if sources.bus is not None:
        stats = sources.bus if sources.lane is None else sources.bus.plus(sources.lane)
        families += bus_families(stats)
    if sources.loop is not None:
        families += loop_families(sources.loop)
    if sources.modbus_errors is not None:
        try:
            families.append(modbus_family(sources.modbus_errors()))
        except Exception:
            # A broken source must cost its own family, not the whole scrape.
            log.exception("reading the Modbus error counts failed")
    return families


class _LiveCollector(Collector):
    def __init__(self, sources: Sources) -> None:
        self.sources = sources

    def collect(self) -> Iterable[Metric]:
        return collect_families(self.sources)

    def describe(self) -> Iterable[Metric]:
        # Registering must not read state that is not attached yet.
        return []


class Metrics:
    def __init__(
        self,
        state: ServiceState | None = None,
        *,
        modbus_errors: ModbusErrorSource | None = None,
    ) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.sources = Sources(state=state, modbus_errors=modbus_errors)
        self.run_seconds = Histogram(
            "chargebus_allocation_run_seconds",
            "Duration of a load-balancing run (allocation and sending its commands)",
            buckets=RUN_BUCKETS,
            registry=self.registry,
        )
        self.http_requests = Counter(
            "chargebus_http_requests",
            "/cnf requests by cmd and HTTP status",
            ["cmd", "status"],
            registry=self.registry,
        )
        self.registry.register(_LiveCollector(self.sources))

    def observe_run(self, seconds: float) -> None:
        """ControlLoop's on_run hook."""
        self.run_seconds.observe(seconds)

    def count_request(self, cmd: str, status: int) -> None:
        self.http_requests.labels(cmd=cmd, status=str(status)).inc()

    def render(self) -> tuple[bytes, str]:
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
