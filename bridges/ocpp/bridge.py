"""The OCPP bridge: chargebus's central system for OCPP 1.6J charge points.

Devices of type `evse_ocpp` come from the retained configs (bridges/common): `address` is
the charge point's id (the last path segment of the URL the box connects to), `id` its
connector. A charge point connects to `ws://host:19520/<anything>/<id>` (or wss:// with the
TLS settings); before the websocket upgrade the bridge refuses, as HTTP answers, a client
over the guess throttle (429), an id no device names (404) and missing or wrong basic
credentials where the device has an `ocpp_password` (401). A second connection under the
same id replaces the first.

Each connector's state is published on every change and again every `cycle_time` while its
box is connected (boxes send meter values every 10-60 s and only while charging; the core
counts a state stale after 3 cycles); a box that is not connected is reported as state 6
with `com_err`. Commands become SetChargingProfile (bridges/ocpp/station.py) only when the
effective limit changes; the fail-safe is the bridge kit's (core offline, or no fresh
command → the device's `failsafe_current`).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import hashlib
import hmac
import json
import logging
import secrets
import ssl
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from bridges.common.bridge import DeviceBridge
from bridges.common.directory import Change, Config
from bridges.common.follower import Control
from bridges.ocpp import statuses
from bridges.ocpp.device_types import EVSE_OCPP
from bridges.ocpp.station import BOOT_WAIT_S, Connector, Session, Station
from service.auth import FailureThrottle
from service.bus import MqttBus
from service.core import verifier
from service.core.contract import EvseConfig
from service.core.throttle import Refusal
from service.httpkit import error_response, http_listener, serve_http
from service.topics import Topics

log = logging.getLogger(__name__)

DEFAULT_PORT = 19520
# OCPP 1.6's identity is a CiString of 48 characters at most.
MAX_ID_LENGTH = 48
# The largest frame a box may send; real messages stay far below (a MeterValues with every
# measurand on three phases is about 3 KiB). Bigger ones close the connection (1009).
MAX_FRAME_BYTES = 64 * 1024
# aiohttp pings this often and closes a connection whose pong does not come: a dead TCP
# without FIN must not block the box's next connection for minutes.
WS_HEARTBEAT_S = 30.0
SUBPROTOCOL = "ocpp1.6"
# A clean stop tells each box its fail-safe (or removes chargebus's profile) within this.
RELEASE_TIMEOUT_S = 3.0
_UNAUTHORIZED = {"WWW-Authenticate": 'Basic realm="chargebus OCPP"'}


@dataclass
class OcppStats:
    connections: int = 0
    refused_unknown: int = 0
    refused_auth: int = 0
    refused_throttled: int = 0
    refused_protocol: int = 0
    rejected_frames: int = 0


def charge_point_id(path: str) -> str:
    """The last segment of the (already percent-decoded) path: boxes append their id to
    whatever URL they were given."""
    return path.rstrip("/").rsplit("/", 1)[-1]


def basic_password(header: str | None, cp_id: str) -> bytes | None:
    """The password of `Authorization: Basic` for user `cp_id`, as raw bytes (a 1.6
    AuthorizationKey may be binary); None without the header or for another user."""
    if not header:
        return None
    scheme, _, encoded = header.partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True)
    except (binascii.Error, ValueError):
        return None
    # The user is the box's id, which may itself hold colons: the password is what follows
    # "<id>:", not what follows the first colon.
    prefix = cp_id.encode() + b":"
    if not decoded.startswith(prefix):
        return None
    return decoded[len(prefix) :]


class OcppBridge(DeviceBridge):
    def __init__(
        self,
        topics: Topics,
        name: str = "ocpp",
        *,
        host: str = "127.0.0.1",
        port: int = DEFAULT_PORT,
        ssl_context: ssl.SSLContext | None = None,
        listen_at_once: bool = False,
        boot_wait_s: float = BOOT_WAIT_S,
        throttle: FailureThrottle | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(topics, name, clock=clock)
        self.host = host
        self.port = port
        self.ssl_context = ssl_context
        self.listen_at_once = listen_at_once
        self.boot_wait_s = boot_wait_s
        self.throttle = throttle or FailureThrottle()
        self.stats = OcppStats()
        self.stations: dict[str, Station] = {}
        self.listening: asyncio.Future[int] | None = None
        self._listening_set = asyncio.Event()
        self.listen_error = ""
        self.keep_latencies = False
        self._server: asyncio.Task[None] | None = None
        self._stop = asyncio.Event()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._verified_key = secrets.token_bytes(32)
        self._verified: dict[str, bytes] = {}

    # -- devices ----------------------------------------------------------------------------

    def serves(self, config: Config) -> bool:
        return isinstance(config, EvseConfig) and config.dev_type == EVSE_OCPP.name

    def device_changed(self, change: Change) -> None:
        old = self._connector_of(change.old)
        if old is not None:
            station, connector = old
            station.connectors.pop(connector.connector_id, None)
            if change.new is None and station.session is not None and station.session.open:
                # A deleted device leaves no profile of ours behind.
                self._spawn(station.session.release(connector, None))
            if not station.connectors:
                self._drop_station(station)
        new = change.new
        if isinstance(new, EvseConfig):
            cp_id = new.address.strip()
            if not cp_id:
                self.reject(f"config of {new.dev_id}: no charge point id in address")
                return
            station = self.stations.setdefault(cp_id, Station(cp_id))
            connector = Connector(new.dev_id, new.id, new)
            if old is not None and old[1].connector_id == new.id and old[0] is station:
                # The same connector with a changed configuration keeps what the box said.
                connector = old[1]
                connector.config = new
                connector.applied_ma = None
            station.connectors[new.id] = connector
            station.password_verifier = self._verifier_of(station)
            log.info("%s: charge point %r connector %d", new.dev_id, cp_id, new.id)
            self.publish(station, connector)
            if self._server is None and self.publisher.attached:
                self._server = asyncio.get_running_loop().create_task(self._serve())

    def _verifier_of(self, station: Station) -> str:
        found = ""
        for connector in station.connectors.values():
            raw = self.directory.payload(connector.dev_id)
            with contextlib.suppress(ValueError, AttributeError, UnicodeDecodeError):
                value = json.loads(raw).get("ocpp_password_verifier") if raw else None
                if isinstance(value, str) and value:
                    found = value
        return found

    def _drop_station(self, station: Station) -> None:
        self.stations.pop(station.cp_id, None)
        if station.session is not None:
            self._spawn(station.session.close(4404, b"no longer configured"))

    def _connector_of(self, config: Config | None) -> tuple[Station, Connector] | None:
        """The station and connector a device's config names (address = charge point id,
        id = connector): looked up directly, not scanned for (commands come every cycle)."""
        if not isinstance(config, EvseConfig):
            return None
        station = self.stations.get(config.address.strip())
        connector = station.connectors.get(config.id) if station is not None else None
        if station is None or connector is None or connector.dev_id != config.dev_id:
            return None
        return station, connector

    def command_changed(self, dev_id: str) -> None:
        found = self._connector_of(self.directory.get(dev_id))
        if found is not None and found[0].session is not None:
            found[0].session.wake.set()

    def wanted(self, dev_id: str) -> tuple[Control | None, bool]:
        control, failsafe = self.follower.wanted(dev_id)
        self.follower.note_failsafe(dev_id, failsafe)
        return control, failsafe

    def rejected_frame(self, station: Station, why: str) -> None:
        """A frame from a box that is no OCPP-J message: logged and counted, nothing else."""
        self.stats.rejected_frames += 1
        log.warning("%s sent a frame that is no OCPP message: %s", station.cp_id, why[:200])

    # -- states ------------------------------------------------------------------------------

    def publish(self, station: Station, connector: Connector) -> None:
        followed = self.follower.devices.get(connector.dev_id)
        failsafe = followed.failsafe if followed is not None else False
        self.publisher.state(connector.dev_id, state_payload(station, connector, failsafe))

    async def _republish(self) -> None:
        """Every cycle, each connector's state: the core must hear from a healthy connector
        more often than a box sends meter values."""
        due = 0.0
        while True:
            # Short steps: the cycle time comes with the core's params, after the start.
            await asyncio.sleep(min(0.25, self.params.cycle_time / 1000))
            now = time.monotonic()
            if now < due:
                continue
            due = now + self.params.cycle_time / 1000
            for station in list(self.stations.values()):
                for connector in list(station.connectors.values()):
                    self.publish(station, connector)

    # -- connections -------------------------------------------------------------------------

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_route("GET", "/{path:.*}", self.handle)
        return app

    async def handle(self, request: web.Request) -> web.StreamResponse:
        """A charge point's connection: checked before the upgrade, then served."""
        station = await self._admit(request)
        if not isinstance(station, Station):
            return station
        ws = web.WebSocketResponse(
            protocols=(SUBPROTOCOL,), heartbeat=WS_HEARTBEAT_S, max_msg_size=MAX_FRAME_BYTES
        )
        await ws.prepare(request)
        if self.stations.get(station.cp_id) is not station:
            # Its devices went while the upgrade ran.
            await ws.close(code=4404, message=b"no longer configured")
            return ws
        if ws.ws_protocol is None and request.headers.get("Sec-WebSocket-Protocol"):
            # It offered only protocols other than 1.6 (OCPP-J: close). A box that offers
            # none at all is taken as 1.6, as real boxes without the header expect.
            self.stats.refused_protocol += 1
            await ws.close(code=1002, message=b"this central system speaks ocpp1.6")
            return ws
        old = station.session
        if old is not None:
            # Closed in the background: a dead old TCP connection would hold up the new one
            # for the whole closing handshake's timeout.
            log.info("%s: a new connection replaces the old one", station.cp_id)
            self._spawn(old.close(1000, b"replaced by a new connection"))
        session = Session(station, ws, self, boot_wait_s=self.boot_wait_s)
        session.keep_latencies = self.keep_latencies
        station.session = session
        station.status_text = "connected"
        self.stats.connections += 1
        log.info("%s connected from %s", station.cp_id, request.remote)
        for connector in station.connectors.values():
            connector.applied_ma = None
            self.publish(station, connector)
        try:
            await session.run()
        finally:
            if station.session is session:
                station.session = None
                station.status_text = "disconnected"
                for connector in station.connectors.values():
                    self.publish(station, connector)
            log.info("%s disconnected", station.cp_id)
        return ws

    async def _admit(self, request: web.Request) -> Station | web.StreamResponse:
        """The station the connection may be upgraded for; else the HTTP answer refusing it."""
        client = request.remote or "?"
        ticket = self.throttle.admit(client)
        if isinstance(ticket, Refusal):
            self.stats.refused_throttled += 1
            seconds = max(1, int(ticket.retry_after + 0.999))
            return error_response(
                429,
                f"too many failed attempts; try again in {seconds} s (nothing was checked)",
                {"Retry-After": str(seconds)},
            )
        cp_id = charge_point_id(request.path)
        station = self.stations.get(cp_id) if 0 < len(cp_id) <= MAX_ID_LENGTH else None
        if station is None:
            self.throttle.failed(ticket)
            self.stats.refused_unknown += 1
            log.warning("refused charge point id %r from %s: not configured", cp_id[:64], client)
            return error_response(404, "unknown charge point id")
        if station.password_verifier:
            offered = basic_password(request.headers.get("Authorization"), cp_id)
            if offered is None or not await self._password_ok(station, offered):
                self.throttle.failed(ticket)
                self.stats.refused_auth += 1
                log.warning("refused charge point %r from %s: wrong credentials", cp_id, client)
                return error_response(401, "wrong or missing credentials", _UNAUTHORIZED)
            # Only a password checked and right refunds the token and trusts the address: a
            # box without one proves nothing, and must not lift the shared guess limit.
            self.throttle.succeeded(ticket)
            if self.stations.get(cp_id) is not station:
                # Its devices went (or changed) while the password was checked.
                self.stats.refused_unknown += 1
                return error_response(404, "unknown charge point id")
        else:
            # No password to check: the token comes back, without trust for the address
            # (a box that asks for none must neither cost its reconnects tokens nor lift
            # the shared guess limit).
            self.throttle.unused(ticket)
        if request.headers.get("Upgrade", "").lower() != "websocket":
            return error_response(400, "a charge point connects with a websocket (OCPP-J)")
        return station

    async def _password_ok(self, station: Station, offered: bytes) -> bool:
        mac = hmac.new(self._verified_key, station.password_verifier.encode() + b"\0" + offered,
                       hashlib.sha256).digest()  # fmt: skip
        known = self._verified.get(station.cp_id)
        if known is not None and hmac.compare_digest(known, mac):
            return True
        # scrypt takes milliseconds: off the event loop.
        ok = await asyncio.to_thread(verifier.check, station.password_verifier, offered)
        if ok:
            self._verified[station.cp_id] = mac
        return ok

    # -- lifetime ----------------------------------------------------------------------------

    def _spawn(self, coroutine: Any) -> None:
        task = asyncio.get_running_loop().create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _serve(self) -> None:
        """Listens until stopped; the port is in `listening` (0 picks a free one)."""
        listening = self.listening = asyncio.get_running_loop().create_future()
        self._listening_set.set()
        try:
            with http_listener(
                self.host, self.port, setting="CHARGEBUS_OCPP_PORT or --ocpp-port"
            ) as sockets:
                # A short shutdown: open websockets are closed by `running` first.
                async with serve_http(
                    self.app(), sockets, shutdown_timeout=1.0, ssl_context=self.ssl_context
                ) as port:
                    self.port = port
                    scheme = "wss" if self.ssl_context else "ws"
                    log.info("OCPP central system on %s://%s:%d/<charge point id>",
                             scheme, self.host, port)  # fmt: skip
                    listening.set_result(port)
                    self.publisher.announce()
                    await self._stop.wait()
        except (OSError, RuntimeError) as exc:
            self.listen_error = str(exc)
            log.error("the OCPP bridge cannot listen: %s", exc)
            if not listening.done():
                listening.set_exception(exc)

    async def listen(self) -> int:
        """Starts listening now (not only once an evse_ocpp device is configured)."""
        if self._server is None:
            self._server = asyncio.get_running_loop().create_task(self._serve())
        await self._listening_set.wait()
        assert self.listening is not None
        return await self.listening

    @contextlib.asynccontextmanager
    async def running(self, bus: MqttBus) -> AsyncIterator[OcppBridge]:
        # `online` once it listens: a service without OCPP devices shows no OCPP bridge.
        self.publisher.attach(bus, announce=False)
        self.follower.restart_grace()
        republish = asyncio.get_running_loop().create_task(self._republish())
        try:
            if self.listen_at_once or self.stations:
                await self.listen()
            yield self
        finally:
            republish.cancel()
            await self._release_all()
            self._stop.set()
            if self._server is not None:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(self._server, 5.0)
            for task in list(self._tasks):
                task.cancel()
            self.publisher.detach()

    async def _release_all(self) -> None:
        """A clean stop leaves each box on its fail-safe current, or without a profile of
        ours where that is 0 (docs/ocpp.md, "Fail-safe")."""
        jobs = []
        for station in self.stations.values():
            session = station.session
            if session is None or not session.open:
                continue
            for connector in station.connectors.values():
                jobs.append(session.release(connector, connector.config.failsafe_current))
        if jobs:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.gather(*jobs, return_exceptions=True),
                                       RELEASE_TIMEOUT_S)  # fmt: skip
        for station in self.stations.values():
            if station.session is not None:
                with contextlib.suppress(Exception):
                    await station.session.close(1001, b"central system stopping")


def state_payload(station: Station, connector: Connector, failsafe: bool) -> dict[str, Any]:
    """A connector as the contract's EVSE state (docs/mqtt.md)."""
    common: dict[str, Any] = {
        "model": station.model,
        "failsafe": failsafe,
        "ocpp_status": station.status_text,
    }
    session = station.session
    if session is None or not session.open:
        return {
            **common,
            "state": statuses.OFFLINE,
            "com_err": True,
            "last_error": f"charge point {station.cp_id} is not connected",
        }
    state: dict[str, Any] = {
        **common,
        "state": statuses.cp_state(connector.status, connector.error_code),
        "current": [_milliamps(a) for a in connector.current_a],
        "voltage": [round(v, 1) for v in connector.voltage_v],
        "rfid": connector.id_tag,
        "com_err": False,
        "last_error": connector.last_error,
    }
    if connector.power_w is not None:
        state["power_w"] = round(max(-1e6, min(1e6, connector.power_w)), 1)
    if connector.energy_wh is not None and 0 <= connector.energy_wh <= 1e12:
        state["total_energy"] = round(connector.energy_wh, 1)
    if connector.offered_a is not None:
        state["applied_current"] = _milliamps(connector.offered_a)
        state["applied_enabled"] = connector.offered_a > 0
    elif connector.applied_ma is not None:
        state["applied_current"] = connector.applied_ma
        state["applied_enabled"] = connector.applied_ma > 0
    return state


def _milliamps(amps: float) -> int:
    return max(0, min(2_000_000, round(amps * 1000)))
