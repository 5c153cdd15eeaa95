"""Runs the service's own load balancer against a simulated plant, in simulated time.

The core is built as the service builds it: a real `ServiceState` (its Store in a temporary
directory) and a real `ControlLoop`, both with the simulation's clock. Devices are configured
with `state.set_params(...)` (the body /cnf set_params takes), states are delivered with
`state.record_state(dev_id, payload)` at the time they arrive, and the loop runs as
`ControlLoop._run` runs it: `run_once(refresh=False)` after each burst of arrivals (all that
arrived within one simulation step) and `run_once(refresh=True)` every `cycle_time`. The
commands its sink receives reach the wallboxes after their command delay.

Nothing sleeps: a 60 s plant runs in a fraction of a second. Jitter, lags and noise come from
a random.Random seeded with the plant's seed, so a run is the same every time.
"""

from __future__ import annotations

import asyncio
import heapq
import json
import logging
import random
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bridges.modbus.profiles import device_types as modbus_device_types
from service.control_loop import ControlLoop
from service.core.device_types import DeviceTypeRegistry, builtin_registry
from service.core.models import Installation
from service.state import ServiceState
from service.store import EnergyCounters, Store, UserBook
from tests.plant.model import (
    Command,
    MeterSpec,
    ParamsChange,
    Phases3,
    PlantSpec,
    Wallbox,
    WallboxSpec,
)

# Simulated t = 0 is this unix time (a weekday noon in UTC, so rules with time windows
# behave the same on every run).
EPOCH = 1_767_096_000.0

log = logging.getLogger(__name__)


def device_registry() -> DeviceTypeRegistry:
    """The registry the service builds (service.app.device_registry): built-in types and
    the Modbus profiles'. Built here so the harness does not import the service's wiring."""
    registry = builtin_registry()
    for device_type in modbus_device_types():
        registry.register(device_type)
    return registry


class SimClock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return EPOCH + self.t


@dataclass(frozen=True)
class SentCommand:
    t: float
    dev_id: str
    command: Command


class RecordingSink:
    """The control loop's CommandSink: keeps every command with the simulated time it was
    sent."""

    def __init__(self, clock: SimClock) -> None:
        self.clock = clock
        self.sent: list[SentCommand] = []

    def flush_commands(self) -> None:
        pass

    def preview_command(self, dev_id: str, payload: bytes) -> None:
        pass

    def publish_command(self, dev_id: str, payload: bytes) -> None:
        data = json.loads(payload)
        command = Command(
            bool(data["device_enabled"]),
            bool(data["charging_enabled"]),
            bool(data["paused"]),
            int(data["charging_current"]),
        )
        self.sent.append(SentCommand(self.clock.t, dev_id, command))

    def results_changed(self, dev_ids: set[str], params: bool) -> None:
        pass


@dataclass
class Trace:
    """What happened, step by step (true values, not readings)."""

    t: list[float] = field(default_factory=list)
    other: list[Phases3] = field(default_factory=list)  # base load - solar, per grid phase
    main_limit: list[int] = field(default_factory=list)
    draws: dict[str, list[Phases3]] = field(default_factory=dict)  # per EVSE, grid phases
    offers: dict[str, list[int]] = field(default_factory=dict)  # what each wallbox offers
    wants: dict[str, list[bool]] = field(default_factory=dict)  # its car wants to charge
    plugged: dict[str, list[bool]] = field(default_factory=dict)  # a car is plugged in
    commands: list[SentCommand] = field(default_factory=list)
    runs: int = 0
    failures: int = 0
    # Readings that reached the core after a newer one of the same device.
    out_of_order: int = 0
    # Every meter reading the core received: (when it arrived, when it was taken), s.
    meter_readings: list[tuple[float, float]] = field(default_factory=list)


@dataclass(order=True)
class _Event:
    at: float
    seq: int
    kind: str = field(compare=False)
    dev_id: str = field(compare=False)
    data: Any = field(compare=False)


def evse_config(wb: WallboxSpec) -> dict[str, Any]:
    config: dict[str, Any] = {
        "dev_type": wb.dev_type,
        "dev_id": wb.dev_id,
        "name": f"sim {wb.dev_id}",
        "min_charging_cur": wb.min_ma,
        "max_charging_cur": wb.max_ma,
        "pause_min_time": wb.pause_min_time_s,
        "phase_rotation": wb.rotation,
        "used_phases": wb.used_phases,
        "group": wb.group,
        "charging_rules": list(wb.charging_rules),
    }
    if wb.dev_type == "evse_powerbrain":
        config["address"] = "127.0.0.1:1"  # never polled: no bridge runs here
    return config


def meter_config(m: MeterSpec) -> dict[str, Any]:
    return {"dev_type": "meter_ajax", "dev_id": m.dev_id, "name": f"sim {m.dev_id}", "role": m.role}


def initial_body(spec: PlantSpec) -> dict[str, Any]:
    body: dict[str, Any] = {
        "max_total_current": spec.max_total_ma,
        "cycle_time": spec.cycle_time_ms,
        **spec.extra_params,
        "devices": [meter_config(m) for m in spec.meters]
        + [evse_config(w) for w in spec.wallboxes if w.added_at_s <= 0],
    }
    if spec.groups:
        body["groups"] = [
            {"id": g.id, "max_current": g.max_ma, "parent": g.parent} for g in spec.groups
        ]
    return body


class PlantRun:
    """One plant against one core, stepped to the end by run()."""

    def __init__(self, spec: PlantSpec, data_dir: Path) -> None:
        self.spec = spec
        self.rng = random.Random(spec.seed)
        self.clock = SimClock()
        self.state = ServiceState(
            Store(data_dir),
            device_registry(),
            Installation(),
            UserBook(),
            EnergyCounters(),
            clock=self.clock,
        )
        self.sink = RecordingSink(self.clock)
        # Answers go out with their run: the simulation's time is not the event loop's.
        self.loop = ControlLoop(self.state, self.sink, clock=self.clock, answer_delay_s=0)
        self.wallboxes = {w.dev_id: Wallbox(w) for w in spec.wallboxes}
        self.trace = Trace()
        for dev_id in self.wallboxes:
            self.trace.draws[dev_id] = []
            self.trace.offers[dev_id] = []
            self.trace.wants[dev_id] = []
            self.trace.plugged[dev_id] = []
        self._events: list[_Event] = []
        self._seq = 0
        self._next_report: dict[str, float] = {}
        for w in spec.wallboxes:
            if w.report != "silent":
                self._next_report[w.dev_id] = self.rng.uniform(0, w.report_period_s)
        for m in spec.meters:
            if not m.silent:
                self._next_report[m.dev_id] = self.rng.uniform(0, m.poll_period_s)
        self._meters = {m.dev_id: m for m in spec.meters}
        self._main_limit = spec.max_total_ma
        self._latest_ts: dict[str, float] = {}

    def _push(self, at: float, kind: str, dev_id: str, data: Any) -> None:
        self._seq += 1
        heapq.heappush(self._events, _Event(at, self._seq, kind, dev_id, data))

    # -- the plant's side -------------------------------------------------------------------

    def _true_other(self, t: float) -> Phases3:
        b = self.spec.base_load.at(t)
        s = self.spec.solar.at(t)
        return (b[0] - s[0], b[1] - s[1], b[2] - s[2])

    def _measure(self, t: float) -> None:
        for dev_id, due in list(self._next_report.items()):
            if due > t + 1e-9:
                continue
            wb_spec = self.wallboxes[dev_id].spec if dev_id in self.wallboxes else None
            if wb_spec is not None:
                payload = self.wallboxes[dev_id].report(t, EPOCH)
                low, high = wb_spec.report_lag_s
                period, jitter = wb_spec.report_period_s, wb_spec.report_jitter_s
            else:
                m = self._meters[dev_id]
                payload = self._meter_reading(m, t)
                low, high = m.lag_s
                period, jitter = m.poll_period_s, m.poll_jitter_s
            self._push(t + self.rng.uniform(low, high), "arrive", dev_id, payload)
            self._next_report[dev_id] = due + max(0.05, period + self.rng.uniform(-jitter, jitter))

    def _meter_reading(self, m: MeterSpec, t: float) -> dict[str, Any]:
        if m.role == 2:
            true = self.spec.solar.at(t)
        else:
            other = self._true_other(t)
            draws = [w.grid_draw for w in self.wallboxes.values()]
            true = (
                other[0] + sum(d[0] for d in draws),
                other[1] + sum(d[1] for d in draws),
                other[2] + sum(d[2] for d in draws),
            )
        n = m.noise_ma
        current = [round(c + self.rng.uniform(-n, n)) for c in true]
        return {
            "ts": EPOCH + t,
            "current": current,
            "power_w": round(sum(current) / 1000 * 230.0, 1),
        }

    # -- the core's side ---------------------------------------------------------------------

    async def _run_core(self, *, refresh: bool) -> None:
        before = len(self.sink.sent)
        try:
            await self.loop.run_once(refresh=refresh)
        except Exception:
            # As ControlLoop._run: the loop outlives a failed run (and we count it).
            self.trace.failures += 1
            log.exception("simulated run failed")
        self.trace.runs += 1
        for sent in self.sink.sent[before:]:
            wb = self.wallboxes.get(sent.dev_id)
            if wb is not None:
                self._push(sent.t + wb.spec.command_delay_s, "deliver", sent.dev_id, sent.command)

    async def run(self) -> Trace:
        spec = self.spec
        await self.state.set_params(initial_body(spec))
        # The loop is a listener as in ControlLoop.running(); its _run task is replaced by the
        # stepping below.
        self.state.listeners.append(self.loop)
        added = [
            ParamsChange(w.added_at_s, {"devices": [evse_config(w)]})
            for w in spec.wallboxes
            if w.added_at_s > 0
        ]
        changes = sorted([*spec.changes, *added], key=lambda c: c.t)
        cycle_s = spec.cycle_time_ms / 1000
        next_refresh = 0.0
        steps = round(spec.duration_s / spec.dt_s)
        dt = spec.dt_s
        for k in range(steps + 1):
            t = round(k * dt, 6)
            self.clock.t = t
            # Physics over the last step, then what is true now.
            for wb in self.wallboxes.values():
                wb.step(t, dt if k else 0.0)
            self._record(t)
            self._measure(t)
            arrived = False
            while self._events and self._events[0].at <= t + 1e-9:
                ev = heapq.heappop(self._events)
                if ev.kind == "arrive":
                    ts = float(ev.data["ts"])
                    if ts < self._latest_ts.get(ev.dev_id, 0.0):
                        self.trace.out_of_order += 1
                    self._latest_ts[ev.dev_id] = max(ts, self._latest_ts.get(ev.dev_id, 0.0))
                    if ev.dev_id in self._meters:
                        self.trace.meter_readings.append((t, ts - EPOCH))
                    self.state.record_state(ev.dev_id, json.dumps(ev.data).encode())
                    arrived = True
                else:
                    self.wallboxes[ev.dev_id].apply(t, ev.data)
            while changes and changes[0].t <= t + 1e-9:
                change = changes.pop(0)
                await self.state.set_params(change.body)
                limit = change.body.get("max_total_current")
                if isinstance(limit, int):
                    self._main_limit = limit
                arrived = True
            if t >= next_refresh - 1e-9:
                next_refresh = t + cycle_s
                await self._run_core(refresh=True)
            elif arrived:
                await self._run_core(refresh=False)
        self.trace.commands = list(self.sink.sent)
        return self.trace

    def _record(self, t: float) -> None:
        tr = self.trace
        tr.t.append(t)
        tr.other.append(self._true_other(t))
        tr.main_limit.append(self._main_limit)
        for dev_id, wb in self.wallboxes.items():
            tr.draws[dev_id].append(wb.grid_draw)
            tr.offers[dev_id].append(wb.offer_ma)
            tr.wants[dev_id].append(wb.wants_charge(t))
            tr.plugged[dev_id].append(wb.car is not None and wb.car.plugged(t))


async def run_plant_async(spec: PlantSpec, data_dir: Path | None = None) -> Trace:
    if data_dir is not None:
        return await PlantRun(spec, data_dir).run()
    with tempfile.TemporaryDirectory(prefix="chargebus-plant-") as tmp:
        return await PlantRun(spec, Path(tmp)).run()


def run_plant(spec: PlantSpec) -> Trace:
    """Runs one plant in an event loop of its own (for synchronous callers: the benchmark)."""
    return asyncio.run(run_plant_async(spec))
