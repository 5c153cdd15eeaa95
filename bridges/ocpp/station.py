"""One OCPP charge point: its connectors' state across connections (`Station`), and a live
websocket connection to it (`Session`) with the `ocpp` library's ChargePoint in the
central-system role (`CentralSide`).

The order a connection follows (docs/ocpp.md, "What chargebus does when a box connects"):
answer BootNotification (Accepted) before sending anything; when none comes within a few
seconds, ask for it (TriggerMessage); after each real boot read the box's configuration
(GetConfiguration) and set its measurands and interval once (only what differs); ask for
the connectors' status; then send each connector's limit whenever the effective limit
changes, decreases before increases. Every message from the box is answered, also those of
transactions chargebus does not know (queued while it was offline).

Never `await` a call inside a message handler: the reply could only be read by the same
receive loop (a deadlock). Handlers change state and wake the control task, which calls.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from aiohttp import WSMsgType, web
from ocpp.exceptions import OCPPError
from ocpp.messages import unpack
from ocpp.routing import on
from ocpp.v16 import ChargePoint, call, call_result
from ocpp.v16.datatypes import IdTagInfo
from ocpp.v16.enums import (
    Action,
    AuthorizationStatus,
    DataTransferStatus,
    MessageTrigger,
    RegistrationStatus,
)

from bridges.common.follower import Control
from bridges.common.tasks import cancelled
from bridges.ocpp import meter_values, statuses
from bridges.ocpp.profiles import ProfileChoice, profile_id, set_charging_profile
from service.core.contract import EvseConfig

log = logging.getLogger(__name__)

# Heartbeat interval the box is given (s); the websocket's own ping finds a dead TCP sooner.
HEARTBEAT_S = 60
# A box that sent no BootNotification this long after connecting is asked for one.
BOOT_WAIT_S = 5.0
# How long a box may take to answer a call (the library's default is 30 s).
CALL_TIMEOUT_S = 10.0
# An unchanged limit is sent again this often (a box that lost it while we were connected).
REFRESH_S = 600.0
# After a failed or rejected profile, wait this long (doubling) before trying again.
RETRY_S = 2.0
MAX_RETRY_S = 60.0
# The id tag of a RemoteStartTransaction when no card was shown.
REMOTE_ID_TAG = "chargebus"
# Measurands chargebus reads.
MEASURANDS = "Current.Import,Power.Active.Import,Energy.Active.Import.Register,Voltage"

# Transaction ids: monotonic, seeded from the clock so they never repeat after a restart.
_transaction_ids = itertools.count(int(time.time()) % 1_000_000_000)


class WireLog(logging.LoggerAdapter):  # type: ignore[type-arg]
    """The library logs every frame at INFO: that is DEBUG here (200 boxes are chatty)."""

    def info(self, msg: object, *args: Any, **kwargs: Any) -> None:
        self.debug(msg, *args, **kwargs)

    def exception(self, msg: object, *args: Any, **kwargs: Any) -> None:
        # A box's bad message is its fault, not ours: one line, no traceback (a hostile
        # peer must not fill the log with them).
        self.warning(msg, *args)


WIRE_LOG = WireLog(logging.getLogger("bridges.ocpp.wire"), {})


class WsConnection:
    """The library's connection (`recv`/`send` of text) over aiohttp's WebSocketResponse."""

    def __init__(self, ws: web.WebSocketResponse, on_frame: Callable[[], None]) -> None:
        self.ws = ws
        self._on_frame = on_frame

    async def recv(self) -> str:
        msg = await self.ws.receive()
        if msg.type == WSMsgType.TEXT:
            self._on_frame()
            return str(msg.data)
        if msg.type == WSMsgType.BINARY:
            # OCPP-J is text only: a binary frame is a broken or hostile peer.
            await self.ws.close(code=1003, message=b"OCPP-J frames are text")
        raise ConnectionError(f"websocket {msg.type.name.lower()}: {msg.extra or ''}")

    async def send(self, data: str) -> None:
        await self.ws.send_str(data)


class _Replies:
    """The call results as plain dicts: the library would build its dataclasses from the
    box's answer and fail on any extra field a real box adds."""

    def __getattr__(self, name: str) -> Callable[..., dict[str, Any]]:
        return lambda **fields: fields


@dataclass
class Connector:
    """One connector = one chargebus EVSE (`address` = charge point id, `id` = connector)."""

    dev_id: str
    connector_id: int
    config: EvseConfig
    status: str = ""
    error_code: str = "NoError"
    current_a: list[float] = field(default_factory=lambda: [0.0, 0.0, 0.0])
    voltage_v: list[float] = field(default_factory=lambda: [230.0, 230.0, 230.0])
    power_w: float | None = None
    energy_wh: float | None = None
    offered_a: float | None = None
    transaction_id: int | None = None
    id_tag: str = ""
    values_at: float = 0.0
    # The effective limit (mA) the box accepted last; None: unknown, send it.
    applied_ma: int | None = None
    refresh_at: float = 0.0
    retry_at: float = 0.0
    failures: int = 0
    last_error: str = ""
    remote_start_sent: bool = False
    triggered_at: float = 0.0

    def clear_session(self) -> None:
        self.transaction_id = None
        self.id_tag = ""
        self.current_a = [0.0, 0.0, 0.0]
        self.power_w = 0.0 if self.power_w is not None else None
        self.remote_start_sent = False

    def take(self, readings: meter_values.Readings, now: float) -> None:
        if readings.has_current:
            self.current_a = [c if c is not None else 0.0 for c in readings.current_a]
        for i, v in enumerate(readings.voltage_v):
            if v is not None and 0 <= v <= 1000:
                self.voltage_v[i] = v
        if readings.power_w is not None:
            self.power_w = readings.power_w
        if readings.energy_wh is not None and readings.energy_wh >= (self.energy_wh or 0.0):
            # Never backwards: a Transaction.Begin sample or a reset register is no reading.
            self.energy_wh = readings.energy_wh
        if readings.offered_a is not None:
            self.offered_a = readings.offered_a
        if readings.transaction_id is not None and self.transaction_id is None:
            # Recovered after a restart of chargebus while the session went on.
            self.transaction_id = readings.transaction_id
        self.values_at = now


@dataclass
class Station:
    """A charge point id: its connectors and what its boots told, across connections."""

    cp_id: str
    connectors: dict[int, Connector] = field(default_factory=dict)
    # The verifier of its password (service/core/verifier.py); "" = no password.
    password_verifier: str = ""
    boots: int = 0
    setup_for_boot: int = -1
    model: str = ""
    max_stack_level: int | None = None
    rate_units: str = ""
    remote_trigger: bool = True
    stack_zero_only: bool = False
    meter_configured: bool = False
    session: Session | None = None
    # What get_dev_info shows as ocpp.status.
    status_text: str = "disconnected"

    def choice(self, connector: Connector) -> ProfileChoice:
        config = connector.config
        unit = config.ocpp_rate_unit
        if unit == "auto":
            units = self.rate_units.replace(" ", "").split(",") if self.rate_units else []
            unit = "W" if units and "Current" not in units and "Power" in units else "A"
        stack = config.ocpp_stack_level
        if stack < 0:
            stack = self.max_stack_level if self.max_stack_level is not None else 0
        if self.stack_zero_only:
            stack = 0
        phases = bin(config.used_phases).count("1") if config.used_phases else 3
        return ProfileChoice(
            unit=unit,
            stack_level=max(0, stack),
            purpose=config.ocpp_profile_purpose,
            kind=config.ocpp_profile_kind,
            phases=phases,
        )


class Host(Protocol):
    """What a session needs of its bridge."""

    def wanted(self, dev_id: str) -> tuple[Control | None, bool]: ...

    def publish(self, station: Station, connector: Connector) -> None: ...

    def rejected_frame(self, station: Station, why: str) -> None: ...


class CentralSide(ChargePoint):  # type: ignore[misc]
    """The central system's end of one connection; handlers read leniently (`**kwargs`,
    no schema check of what the box sends) and answer at once."""

    _call_result = _Replies()

    def __init__(self, session: Session, connection: WsConnection) -> None:
        super().__init__(session.station.cp_id, connection, CALL_TIMEOUT_S, WIRE_LOG)
        self.session = session

    async def route_message(self, raw_msg: str) -> None:
        """A frame that is no OCPP-J message at all is counted and dropped (it has no id to
        answer); everything else goes to the library's routing."""
        try:
            unpack(raw_msg)
        except OCPPError as exc:
            self.session.rejected_frame(f"{type(exc).__name__}: {exc.description}")
            return
        await super().route_message(raw_msg)

    @on(Action.boot_notification, skip_schema_validation=True)  # type: ignore[untyped-decorator]
    def on_boot_notification(self, **payload: Any) -> call_result.BootNotification:
        self.session.on_boot(payload)
        return call_result.BootNotification(
            current_time=utc_now(), interval=HEARTBEAT_S, status=RegistrationStatus.accepted
        )

    @on(Action.heartbeat, skip_schema_validation=True)  # type: ignore[untyped-decorator]
    def on_heartbeat(self, **payload: Any) -> call_result.Heartbeat:
        return call_result.Heartbeat(current_time=utc_now())

    @on(Action.status_notification, skip_schema_validation=True)  # type: ignore[untyped-decorator]
    def on_status_notification(self, **payload: Any) -> call_result.StatusNotification:
        self.session.on_status(payload)
        return call_result.StatusNotification()

    @on(Action.meter_values, skip_schema_validation=True)  # type: ignore[untyped-decorator]
    def on_meter_values(self, **payload: Any) -> call_result.MeterValues:
        self.session.on_meter_values(payload)
        return call_result.MeterValues()

    @on(Action.authorize, skip_schema_validation=True)  # type: ignore[untyped-decorator]
    def on_authorize(self, **payload: Any) -> call_result.Authorize:
        self.session.on_authorize(payload)
        # The box may start; the core decides whether the card may charge (the command's
        # charging_enabled), and a refused card gets limit 0.
        return call_result.Authorize(id_tag_info=IdTagInfo(status=AuthorizationStatus.accepted))

    @on(Action.start_transaction, skip_schema_validation=True)  # type: ignore[untyped-decorator]
    def on_start_transaction(self, **payload: Any) -> call_result.StartTransaction:
        transaction_id = self.session.on_start_transaction(payload)
        return call_result.StartTransaction(
            transaction_id=transaction_id,
            id_tag_info=IdTagInfo(status=AuthorizationStatus.accepted),
        )

    @on(Action.stop_transaction, skip_schema_validation=True)  # type: ignore[untyped-decorator]
    def on_stop_transaction(self, **payload: Any) -> call_result.StopTransaction:
        # Also for ids chargebus never gave (queued while offline): always accepted.
        self.session.on_stop_transaction(payload)
        return call_result.StopTransaction(
            id_tag_info=IdTagInfo(status=AuthorizationStatus.accepted)
        )

    @on(Action.data_transfer, skip_schema_validation=True)  # type: ignore[untyped-decorator]
    def on_data_transfer(self, **payload: Any) -> call_result.DataTransfer:
        return call_result.DataTransfer(status=DataTransferStatus.unknown_vendor_id)

    @on(Action.diagnostics_status_notification, skip_schema_validation=True)  # type: ignore[untyped-decorator]
    def on_diagnostics(self, **payload: Any) -> call_result.DiagnosticsStatusNotification:
        return call_result.DiagnosticsStatusNotification()

    @on(Action.firmware_status_notification, skip_schema_validation=True)  # type: ignore[untyped-decorator]
    def on_firmware(self, **payload: Any) -> call_result.FirmwareStatusNotification:
        return call_result.FirmwareStatusNotification()

    @on(Action.security_event_notification, skip_schema_validation=True)  # type: ignore[untyped-decorator]
    def on_security_event(self, **payload: Any) -> call_result.SecurityEventNotification:
        return call_result.SecurityEventNotification()


def utc_now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _text(value: Any, limit: int = 64) -> str:
    return value[:limit] if isinstance(value, str) else ""


def _int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return int(value.strip())
    return None


class Session:
    """One live websocket connection of a station."""

    def __init__(
        self,
        station: Station,
        ws: web.WebSocketResponse,
        host: Host,
        *,
        boot_wait_s: float = BOOT_WAIT_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.station = station
        self.ws = ws
        self.host = host
        self.clock = clock
        self.boot_wait_s = boot_wait_s
        self.booted = asyncio.Event()
        self.wake = asyncio.Event()
        self.frames = 0
        self.last_rx = clock()
        self.cp = CentralSide(self, WsConnection(ws, self._on_frame))
        self.profiles_sent = 0
        # Times a change of the effective limit waited before its profile went out (s).
        self.latencies: list[float] = []
        self.keep_latencies = False

    def rejected_frame(self, why: str) -> None:
        self.host.rejected_frame(self.station, why)

    def _on_frame(self) -> None:
        self.frames += 1
        self.last_rx = self.clock()

    @property
    def open(self) -> bool:
        return not self.ws.closed

    # -- messages from the box ------------------------------------------------------------------

    def connector(self, connector_id: Any) -> Connector | None:
        number = _int(connector_id)
        return self.station.connectors.get(number) if number is not None else None

    def on_boot(self, payload: dict[str, Any]) -> None:
        station = self.station
        station.boots += 1
        vendor = _text(payload.get("charge_point_vendor"))
        model = _text(payload.get("charge_point_model"))
        firmware = _text(payload.get("firmware_version"))
        station.model = ",".join(p for p in (vendor, model, firmware) if p)[:200]
        log.info("%s booted: %s", station.cp_id, station.model or "(no model)")
        # A real boot: its configuration may be lost, and its connectors start afresh.
        for connector in station.connectors.values():
            connector.applied_ma = None
        self.booted.set()
        self.wake.set()

    def on_status(self, payload: dict[str, Any]) -> None:
        if _int(payload.get("connector_id")) == 0:
            return  # the charge point as a whole
        connector = self.connector(payload.get("connector_id"))
        if connector is None:
            return
        status = _text(payload.get("status"), 32)
        connector.status = status
        connector.error_code = _text(payload.get("error_code"), 64) or "NoError"
        if not statuses.draws_current(status):
            connector.current_a = [0.0, 0.0, 0.0]
            if connector.power_w is not None:
                connector.power_w = 0.0
        if statuses.ends_session(status):
            connector.clear_session()
        log.debug("%s: %s (%s)", connector.dev_id, status, connector.error_code)
        self.host.publish(self.station, connector)
        self.wake.set()

    def on_meter_values(self, payload: dict[str, Any]) -> None:
        connector = self.connector(payload.get("connector_id"))
        if connector is None:
            return
        readings = meter_values.parse(payload.get("meter_value"), payload.get("transaction_id"))
        if readings.phaseless_current and connector.values_at == 0.0:
            log.info("%s: current without a phase label, counted on L1", connector.dev_id)
        connector.take(readings, self.clock())
        self.host.publish(self.station, connector)

    def on_authorize(self, payload: dict[str, Any]) -> None:
        id_tag = _text(payload.get("id_tag"), 20)
        # Authorize names no connector: the one a car waits at, or the only one.
        waiting = [c for c in self.station.connectors.values() if c.status == "Preparing"]
        candidates = waiting or list(self.station.connectors.values())
        if len(candidates) == 1 and id_tag:
            candidates[0].id_tag = id_tag
            self.host.publish(self.station, candidates[0])

    def on_start_transaction(self, payload: dict[str, Any]) -> int:
        transaction_id = next(_transaction_ids)
        connector = self.connector(payload.get("connector_id"))
        if connector is not None:
            connector.transaction_id = transaction_id
            connector.id_tag = _text(payload.get("id_tag"), 20) or connector.id_tag
            meter_start = _int(payload.get("meter_start"))
            if meter_start is not None and meter_start >= (connector.energy_wh or 0):
                connector.energy_wh = float(meter_start)
            self.host.publish(self.station, connector)
            # A TxProfile needs the new transaction's id: send the limit again.
            connector.applied_ma = None
            self.wake.set()
        return transaction_id

    def on_stop_transaction(self, payload: dict[str, Any]) -> None:
        transaction_id = _int(payload.get("transaction_id"))
        for connector in self.station.connectors.values():
            if transaction_id is not None and connector.transaction_id == transaction_id:
                connector.clear_session()
                meter_stop = _int(payload.get("meter_stop"))
                if meter_stop is not None and meter_stop >= (connector.energy_wh or 0):
                    connector.energy_wh = float(meter_stop)
                connector.applied_ma = None
                self.host.publish(self.station, connector)
                self.wake.set()

    # -- calls to the box -----------------------------------------------------------------------

    async def request(self, payload: Any) -> dict[str, Any] | None:
        """A call; its answer, or None when the box refused it (CallError) or did not answer."""
        try:
            answer = await self.cp.call(payload, suppress=False, skip_schema_validation=True)
        except TimeoutError as exc:
            log.warning("%s: %s unanswered: %s", self.station.cp_id, type(payload).__name__, exc)
            return None
        except ConnectionError:
            raise
        except Exception as exc:  # a CallError from the box, or an answer that is no object
            log.warning("%s: %s refused: %s", self.station.cp_id, type(payload).__name__, exc)
            return None
        return answer if isinstance(answer, dict) else None

    async def trigger(self, message: MessageTrigger, connector_id: int | None = None) -> bool:
        if not self.station.remote_trigger:
            return False
        answer = await self.request(
            call.TriggerMessage(requested_message=message, connector_id=connector_id)
        )
        return answer is not None and answer.get("status") == "Accepted"

    async def run(self) -> None:
        """Receives until the connection ends; the control task runs beside it."""
        control = asyncio.create_task(self._control(), name=f"ocpp-{self.station.cp_id}")
        try:
            await self.cp.start()
        except ConnectionError as exc:
            log.info("%s: connection closed (%s)", self.station.cp_id, exc)
        finally:
            # Its OCPP calls may lose a cancellation (bridges.common.tasks).
            await cancelled(control)

    async def _control(self) -> None:
        try:
            await self._await_boot()
            while True:
                if self.station.setup_for_boot != self.station.boots:
                    # The first connection, or a real boot since the last setup (also one
                    # in the middle of a connection): the box may have lost its settings.
                    await self._setup()
                    await self.trigger(MessageTrigger.status_notification)
                await self.apply_all()
                self.wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.wake.wait(), 1.0)
        except ConnectionError:
            return
        except Exception:
            # A bug must not leave a box connected but uncontrolled: drop the connection, the
            # box reconnects and starts afresh.
            log.exception("%s: control failed; closing the connection", self.station.cp_id)
            await self.close(1011, b"central system error")

    async def _await_boot(self) -> None:
        self.station.status_text = "booting"
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.booted.wait(), self.boot_wait_s)
        if not self.booted.is_set():
            # Some boxes never send BootNotification on a reconnect: ask for it.
            log.info("%s: no BootNotification, asking for it", self.station.cp_id)
            await self.trigger(MessageTrigger.boot_notification)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.booted.wait(), self.boot_wait_s)
        self.station.status_text = "connected"

    async def _setup(self) -> None:
        """After a real boot: read what the box can do; set its measurands and interval when
        they differ from what chargebus needs (once, not at every boot)."""
        station = self.station
        station.setup_for_boot = station.boots
        answer = await self.request(call.GetConfiguration())
        values: dict[str, str] = {}
        for item in (answer or {}).get("configuration_key") or []:
            if isinstance(item, dict) and isinstance(item.get("key"), str):
                values[item["key"]] = str(item.get("value") or "")
        level = _int(values.get("ChargeProfileMaxStackLevel"))
        station.max_stack_level = level if level is not None and 0 <= level <= 100 else None
        station.rate_units = values.get("ChargingScheduleAllowedChargingRateUnit", "")
        profiles = values.get("SupportedFeatureProfiles")
        if profiles is not None:
            station.remote_trigger = "RemoteTrigger" in profiles
        interval = min((c.config.ocpp_meter_interval for c in station.connectors.values()),
                       default=10)  # fmt: skip
        wanted = {"MeterValuesSampledData": MEASURANDS, "MeterValueSampleInterval": str(interval)}
        for key, value in wanted.items():
            if values.get(key, "").replace(" ", "") == value:
                continue
            result = await self.request(call.ChangeConfiguration(key=key, value=value))
            status = (result or {}).get("status", "no answer")
            if status not in ("Accepted", "RebootRequired"):
                log.info("%s: %s not set (%s)", station.cp_id, key, status)
        station.meter_configured = True

    async def apply_all(self) -> None:
        """Sends each connector's limit where it is due, decreases before increases."""
        now = self.clock()
        due: list[tuple[Connector, int]] = []
        for connector in self.station.connectors.values():
            control, _ = self.host.wanted(connector.dev_id)
            if control is None:
                continue  # no word from the core yet: leave the box as it is
            target = control.effective_current
            if connector.retry_at > now:
                continue
            if connector.applied_ma != target or now >= connector.refresh_at:
                due.append((connector, target))
            await self._remote_start(connector, target)
        due.sort(key=lambda item: item[1] - (item[0].applied_ma or 0))
        for connector, target in due:
            await self.send_limit(connector, target)
        await self._watchdog(now)

    async def send_limit(self, connector: Connector, target: int) -> bool:
        started = time.perf_counter()
        choice = self.station.choice(connector)
        tx = connector.transaction_id
        if choice.purpose == "TxProfile" and tx is None:
            # A TxProfile needs a transaction; before one, the default profile carries it.
            choice = ProfileChoice(choice.unit, choice.stack_level, "TxDefaultProfile",
                                   choice.kind, choice.phases)  # fmt: skip
        status = await self._set(connector, target, choice, tx)
        if status == "Rejected" and choice.stack_level > 0:
            # ABB Terra AC, Wallbox FW5: stack level 0 only.
            log.info("%s: profile at stack level %d rejected, trying 0",
                     connector.dev_id, choice.stack_level)  # fmt: skip
            self.station.stack_zero_only = True
            choice = self.station.choice(connector)
            status = await self._set(connector, target, choice, tx)
        if status == "Accepted":
            connector.applied_ma = target
            connector.refresh_at = self.clock() + REFRESH_S
            connector.failures = 0
            connector.last_error = ""
            self.profiles_sent += 1
            if self.keep_latencies:
                self.latencies.append(time.perf_counter() - started)
            await self.trigger(MessageTrigger.meter_values, connector.connector_id)
            self.host.publish(self.station, connector)
            return True
        connector.failures += 1
        connector.applied_ma = None
        connector.retry_at = self.clock() + min(MAX_RETRY_S, RETRY_S * 2 ** connector.failures)
        connector.last_error = f"SetChargingProfile: {status}"
        self.host.publish(self.station, connector)
        return False

    async def _set(
        self, connector: Connector, target: int, choice: ProfileChoice, tx: int | None
    ) -> str:
        payload = set_charging_profile(connector.connector_id, target, choice, transaction_id=tx)
        answer = await self.request(payload)
        return str((answer or {}).get("status", "no answer"))

    async def _remote_start(self, connector: Connector, target: int) -> None:
        if (
            connector.config.ocpp_remote_start
            and connector.status == "Preparing"
            and connector.transaction_id is None
            and target > 0
            and not connector.remote_start_sent
        ):
            connector.remote_start_sent = True
            answer = await self.request(
                call.RemoteStartTransaction(
                    id_tag=connector.id_tag or REMOTE_ID_TAG,
                    connector_id=connector.connector_id,
                )
            )
            log.info("%s: RemoteStartTransaction %s", connector.dev_id,
                     (answer or {}).get("status", "unanswered"))  # fmt: skip

    async def _watchdog(self, now: float) -> None:
        """Asks a charging connector for fresh values when its last ones are older than its
        interval (boxes send them every 10-60 s, the core counts a state stale after 3 cycles
        and the bridge republishes it meanwhile)."""
        for connector in self.station.connectors.values():
            interval = connector.config.ocpp_meter_interval
            if (
                connector.status == "Charging"
                and now - connector.values_at > 1.5 * interval
                and now - connector.triggered_at > interval
            ):
                connector.triggered_at = now
                await self.trigger(MessageTrigger.meter_values, connector.connector_id)

    async def release(self, connector: Connector, failsafe_current: int | None) -> None:
        """Leaves the connector as a box without chargebus should be: the fail-safe current,
        or, where that is 0, no profile of ours at all (a persisted 0 A profile would block
        every later session)."""
        if failsafe_current:
            await self.send_limit(connector, failsafe_current)
            return
        await self.request(
            call.ClearChargingProfile(
                id=profile_id(connector.connector_id), connector_id=connector.connector_id
            )
        )

    async def close(self, code: int = 1001, message: bytes = b"") -> None:
        await self.ws.close(code=code, message=message)
