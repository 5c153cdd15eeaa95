"""The HTTP-input bridge: `set_ajax_meter` / `set_ajax_evse` onto the bus.

Devices of type "HTTP input" (`meter_ajax`, `evse_ajax` and our `*_http` aliases) are not read
by chargebus; their owners push values by HTTP. This bridge turns such a request into a state
message on `{base}/devices/{id}/state`, like any other bridge, and for an EVSE answers with the
command the core published for exactly that state (`state_ts` on `devices/{id}/command`).

It learns which devices are HTTP-input devices from the retained `devices/+/config` topics, so
it needs the core only through the broker: the service hosts it in-process on a bus
connection of its own, and `chargebus bridge http` runs it alone (run_http_bridge).

The parsing part (parse_meter_input, parse_evse_input) is pure.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import math
import time
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from aiohttp import web
from pydantic import BaseModel, ValidationError

from service.auth import FailureThrottle
from service.bus import BusError, MqttBus
from service.bus_setup import make_bus
from service.core.config_edit import describe_validation_error
from service.core.device_types import DeviceKind, DeviceType, DeviceTypeRegistry, builtin_registry
from service.core.models import EvseCommand, EvseState, MeterState
from service.core.throttle import Refusal
from service.httpkit import (
    ApiError,
    basic_credentials,
    error_response,
    http_listener,
    read_parameters,
    serve_http,
)
from service.settings import MqttTarget, Settings
from service.topics import Topics

log = logging.getLogger(__name__)


class InputError(ApiError):
    """A refused request: the HTTP status to answer and what was wrong."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(status, message)


# -- parsing (pure) --------------------------------------------------------------------------

FieldType = Literal["number", "integer", "triple", "string", "bool"]

# The fields of the API's POST bodies (docs/api.md, set_ajax_meter / set_ajax_evse), by their
# input name, and those real clients send besides (docs/research/cfos-clients.md: `power_va`,
# `soc`).
METER_FIELDS: dict[str, FieldType] = {
    "model": "string",
    "import_wh": "number",
    "import_vah": "number",
    "export_wh": "number",
    "voltage": "triple",
    "current": "triple",
    "power_w": "number",
    "power_va": "number",
    "is_va": "bool",
    "soc": "number",
}
EVSE_FIELDS: dict[str, FieldType] = {
    "state": "integer",
    "max_charging_current": "number",
    "current": "triple",
    "total_energy": "number",
    "model": "string",
    "rfid": "string",
}
# Input names that differ from the state payload's: the spec writes both energy names, and
# power_va is the power of a meter that measures VA (is_va).
_RENAMED = {"import_vah": "import_wh", "power_va": "power_w"}
# Fields the state models don't have (the core ignores them), with their ranges.
_PASSED_THROUGH = {"soc": (0.0, 100.0)}
# Currents in mA: clients compute them (a PHP floatval, an Arduino dtostrf with 2 decimals)
# and send fractions; a fraction of a mA means nothing, so they are rounded, not refused.
_MILLIAMPS = frozenset({"current", "max_charging_current"})
# Part of the request's address, not of the measurement.
_IGNORED = frozenset({"cmd", "dev_id"})
_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})


def parse_meter_input(values: Mapping[str, Any], *, from_query: bool) -> dict[str, Any]:
    """A set_ajax_meter request's values → a MeterState payload without `ts`."""
    if isinstance(values, Mapping):
        for a, b in (("import_wh", "import_vah"), ("power_w", "power_va")):
            if a in values and b in values:
                raise InputError(400, f"give {a} or {b}, not both")
    return _parse(values, METER_FIELDS, MeterState, from_query=from_query)


def parse_evse_input(values: Mapping[str, Any], *, from_query: bool) -> dict[str, Any]:
    """A set_ajax_evse request's values → an EvseState payload without `ts`."""
    payload = _parse(values, EVSE_FIELDS, EvseState, from_query=from_query)
    # A meter may measure either way (signed); a wallbox only draws. A negative current is
    # a fault of the sender: published, it would count as room the grid does not have.
    negative = [c for c in payload.get("current", ()) if c < 0]
    if negative:
        raise InputError(
            400, f"current of an EVSE must not be negative (mA drawn per phase), got {negative[0]}"
        )
    return payload


def _parse(
    values: Any,
    fields: Mapping[str, FieldType],
    model: type[BaseModel],
    *,
    from_query: bool,
) -> dict[str, Any]:
    if not isinstance(values, Mapping):
        raise InputError(400, "the body must be a JSON object")
    unknown = sorted(str(k) for k in values if k not in fields and k not in _IGNORED)
    if unknown:
        raise InputError(
            400, f"unknown field(s) {', '.join(unknown)}; known: {', '.join(sorted(fields))}"
        )
    convert = _from_query if from_query else _from_json
    payload: dict[str, Any] = {}
    for key, raw in values.items():
        name = str(key)
        if name in _IGNORED:
            continue
        value = convert(name, fields[name], raw)
        if name in _MILLIAMPS:
            value = [_milliamps(v) for v in value] if isinstance(value, list) else _milliamps(value)
        payload[_RENAMED.get(name, name)] = value
    extra = {k: payload.pop(k) for k in list(payload) if k in _PASSED_THROUGH}
    for name, value in extra.items():
        low, high = _PASSED_THROUGH[name]
        if not low <= value <= high:
            raise InputError(400, f"{name} must be between {low:g} and {high:g}, got {value!r}")
    try:
        checked = model.model_validate({**payload, "ts": 0.0})
    except ValidationError as exc:
        raise InputError(400, describe_validation_error(exc)) from None
    # The model's values (ints for currents, floats for voltages), only the fields given.
    return {**checked.model_dump(include=set(payload)), **extra}


def _from_json(name: str, kind: FieldType, raw: Any) -> Any:
    # The models coerce "12" to 12; an API that says "number" must refuse a string.
    if kind in ("number", "integer"):
        if not _is_number(raw):
            raise InputError(400, f"{name} must be a number, got {_json_type(raw)}")
        if kind == "integer" and not float(raw).is_integer():
            raise InputError(400, f"{name} must be a whole number, got {raw!r}")
        return raw
    if kind == "triple":
        if not isinstance(raw, list) or not all(_is_number(v) for v in raw):
            raise InputError(400, f"{name} must be an array of 3 numbers, got {_json_type(raw)}")
        if len(raw) != 3:
            raise InputError(
                400, f"{name} must have exactly 3 numbers (L1, L2, L3), got {len(raw)}"
            )
        return raw
    if kind == "string":
        if not isinstance(raw, str):
            raise InputError(400, f"{name} must be a string, got {_json_type(raw)}")
        return raw
    if not isinstance(raw, bool):
        raise InputError(400, f"{name} must be true or false, got {_json_type(raw)}")
    return raw


def _milliamps(value: float) -> int:
    """Rounded half away from zero (1000.5 → 1001, -0.5 → -1), not to even."""
    return int(math.copysign(math.floor(abs(value) + 0.5), value))


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return f"the number {value!r}"
    if isinstance(value, str):
        return f"the string {value!r}"[:80]
    if isinstance(value, list):
        return "an array"
    return "an object"


def _from_query(name: str, kind: FieldType, raw: Any) -> Any:
    text = str(raw).strip()
    if kind in ("number", "integer"):
        return _query_number(name, text)
    if kind == "triple":
        # "231,232,233" as the spec writes it; a bracketed "[231,232,233]" as well.
        parts = text.removeprefix("[").removesuffix("]").split(",")
        if len(parts) != 3:
            raise InputError(
                400, f"{name} must be 3 comma-separated numbers (L1,L2,L3), got {text!r}"[:200]
            )
        return [_query_number(name, p.strip()) for p in parts]
    if kind == "string":
        return str(raw)
    lowered = text.lower()
    if lowered in _TRUE or lowered in _FALSE:
        return lowered in _TRUE
    raise InputError(400, f"{name} must be 1/0 or true/false, got {text!r}"[:200])


def _query_number(name: str, text: str) -> int | float:
    try:
        return int(text)
    except ValueError:
        pass
    try:
        value = float(text)
    except ValueError:
        raise InputError(400, f"{name} must be a number, got {text!r}"[:200]) from None
    if not math.isfinite(value):
        raise InputError(400, f"{name} must be a finite number, got {text!r}"[:200])
    return value


def control_answer(payload: bytes) -> tuple[float, dict[str, Any]] | None:
    """A command message → (its state_ts, the set_ajax_evse answer); None if it answers no
    state (no state_ts) or is malformed."""
    try:
        data = json.loads(payload)
        state_ts = data["state_ts"]
        command = EvseCommand.model_validate(data)
    except (ValueError, KeyError, TypeError, ValidationError):
        return None
    if not _is_number(state_ts):
        return None
    answer = command.model_dump(
        include={"device_enabled", "charging_enabled", "paused", "charging_current"}
    )
    return float(state_ts), answer


# -- the bridge ------------------------------------------------------------------------------


@dataclass
class _Waiter:
    ts: float
    answer: asyncio.Future[dict[str, Any]]


_KIND_NAMES: dict[DeviceKind, str] = {"meter": "meter", "evse": "EVSE"}
# How long a request for a device not heard of waits for its config (see _configured_type).
CONFIG_WAIT_S = 2.0


class HttpInputBridge:
    def __init__(
        self,
        topics: Topics,
        *,
        answer_timeout: float = 3.0,
        clock: Callable[[], float] = time.time,
        registry: DeviceTypeRegistry | None = None,
        commands_handed_in: bool = False,
    ) -> None:
        self.topics = topics
        self.answer_timeout = answer_timeout
        # In the core's process the commands are handed in as they are published
        # (`command_published`), not heard back from the broker: a run of a thousand EVSEs
        # would otherwise bring a thousand messages to read in the same process, and the
        # broker would deliver each twice.
        self._commands_handed_in = commands_handed_in
        self._clock = clock
        self._registry = registry or builtin_registry()
        # dev_id → its dev_type as configured (may be one the registry doesn't know).
        self._dev_types: dict[str, str] = {}
        self._last_ts: dict[str, float] = {}
        self._waiters: dict[str, list[_Waiter]] = {}
        # Requests for a device whose config has not arrived yet (see _configured_type).
        self._config_waiters: dict[str, list[asyncio.Future[None]]] = {}
        self._bus: MqttBus | None = None

    def subscriptions(self) -> list[str]:
        if self._commands_handed_in:
            return [self.topics.all_devices("config")]
        return [self.topics.all_devices("config"), self.topics.all_devices("command")]

    def command_published(self, dev_id: str, payload: bytes) -> None:
        """A command as the core publishes it (in the core's process)."""
        self._on_command(dev_id, payload)

    def attach(self, bus: MqttBus) -> None:
        self._bus = bus

    async def handle_request(
        self,
        cmd: str,
        dev_id: str,
        method: str,
        query: Mapping[str, str],
        body: bytes,
        *,
        dev_type: str | None = None,
    ) -> Any:
        """One set_ajax_* request as it came by HTTP (the /cnf adapter's entry). `dev_type`:
        the device's type as the core has it configured now."""
        return await handle_request(self, cmd, dev_id, method, query, body, dev_type=dev_type)

    def device_kind(self, dev_id: str) -> DeviceKind | None:
        """The kind of a known HTTP-input device; None for any other."""
        device_type = self._http_type(self._dev_types.get(dev_id))
        return device_type.kind if device_type is not None else None

    # -- incoming ----------------------------------------------------------------------------

    def on_message(self, topic: str, payload: bytes, retained: bool) -> None:
        parsed = self.topics.parse_device_topic(topic)
        if parsed is None:
            return
        dev_id, leaf = parsed
        if leaf == "config":
            self._on_config(dev_id, payload)
        elif leaf == "command":
            self._on_command(dev_id, payload)

    def _on_config(self, dev_id: str, payload: bytes) -> None:
        if not payload:
            self._dev_types.pop(dev_id, None)
            self._last_ts.pop(dev_id, None)
            return
        try:
            dev_type = json.loads(payload).get("dev_type")
        except (ValueError, UnicodeDecodeError, AttributeError):
            dev_type = None
        # An unreadable config still names a device: it is refused as "not HTTP input", not
        # answered as unknown.
        self._dev_types[dev_id] = dev_type if isinstance(dev_type, str) else ""
        for waiter in self._config_waiters.pop(dev_id, []):
            if not waiter.done():
                waiter.set_result(None)

    def _on_command(self, dev_id: str, payload: bytes) -> None:
        waiters = self._waiters.get(dev_id)
        if not waiters:
            return
        parsed = control_answer(payload)
        if parsed is None:
            return
        state_ts, answer = parsed
        for waiter in waiters:
            # A run that used a newer state answers the older requests as well: their state
            # is superseded and will get no command of its own.
            if waiter.ts <= state_ts and not waiter.answer.done():
                waiter.answer.set_result(dict(answer))

    # -- requests ----------------------------------------------------------------------------

    async def set_ajax_meter(
        self,
        dev_id: str,
        values: Mapping[str, Any],
        *,
        from_query: bool,
        dev_type: str | None = None,
    ) -> str:
        await self._check_device(dev_id, "meter", dev_type)
        payload = parse_meter_input(values, from_query=from_query)
        bus = self._connected_bus()
        payload["ts"] = self._next_ts(dev_id)
        try:
            # Waits for the broker's acknowledgement: "ok" means the state is on the bus.
            await bus.publish(
                self.topics.state(dev_id), _encode(payload), timeout=self.answer_timeout
            )
        except (BusError, TimeoutError) as exc:
            raise InputError(503, f"the MQTT broker did not take the state: {exc}") from None
        return "ok"

    async def set_ajax_evse(
        self,
        dev_id: str,
        values: Mapping[str, Any],
        *,
        from_query: bool,
        dev_type: str | None = None,
    ) -> dict[str, Any]:
        await self._check_device(dev_id, "evse", dev_type)
        payload = parse_evse_input(values, from_query=from_query)
        bus = self._connected_bus()
        ts = self._next_ts(dev_id)
        payload["ts"] = ts
        waiter = _Waiter(ts, asyncio.get_running_loop().create_future())
        waiters = self._waiters.setdefault(dev_id, [])
        # Registered before publishing, so that no answer can slip past unseen.
        waiters.append(waiter)
        try:
            if not bus.publish_nowait(self.topics.state(dev_id), _encode(payload)):
                raise InputError(503, "not connected to the MQTT broker")
            try:
                return await asyncio.wait_for(waiter.answer, self.answer_timeout)
            except TimeoutError:
                raise InputError(504, "the load manager did not answer in time") from None
        finally:
            waiters.remove(waiter)
            if not waiters:
                self._waiters.pop(dev_id, None)

    def _http_type(self, name: str | None) -> DeviceType | None:
        if not name or name not in self._registry:
            return None
        device_type = self._registry.get(name)
        return device_type if device_type.transport == "http" else None

    async def _configured_type(self, dev_id: str) -> str | None:
        """The device's type from its retained config; None for a device without one.

        A device the core acknowledged a moment ago (set_params "ok") may not have reached
        this bridge yet: its config is on the way through the broker. So a device not heard
        of is waited for, up to CONFIG_WAIT_S, before it is refused as unknown."""
        if dev_id not in self._dev_types:
            waiter = asyncio.get_running_loop().create_future()
            self._config_waiters.setdefault(dev_id, []).append(waiter)
            try:
                await asyncio.wait_for(waiter, CONFIG_WAIT_S)
            except TimeoutError:
                pass
            finally:
                waiters = self._config_waiters.get(dev_id, [])
                if waiter in waiters:
                    waiters.remove(waiter)
                if not waiters:
                    self._config_waiters.pop(dev_id, None)
        return self._dev_types.get(dev_id)

    async def _check_device(self, dev_id: str, kind: DeviceKind, dev_type: str | None) -> None:
        """Refuses a device that is not an HTTP-input device of `kind`. `dev_type` is the
        type the core has configured now (in the service and with remote bridges, which
        get it with each request); a bridge with an HTTP port of its own knows only the
        retained configs."""
        configured = dev_type if dev_type is not None else await self._configured_type(dev_id)
        if configured is None:
            raise InputError(404, f"unknown device {dev_id!r}")
        device_type = self._http_type(configured)
        if device_type is None or device_type.kind != kind:
            raise InputError(
                400,
                f"{dev_id} is not an HTTP-input {_KIND_NAMES[kind]} "
                f"(its type is {configured or 'unknown'})",
            )

    def _connected_bus(self) -> MqttBus:
        bus = self._bus
        if bus is None or not bus.connected.is_set():
            raise InputError(503, "not connected to the MQTT broker")
        return bus

    def _next_ts(self, dev_id: str) -> float:
        # Strictly increasing per device, so that state_ts tells the answers of two requests
        # in the same clock tick apart.
        ts = max(self._clock(), self._last_ts.get(dev_id, 0.0) + 1e-6)
        self._last_ts[dev_id] = ts
        return ts


def single_values(query: Mapping[str, str]) -> dict[str, str]:
    """Query parameters as a plain dict; a parameter given twice is refused, not guessed."""
    getall = getattr(query, "getall", None)
    if getall is not None:
        repeated = sorted({k for k in query if len(getall(k)) > 1})
        if repeated:
            raise InputError(400, f"parameter(s) given more than once: {', '.join(repeated)}")
    return {k: query[k] for k in query}


def _encode(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


COMMANDS = frozenset({"set_ajax_meter", "set_ajax_evse"})


def request_values(method: str, query: Mapping[str, str], body: bytes) -> tuple[Any, bool]:
    """GET (or a POST without a body) gives the query parameters, a POST its JSON body.
    → (values, from_query)."""
    if method == "GET" or not body.strip():
        return single_values(query), True
    try:
        return json.loads(body), False
    except (ValueError, UnicodeDecodeError) as exc:
        raise InputError(400, f"body is not valid JSON: {exc}") from None


async def serve(
    bridge: HttpInputBridge,
    cmd: str,
    dev_id: str,
    values: Any,
    *,
    from_query: bool,
    dev_type: str | None = None,
) -> Any:
    """One set_ajax_* request's values through the bridge → what /cnf answers."""
    if cmd == "set_ajax_meter":
        return await bridge.set_ajax_meter(
            dev_id, values, from_query=from_query, dev_type=dev_type
        )
    if cmd == "set_ajax_evse":
        return await bridge.set_ajax_evse(dev_id, values, from_query=from_query, dev_type=dev_type)
    raise InputError(
        400, f"unknown cmd {cmd!r}: this bridge serves {' and '.join(sorted(COMMANDS))}"
    )


async def handle_request(
    bridge: HttpInputBridge,
    cmd: str,
    dev_id: str,
    method: str,
    query: Mapping[str, str],
    body: bytes,
    *,
    dev_type: str | None = None,
) -> Any:
    """One set_ajax_* request as it came by HTTP."""
    values, from_query = request_values(method, query, body)
    return await serve(bridge, cmd, dev_id, values, from_query=from_query, dev_type=dev_type)


# -- standalone: `chargebus bridge http` ----------------------------------------------------

_BRIDGE_KEY = web.AppKey("http_input_bridge", HttpInputBridge)
_PASSWORD_KEY = web.AppKey("admin_password", str)
_THROTTLE_KEY = web.AppKey("throttle", FailureThrottle)
_UNAUTHORIZED = {"WWW-Authenticate": 'Basic realm="chargebus"'}


async def _check_admin(request: web.Request) -> None:
    credentials = basic_credentials(request)
    if credentials is None:
        raise InputError(401, "set_ajax_* needs the admin password (HTTP basic auth)")
    throttle = request.app[_THROTTLE_KEY]
    client = request.remote or "?"
    ticket = throttle.admit(client)
    if isinstance(ticket, Refusal):
        raise InputError(429, f"too many failed attempts; try again in {ticket.retry_after:.0f} s")
    # Both compared in constant time, and both always, so timing tells nothing.
    user_ok = hmac.compare_digest(credentials.user.encode(), b"admin")
    password_ok = hmac.compare_digest(
        credentials.password.encode(), request.app[_PASSWORD_KEY].encode()
    )
    if not (user_ok and password_ok):
        throttle.failed(ticket)
        raise InputError(
            401, "wrong user name or password (use user 'admin' and the admin password)"
        )
    throttle.succeeded(ticket)


async def _handle_cnf(request: web.Request) -> web.Response:
    cmd = request.query.get("cmd", "")
    try:
        if cmd not in COMMANDS:
            raise InputError(
                400, f"unknown cmd {cmd!r}: this bridge serves {' and '.join(sorted(COMMANDS))}"
            )
        await _check_admin(request)
        params, body = await read_parameters(request)
        dev_ids = params.getall("dev_id", [])
        if len(dev_ids) != 1 or not dev_ids[0]:
            raise InputError(400, "give exactly one parameter 'dev_id'")
        answer = await handle_request(
            request.app[_BRIDGE_KEY], cmd, dev_ids[0], request.method, params, body
        )
    except ApiError as exc:
        # InputError, or a body read_parameters refused (too large, too slow).
        headers = _UNAUTHORIZED if exc.status == 401 else exc.headers
        return error_response(exc.status, exc.message, headers, cmd or None)
    except web.HTTPRequestEntityTooLarge as exc:
        return error_response(413, f"request body too large: {exc.text}", cmd=cmd or None)
    return web.Response(text=json.dumps(answer), content_type="application/json")


def create_bridge_app(
    bridge: HttpInputBridge, admin_password: str, max_body_bytes: int
) -> web.Application:
    app = web.Application(client_max_size=max_body_bytes)
    app[_BRIDGE_KEY] = bridge
    app[_PASSWORD_KEY] = admin_password
    app[_THROTTLE_KEY] = FailureThrottle()
    app.router.add_route("GET", "/cnf", _handle_cnf)
    app.router.add_route("POST", "/cnf", _handle_cnf)
    return app


@contextlib.asynccontextmanager
async def http_input_bridge(
    settings: Settings,
    target: MqttTarget,
    registry: DeviceTypeRegistry | None = None,
    *,
    role: str = "http",
    commands_handed_in: bool = False,
) -> AsyncIterator[HttpInputBridge]:
    """The HTTP-input bridge (set_ajax_*): a bridge like any other, with its own connection
    and the bus to the core; in the core's process (`commands_handed_in`) the core hands it
    the commands it publishes. No will: it holds no retained topic of its own."""
    bridge = HttpInputBridge(
        Topics(settings.base_topic), registry=registry, commands_handed_in=commands_handed_in
    )
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


async def run_http_bridge(settings: Settings, stop: asyncio.Event) -> None:
    """Serves set_ajax_meter / set_ajax_evse on settings.http_host:http_port until `stop`.
    (With http_input_remote, `chargebus bridge http` runs bridges/http_input_rpc.py's
    run_rpc_bridge instead: the core's /cnf takes the requests.)"""
    if not settings.admin_password:
        raise ValueError(
            "the HTTP-input bridge needs an admin password (CHARGEBUS_ADMIN_PASSWORD): "
            "it accepts measurements only with HTTP basic auth"
        )
    target = settings.mqtt_target()
    if target is None:
        raise ValueError("the HTTP-input bridge needs the broker's URL (CHARGEBUS_MQTT_URL)")
    async with contextlib.AsyncExitStack() as stack:
        listener = stack.enter_context(http_listener(settings.http_host, settings.http_port))
        # A client id of its own, so that it never takes over the connection of a service's
        # in-process bridge.
        bridge = await stack.enter_async_context(
            http_input_bridge(settings, target, role="bridge-http")
        )
        app = create_bridge_app(bridge, settings.admin_password, settings.max_body_bytes)
        port = await stack.enter_async_context(serve_http(app, listener))
        log.info(
            "HTTP-input bridge ready: http://%s:%d/cnf, MQTT %s, base topic %r",
            settings.http_host,
            port,
            target.redacted(),
            settings.base_topic,
        )
        await stop.wait()
