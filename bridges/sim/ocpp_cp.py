"""A simulated OCPP 1.6J charge point: the `ocpp` library in the charge-point role, with a
simulated car (bridges/sim/car.py) on each connector, and switches for the quirks of real
boxes (docs/ocpp.md, "Quirks"), so the OCPP bridge can be tested against them.

It connects to `url + id` with the `ocpp1.6` subprotocol (and basic auth when it has a
password), sends BootNotification (Accepted is awaited before anything else), status
changes, meter values every `meter_interval` while charging, and reconnects with backoff.
It takes SetChargingProfile (the last accepted profile of each connector limits its car),
ClearChargingProfile, GetConfiguration, ChangeConfiguration, TriggerMessage and
RemoteStart/StopTransaction.

Quirks (`QUIRKS`):
- `no_boot_on_reconnect`: BootNotification only at the first connection (asked by Trigger);
- `watts_only`: reports rate unit Power and rejects profiles in A;
- `stack_level_zero`: reports a maximum stack level of 8 but rejects profiles above 0;
- `needs_remote_start`: a plugged car waits in Preparing for RemoteStartTransaction;
- `kwh_units`: energy in kWh and power in kW;
- `phaseless_current`: one Current.Import without a phase label;
- `extra_fields`: vendor fields in BootNotification, StatusNotification and MeterValues;
- `slow_replies`: answers every call after 2 s;
- `epoch_timestamps`: timestamps from 1970 (a box before its clock is set).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import aiohttp
from aiohttp import WSMsgType
from ocpp.routing import after, on
from ocpp.v16 import ChargePoint
from ocpp.v16 import call_result as result
from ocpp.v16.enums import (
    Action,
    AvailabilityStatus,
    ChargingProfileStatus,
    ClearChargingProfileStatus,
    ConfigurationStatus,
    RegistrationStatus,
    RemoteStartStopStatus,
    TriggerMessageStatus,
)

from bridges.common.tasks import cancelled
from bridges.sim.car import Car, CarState

log = logging.getLogger(__name__)

QUIRKS = frozenset(
    {
        "no_boot_on_reconnect",
        "watts_only",
        "stack_level_zero",
        "needs_remote_start",
        "kwh_units",
        "phaseless_current",
        "extra_fields",
        "slow_replies",
        "epoch_timestamps",
    }
)
SLOW_REPLY_S = 2.0
DEFAULT_MAX_A = 16.0
NOMINAL_V = 230.0
# How long a close handshake may wait for the central system (the simulator's whole stop
# may take SIM_SHUTDOWN_GRACE_S, 2 s).
CLOSE_TIMEOUT_S = 0.5


def parse_quirks(text: str) -> frozenset[str]:
    names = frozenset(q.strip() for q in text.split(",") if q.strip())
    unknown = names - QUIRKS
    if unknown:
        raise ValueError(f"unknown quirk(s) {', '.join(sorted(unknown))}; known: "
                         f"{', '.join(sorted(QUIRKS))}")  # fmt: skip
    return names


@dataclass
class SimConnector:
    connector_id: int
    car: Car
    status: str = "Available"
    transaction_id: int | None = None
    id_tag: str = ""
    # The limit of the last accepted profile, in A per phase; None = no profile (box max).
    limit_a: float | None = None
    energy_wh: float = 0.0
    currents_ma: tuple[int, int, int] = (0, 0, 0)
    profiles: list[dict[str, Any]] = field(default_factory=list)

    def offered_a(self, max_a: float) -> float:
        return max_a if self.limit_a is None else min(max_a, self.limit_a)


class _Connection:
    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws

    async def recv(self) -> str:
        msg = await self.ws.receive()
        if msg.type == WSMsgType.TEXT:
            return str(msg.data)
        raise ConnectionError(f"websocket {msg.type.name.lower()}")

    async def send(self, data: str) -> None:
        await self.ws.send_str(data)


def _payload(name: str, fields: dict[str, Any]) -> Any:
    """A call payload named like the library's (the action is the class name), with any
    fields: the quirk `extra_fields` sends what the schemas forbid."""
    cls = dataclasses.make_dataclass(name, list(fields))
    return cls(**fields)


class _Side(ChargePoint):  # type: ignore[misc]
    def __init__(self, sim: SimChargePoint, connection: _Connection) -> None:
        super().__init__(sim.cp_id, connection, response_timeout=10)
        self.sim = sim

    async def _maybe_slow(self) -> None:
        if "slow_replies" in self.sim.quirks:
            await asyncio.sleep(SLOW_REPLY_S)

    @on(Action.set_charging_profile)  # type: ignore[untyped-decorator]
    async def on_set_charging_profile(
        self, connector_id: int, cs_charging_profiles: dict[str, Any], **_: Any
    ) -> result.SetChargingProfile:
        await self._maybe_slow()
        return result.SetChargingProfile(
            status=self.sim.take_profile(connector_id, cs_charging_profiles)
        )

    @on(Action.clear_charging_profile)  # type: ignore[untyped-decorator]
    async def on_clear_charging_profile(self, **payload: Any) -> result.ClearChargingProfile:
        await self._maybe_slow()
        cleared = self.sim.clear_profiles(payload.get("connector_id"), payload.get("id"))
        return result.ClearChargingProfile(
            status=ClearChargingProfileStatus.accepted if cleared
            else ClearChargingProfileStatus.unknown
        )  # fmt: skip

    @on(Action.get_configuration)  # type: ignore[untyped-decorator]
    async def on_get_configuration(self, **payload: Any) -> result.GetConfiguration:
        await self._maybe_slow()
        return result.GetConfiguration(
            configuration_key=[
                {"key": k, "readonly": False, "value": v} for k, v in self.sim.configuration.items()
            ]
        )

    @on(Action.change_configuration)  # type: ignore[untyped-decorator]
    async def on_change_configuration(
        self, key: str, value: str, **_: Any
    ) -> result.ChangeConfiguration:
        await self._maybe_slow()
        self.sim.configuration[key] = value
        self.sim.changed_keys.append(key)
        if key == "MeterValueSampleInterval" and value.isdigit():
            self.sim.meter_interval = max(1.0, float(value))
        return result.ChangeConfiguration(status=ConfigurationStatus.accepted)

    @on(Action.trigger_message)  # type: ignore[untyped-decorator]
    async def on_trigger_message(
        self, requested_message: str, **payload: Any
    ) -> result.TriggerMessage:
        await self._maybe_slow()
        self.sim.triggered.append(requested_message)
        return result.TriggerMessage(status=TriggerMessageStatus.accepted)

    @after(Action.trigger_message)  # type: ignore[untyped-decorator]
    async def after_trigger_message(self, requested_message: str, **payload: Any) -> None:
        await self.sim.send_triggered(requested_message, payload.get("connector_id"))

    @on(Action.remote_start_transaction)  # type: ignore[untyped-decorator]
    async def on_remote_start(self, id_tag: str, **payload: Any) -> result.RemoteStartTransaction:
        await self._maybe_slow()
        connector = self.sim.connectors.get(int(payload.get("connector_id") or 1))
        ok = connector is not None and connector.car.plugged and connector.transaction_id is None
        if ok and connector is not None:
            self.sim.remote_starts.append(connector.connector_id)
            self.sim.spawn(self.sim.start_transaction(connector, id_tag))
        return result.RemoteStartTransaction(
            status=RemoteStartStopStatus.accepted if ok else RemoteStartStopStatus.rejected
        )

    @on(Action.remote_stop_transaction)  # type: ignore[untyped-decorator]
    async def on_remote_stop(self, transaction_id: int, **_: Any) -> result.RemoteStopTransaction:
        for connector in self.sim.connectors.values():
            if connector.transaction_id == transaction_id:
                self.sim.spawn(self.sim.stop_transaction(connector))
                return result.RemoteStopTransaction(status=RemoteStartStopStatus.accepted)
        return result.RemoteStopTransaction(status=RemoteStartStopStatus.rejected)

    @on(Action.change_availability)  # type: ignore[untyped-decorator]
    async def on_change_availability(self, **_: Any) -> result.ChangeAvailability:
        return result.ChangeAvailability(status=AvailabilityStatus.accepted)


class SimChargePoint:
    def __init__(
        self,
        cp_id: str,
        url: str,
        *,
        connectors: int = 1,
        quirks: frozenset[str] = frozenset(),
        password: bytes | str | None = None,
        meter_interval: float = 10.0,
        tick_s: float = 0.5,
        max_a: float = DEFAULT_MAX_A,
        cars: list[Car] | None = None,
        vendor: str = "chargebus",
        model: str = "SimBox",
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        unknown = quirks - QUIRKS
        if unknown:
            raise ValueError(f"unknown quirks: {sorted(unknown)}")
        self.cp_id = cp_id
        self.url = url if url.endswith("/") else url + "/"
        self.quirks = quirks
        self.password = password.encode() if isinstance(password, str) else password
        self.meter_interval = meter_interval
        self.tick_s = tick_s
        self.max_a = max_a
        self.vendor = vendor
        self.model = model
        self.clock = clock
        self.connectors = {
            i: SimConnector(i, (cars or [])[i - 1] if cars and i <= len(cars) else Car())
            for i in range(1, connectors + 1)
        }
        self.configuration: dict[str, str] = {
            "ChargeProfileMaxStackLevel": "8",
            "ChargingScheduleAllowedChargingRateUnit": "Power"
            if "watts_only" in quirks
            else "Current,Power",
            "SupportedFeatureProfiles": "Core,SmartCharging,RemoteTrigger",
            "MeterValuesSampledData": "Energy.Active.Import.Register",
            "MeterValueSampleInterval": str(int(meter_interval)),
            "NumberOfConnectors": str(connectors),
            "HeartbeatInterval": "60",
        }
        self.changed_keys: list[str] = []
        self.triggered: list[str] = []
        self.remote_starts: list[int] = []
        self.boots_sent = 0
        self.connections = 0
        self.accepted = asyncio.Event()
        self.connected = asyncio.Event()
        self.last_refusal: int | None = None
        self._cp: _Side | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._next_tx = 1

    # -- the car side -------------------------------------------------------------------------

    def plug(self, connector_id: int = 1, id_tag: str = "") -> None:
        """A car is plugged in (and a card shown, when `id_tag`)."""
        connector = self.connectors[connector_id]
        connector.car.plug()
        connector.id_tag = id_tag
        self.spawn(self._plugged(connector))

    def unplug(self, connector_id: int = 1) -> None:
        connector = self.connectors[connector_id]
        connector.car.unplug()
        self.spawn(self._unplugged(connector))

    async def _plugged(self, connector: SimConnector) -> None:
        await self._status(connector, "Preparing")
        if connector.id_tag:
            await self.send("Authorize", {"id_tag": connector.id_tag})
        if "needs_remote_start" not in self.quirks:
            await self.start_transaction(connector, connector.id_tag or "local")

    async def _unplugged(self, connector: SimConnector) -> None:
        if connector.transaction_id is not None:
            await self.stop_transaction(connector)
        await self._status(connector, "Available")

    async def start_transaction(self, connector: SimConnector, id_tag: str) -> None:
        answer = await self.send(
            "StartTransaction",
            {"connector_id": connector.connector_id, "id_tag": id_tag,
             "meter_start": int(connector.energy_wh), "timestamp": self.timestamp()},
        )  # fmt: skip
        if answer is not None:
            connector.transaction_id = int(answer.transaction_id)
            connector.id_tag = id_tag
        await self._status(connector, "SuspendedEVSE")

    async def stop_transaction(self, connector: SimConnector) -> None:
        tx = connector.transaction_id
        connector.transaction_id = None
        if tx is not None:
            await self.send(
                "StopTransaction",
                {"transaction_id": tx, "meter_stop": int(connector.energy_wh),
                 "timestamp": self.timestamp()},
            )  # fmt: skip
        await self._status(connector, "Finishing" if connector.car.plugged else "Available")

    # -- profiles ----------------------------------------------------------------------------

    def take_profile(self, connector_id: int, profile: dict[str, Any]) -> ChargingProfileStatus:
        schedule = profile.get("charging_schedule") or {}
        unit = schedule.get("charging_rate_unit")
        periods = schedule.get("charging_schedule_period") or []
        if "watts_only" in self.quirks and unit != "W":
            return ChargingProfileStatus.rejected
        if "stack_level_zero" in self.quirks and int(profile.get("stack_level", 0)) > 0:
            return ChargingProfileStatus.rejected
        if profile.get("charging_profile_purpose") == "TxProfile" and not any(
            c.transaction_id is not None
            and c.transaction_id == profile.get("transaction_id")
            for c in self.connectors.values()
        ):
            return ChargingProfileStatus.rejected
        if not periods:
            return ChargingProfileStatus.rejected
        limit = float(periods[0]["limit"])
        if unit == "W":
            phases = int(periods[0].get("number_phases") or 3)
            limit = limit / (NOMINAL_V * phases)
        targets = self.connectors.values() if connector_id == 0 else [
            self.connectors[connector_id]] if connector_id in self.connectors else []  # fmt: skip
        for connector in targets:
            connector.limit_a = limit
            connector.profiles.append(profile)
        return ChargingProfileStatus.accepted if targets else ChargingProfileStatus.rejected

    def clear_profiles(self, connector_id: Any, profile_id: Any) -> bool:
        cleared = False
        for connector in self.connectors.values():
            if connector_id in (None, 0, connector.connector_id) and connector.limit_a is not None:
                connector.limit_a = None
                cleared = True
        return cleared

    # -- messages ----------------------------------------------------------------------------

    def timestamp(self) -> str:
        if "epoch_timestamps" in self.quirks:
            return "1970-01-01T00:00:05Z"
        return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")

    async def send(self, action: str, fields: dict[str, Any]) -> Any:
        """A call to the central system; its result, or None when it failed or refused."""
        cp = self._cp
        if cp is None:
            return None
        try:
            return await cp.call(
                _payload(action, fields),
                suppress=False,
                skip_schema_validation="extra_fields" in self.quirks,
            )
        except Exception as exc:
            log.debug("%s: %s failed: %s", self.cp_id, action, exc)
            return None

    def _extra(self) -> dict[str, Any]:
        return {"vendor_extra": "x-1"} if "extra_fields" in self.quirks else {}

    async def _status(self, connector: SimConnector, status: str) -> None:
        connector.status = status
        await self.send(
            "StatusNotification",
            {"connector_id": connector.connector_id, "error_code": "NoError", "status": status,
             "timestamp": self.timestamp(), **self._extra()},
        )  # fmt: skip

    async def send_boot(self) -> bool:
        self.boots_sent += 1
        fields = {"charge_point_vendor": self.vendor, "charge_point_model": self.model,
                  "firmware_version": "1.0", **self._extra()}  # fmt: skip
        answer = await self.send("BootNotification", fields)
        ok = answer is not None and answer.status == RegistrationStatus.accepted
        if ok:
            self.accepted.set()
        return ok

    async def send_triggered(self, message: str, connector_id: Any) -> None:
        if message == "BootNotification":
            await self.send_boot()
        elif message == "StatusNotification":
            for connector in self.connectors.values():
                if connector_id in (None, connector.connector_id):
                    await self._status(connector, connector.status)
        elif message == "MeterValues":
            for connector in self.connectors.values():
                if connector_id in (None, connector.connector_id):
                    await self.send_meter_values(connector)
        elif message == "Heartbeat":
            await self.send("Heartbeat", {})

    def samples(self, connector: SimConnector) -> list[dict[str, Any]]:
        kwh = "kwh_units" in self.quirks
        currents = connector.currents_ma
        power = sum(currents) / 1000 * NOMINAL_V
        samples: list[dict[str, Any]] = []
        if "phaseless_current" in self.quirks:
            samples.append({"value": f"{currents[0] / 1000:.1f}", "measurand": "Current.Import",
                            "unit": "A"})  # fmt: skip
        else:
            for phase, ma in zip(("L1", "L2", "L3"), currents, strict=True):
                samples.append({"value": f"{ma / 1000:.1f}", "measurand": "Current.Import",
                                "phase": phase, "unit": "A"})  # fmt: skip
        samples.append({"value": f"{power / 1000:.3f}" if kwh else f"{power:.0f}",
                        "measurand": "Power.Active.Import", "unit": "kW" if kwh else "W"})
        samples.append({"value": f"{connector.energy_wh / 1000:.3f}" if kwh
                        else f"{connector.energy_wh:.0f}",
                        "measurand": "Energy.Active.Import.Register",
                        "unit": "kWh" if kwh else "Wh"})  # fmt: skip
        samples.append({"value": f"{connector.offered_a(self.max_a):.1f}",
                        "measurand": "Current.Offered", "unit": "A"})  # fmt: skip
        return samples

    async def send_meter_values(self, connector: SimConnector) -> None:
        fields: dict[str, Any] = {
            "connector_id": connector.connector_id,
            "meter_value": [{"timestamp": self.timestamp(),
                             "sampled_value": self.samples(connector)}],
            **self._extra(),
        }  # fmt: skip
        if connector.transaction_id is not None:
            fields["transaction_id"] = connector.transaction_id
        await self.send("MeterValues", fields)

    # -- the box's own loop ------------------------------------------------------------------

    def step(self, dt: float) -> list[tuple[SimConnector, str]]:
        """Advances the cars; → the connectors whose status changed, with the new status."""
        changes: list[tuple[SimConnector, str]] = []
        for connector in self.connectors.values():
            offered_ma = int(connector.offered_a(self.max_a) * 1000)
            enabled = connector.transaction_id is not None
            before = connector.car.energy_wh
            connector.currents_ma = connector.car.step(dt, offered_ma, enabled)
            connector.energy_wh += connector.car.energy_wh - before
            if connector.transaction_id is None:
                continue
            if connector.car.state == CarState.CHARGING:
                new = "Charging"
            elif connector.car.full:
                new = "SuspendedEV"
            else:
                new = "SuspendedEVSE"
            if new != connector.status:
                changes.append((connector, new))
        return changes

    async def _tick(self) -> None:
        last = self.clock()
        next_values = last
        while True:
            await asyncio.sleep(self.tick_s)
            now = self.clock()
            for connector, status in self.step(now - last):
                await self._status(connector, status)
            last = now
            if now >= next_values:
                next_values = now + self.meter_interval
                for connector in self.connectors.values():
                    if connector.transaction_id is not None:
                        await self.send_meter_values(connector)

    def spawn(self, coroutine: Any) -> None:
        task = asyncio.get_running_loop().create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _session(self, session: aiohttp.ClientSession) -> None:
        auth = None
        if self.password is not None:
            auth = aiohttp.BasicAuth(self.cp_id, self.password.decode("latin-1"), "latin-1")
        async with session.ws_connect(
            self.url + self.cp_id,
            protocols=("ocpp1.6",),
            auth=auth,
            heartbeat=30,
            # At a stop the close handshake waits for the central system's answer: a busy
            # one must not keep the simulator past its shutdown grace (cli).
            timeout=aiohttp.ClientWSTimeout(ws_close=CLOSE_TIMEOUT_S),
        ) as ws:
            self.connections += 1
            self._cp = cp = _Side(self, _Connection(ws))
            self.connected.set()
            receiver = asyncio.create_task(cp.start())
            ticker: asyncio.Task[None] | None = None
            try:
                if self.boots_sent == 0 or "no_boot_on_reconnect" not in self.quirks:
                    await self.send_boot()
                else:
                    # It waits for the central system's TriggerMessage.
                    await asyncio.wait_for(self.accepted.wait(), 30)
                await self.accepted.wait()
                for connector in self.connectors.values():
                    await self._status(connector, connector.status)
                ticker = asyncio.create_task(self._tick())
                await receiver
            finally:
                self.connected.clear()
                self.accepted.clear()
                self._cp = None
                for task in (receiver, ticker):
                    if task is not None:
                        await cancelled(task)

    async def run(self, stop: asyncio.Event, *, retry_s: float = 1.0) -> None:
        """Connected (or reconnecting) until `stop`."""
        async with aiohttp.ClientSession() as session:
            delay = retry_s
            while not stop.is_set():
                connect = asyncio.create_task(self._session(session))
                stopped = asyncio.create_task(stop.wait())
                done, _ = await asyncio.wait(
                    {connect, stopped}, return_when=asyncio.FIRST_COMPLETED
                )
                for task in (connect, stopped):
                    if task not in done:
                        await cancelled(task)
                exc = connect.exception() if connect in done else None
                if isinstance(exc, aiohttp.WSServerHandshakeError):
                    self.last_refusal = exc.status
                    log.warning("%s refused: HTTP %d", self.cp_id, exc.status)
                elif exc is not None:
                    log.debug("%s: %s", self.cp_id, exc)
                else:
                    delay = retry_s
                if stop.is_set():
                    break
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), delay)
                delay = min(10.0, delay * 2)
            for task in list(self._tasks):
                task.cancel()


def sim_ids(count: int) -> list[str]:
    return [f"SIM-OCPP-{i}" for i in range(1, count + 1)]


def sim_devices(count: int, first_number: int = 11) -> list[dict[str, Any]]:
    """The evse_ocpp devices that `chargebus sim --ocpp N --configure URL` configures."""
    return [
        {"dev_type": "evse_ocpp", "dev_id": f"E{first_number + i}", "address": cp_id, "id": 1,
         "name": f"Simulated OCPP charge point {i + 1}", "min_charging_cur": 6000,
         "max_charging_cur": 16000}
        for i, cp_id in enumerate(sim_ids(count))
    ]  # fmt: skip


async def run_ocpp_sims(
    url: str, count: int, quirks: frozenset[str], stop: asyncio.Event
) -> list[SimChargePoint]:
    """N charge points with a car plugged in each, connected (and reconnecting) until stop."""
    boxes = [SimChargePoint(cp_id, url, quirks=quirks) for cp_id in sim_ids(count)]

    async def one(box: SimChargePoint) -> None:
        runner = asyncio.create_task(box.run(stop))
        with contextlib.suppress(TimeoutError):
            # The car comes once the box is accepted (a box that never is keeps trying).
            accepted = asyncio.create_task(box.accepted.wait())
            done, _ = await asyncio.wait({accepted, asyncio.create_task(stop.wait())},
                                         return_when=asyncio.FIRST_COMPLETED)  # fmt: skip
            if accepted in done:
                box.plug(1)
        await runner

    log.info("%d simulated OCPP charge points connecting to %s", count, url)
    await asyncio.gather(*(one(box) for box in boxes))
    return boxes
