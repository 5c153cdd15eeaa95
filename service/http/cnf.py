"""The /cnf commands: one small function each, registered by name with the methods they
answer and whether they need the admin."""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from service.auth import AdminAccount, FailureThrottle
from service.control_loop import ControlLoop
from service.core.authorization import (
    OVERRIDE_FLAGS,
    find_rfid,
    may_override,
    user_without_secrets,
)
from service.core.config_edit import EditError
from service.core.dev_info import get_params_answer
from service.core.models import EvseConfig, User
from service.diag_log import DiagLogging
from service.http.errors import (
    ApiError,
    bad_request,
    disk_fault,
    forbidden,
    not_found,
    unauthorized,
)
from service.http.guard import admit
from service.http.request import CnfRequest
from service.modbus_rpc import ModbusRpcClient, RpcTimeout
from service.state import ServiceState

log = logging.getLogger(__name__)


class HttpInput(Protocol):
    """Who serves set_ajax_meter / set_ajax_evse: the HTTP-input bridge in this process, or
    the forwarder to bridge processes (http_input_remote). service/app.py wires it, so the
    adapter imports no bridge; a refusal is raised as an ApiError."""

    async def handle_request(
        self,
        cmd: str,
        dev_id: str,
        method: str,
        query: Mapping[str, str],
        body: bytes,
        *,
        dev_type: str | None = None,
    ) -> Any: ...


@dataclass
class CnfContext:
    state: ServiceState
    admin: AdminAccount
    throttle: FailureThrottle
    diag: DiagLogging
    control: ControlLoop
    # cmd=modbus reaches the devices through the Modbus bridges on the bus.
    modbus: ModbusRpcClient | None = None
    # set_ajax_meter / set_ajax_evse: the HTTP-input bridge (bridges/http_input.py), or with
    # http_input_remote the forwarder to bridge processes over the bus.
    http_input: HttpInput | None = None


Handler = Callable[[CnfContext, CnfRequest], Awaitable[Any]]


@dataclass(frozen=True)
class Command:
    handler: Handler
    methods: frozenset[str]
    needs_admin: bool


COMMANDS: dict[str, Command] = {}
GET = frozenset({"GET"})
POST = frozenset({"POST"})
BOTH = frozenset({"GET", "POST"})


def command(
    name: str, methods: frozenset[str] = BOTH, *, admin: bool = False
) -> Callable[[Handler], Handler]:
    def register(handler: Handler) -> Handler:
        COMMANDS[name] = Command(handler, methods, admin)
        return handler

    return register


def _device_id(ctx: CnfContext, req: CnfRequest) -> str:
    dev_id = req.required_text("dev_id", max_length=32)
    if dev_id not in ctx.state.installation.devices:
        raise not_found(f"unknown device {dev_id!r}")
    return dev_id


def _edit_error(exc: EditError) -> ApiError:
    message = str(exc)
    return (
        not_found(message)
        if message.startswith("unknown device")
        or message.startswith("unknown user")
        or message.startswith("unknown EVSE")
        else bad_request(message)
    )


# -- reading ------------------------------------------------------------------------------


@command("get_dev_info")
async def get_dev_info(ctx: CnfContext, req: CnfRequest) -> Any:
    return ctx.state.dev_info(admin=req.is_admin)


@command("get_params")
async def get_params(ctx: CnfContext, req: CnfRequest) -> Any:
    """The params flat at the top level, as real installations answer (dev_info.py)."""
    return get_params_answer(
        ctx.state.params_info(),
        ctx.state.registry.dev_meta(),
        [g.model_dump() for g in ctx.state.installation.groups],
    )


@command("get_dev_types")
async def get_dev_types(ctx: CnfContext, req: CnfRequest) -> Any:
    # Firmware 1.12 and later answer dev_meta here instead of in get_params.
    return ctx.state.registry.dev_meta()


@command("get_devices", admin=True)
async def get_devices(ctx: CnfContext, req: CnfRequest) -> Any:
    return [d.model_dump() for d in ctx.state.installation.devices.values()]


@command("get_users", admin=True)
async def get_users(ctx: CnfContext, req: CnfRequest) -> Any:
    return [u.model_dump() for u in ctx.state.users.users.values()]


@command("get_user")
async def get_user(ctx: CnfContext, req: CnfRequest) -> Any:
    """The admin gets the whole record; anyone else who knows the id gets it without the
    RFIDs/PINs (an id is shown nowhere but to the admin, yet it is no credential for PINs)."""
    user_id = req.required_text("id", max_length=32)
    if req.is_admin:
        user = ctx.state.user(user_id)
        if user is None:
            raise not_found(f"unknown user {user_id!r}")
        return user.model_dump()
    user = _user_by_id(ctx, req, user_id)
    if user is None:
        raise forbidden("unknown user id; the admin password is needed to look up users")
    return user_without_secrets(user)


def _user_by_id(ctx: CnfContext, req: CnfRequest, user_id: str) -> User | None:
    """A user id given without the admin password: a guess as far as the throttle goes."""
    ticket = admit(ctx.throttle, req.http)
    user = ctx.state.user(user_id)
    if user is None:
        ctx.throttle.failed(ticket)
    else:
        ctx.throttle.succeeded(ticket)
    return user


@command("get_new_user_id")
async def get_new_user_id(ctx: CnfContext, req: CnfRequest) -> Any:
    return ctx.state.new_user_id()


# -- changing ------------------------------------------------------------------------------


@command("set_params", POST, admin=True)
async def set_params(ctx: CnfContext, req: CnfRequest) -> Any:
    try:
        await ctx.state.set_params(req.json_body())
    except EditError as exc:
        raise _edit_error(exc) from None
    return "ok"


@command("set_device", POST, admin=True)
async def set_device(ctx: CnfContext, req: CnfRequest) -> Any:
    """Newer firmware's device-only variant of set_params: `{"devices": [...]}`."""
    body = req.json_body()
    if not isinstance(body, dict) or set(body) != {"devices"}:
        raise bad_request('set_device takes {"devices": [...]} and nothing else')
    try:
        await ctx.state.set_params(body)
    except EditError as exc:
        raise _edit_error(exc) from None
    return "ok"


@command("del_device", admin=True)
async def del_device(ctx: CnfContext, req: CnfRequest) -> Any:
    await ctx.state.delete_device(_device_id(ctx, req))
    return "ok"


@command("reset_device", admin=True)
async def reset_device(ctx: CnfContext, req: CnfRequest) -> Any:
    await ctx.control.reset_device(_device_id(ctx, req))
    return "ok"


@command("set_user", POST)
async def set_user(ctx: CnfContext, req: CnfRequest) -> Any:
    body = req.json_body()
    user_id = body.get("id") if isinstance(body, dict) else None
    if not req.is_admin and isinstance(user_id, str):
        # Counted either way; an unknown id is refused below as creating a user.
        _user_by_id(ctx, req, user_id)
    try:
        await ctx.state.set_user(body, is_admin=req.is_admin)
    except PermissionError as exc:
        raise (forbidden(str(exc)) if req.is_admin else unauthorized(str(exc))) from None
    except EditError as exc:
        raise _edit_error(exc) from None
    return "ok"


@command("del_user", admin=True)
async def del_user(ctx: CnfContext, req: CnfRequest) -> Any:
    try:
        await ctx.state.delete_user(req.required_text("id", max_length=32))
    except EditError as exc:
        raise _edit_error(exc) from None
    return "ok"


@command("accept_license", admin=True)
async def accept_license(ctx: CnfContext, req: CnfRequest) -> Any:
    accepted = req.flag("acc")
    usage = req.flag("allow_usage_stats", required=False)
    await ctx.state.accept_license(bool(accepted), bool(usage))
    return "ok"


@command("change_admin_pwd")
async def change_admin_pwd(ctx: CnfContext, req: CnfRequest) -> Any:
    old = req.required_text("old_pwd", max_length=200)
    new = req.required_text("new_pwd", max_length=200)
    # The same guess budget as basic auth, taken before old_pwd is looked at.
    ticket = admit(ctx.throttle, req.http)
    if not await ctx.admin.check(old):
        ctx.throttle.failed(ticket)
        raise forbidden("old_pwd is not the admin password")
    ctx.throttle.succeeded(ticket)
    try:
        await ctx.admin.change(new)
    except ValueError as exc:
        raise bad_request(str(exc)) from None
    log.info("admin password changed")
    return "ok"


@command("set_diag_logging", admin=True)
async def set_diag_logging(ctx: CnfContext, req: CnfRequest) -> Any:
    if req.flag("enable"):
        try:
            ctx.diag.start()
            # A log file that cannot be written is no diagnostic log: say so, not "ok".
            await asyncio.to_thread(ctx.diag.check_writable)
        except OSError as exc:
            ctx.diag.stop()
            raise disk_fault(exc) from None
    else:
        ctx.diag.stop()
    return "ok"


@command("soft_meter")
async def soft_meter(ctx: CnfContext, req: CnfRequest) -> Any:
    dev_id = _device_id(ctx, req)
    value = req.number("val", required=False, minimum=0, maximum=1e12)
    if value is not None and not req.is_admin:
        raise unauthorized("setting the soft meter needs the admin password")
    try:
        old = await ctx.state.set_soft_meter(dev_id, value)
    except EditError as exc:
        raise bad_request(str(exc)) from None
    return round(old)


@command("set_cm_vars", admin=True)
async def set_cm_vars(ctx: CnfContext, req: CnfRequest) -> Any:
    """GET `name=&val=`, or POST `{"vars": [{"name": .., "expr": ..}]}` as clients send it.
    A value that reads as a number is stored as one, anything else as an expression.
    `tmp=1`: held in memory only (not written to disk), for values set every few seconds."""
    persist = not req.flag("tmp", required=False)
    if req.method == "POST" and req.body.strip():
        body = req.json_body()
        entries = body.get("vars") if isinstance(body, dict) else None
        if not isinstance(entries, list) or not entries:
            raise bad_request('body must be {"vars": [{"name": ..., "expr": ...}, ...]}')
        variables: dict[str, float | str] = {}
        for index, entry in enumerate(entries):
            if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
                raise bad_request(f"vars[{index}] needs a string name")
            expr = entry.get("expr")
            if isinstance(expr, bool) or not isinstance(expr, int | float | str):
                raise bad_request(f"vars[{index}].expr must be a number or a string")
            variables[entry["name"]] = _number_or_expression(expr)
    else:
        name = req.required_text("name", max_length=64)
        variables = {name: _number_or_expression(req.required_text("val", max_length=1000))}
    try:
        await ctx.state.set_cm_vars(variables, persist=persist)
    except EditError as exc:
        raise bad_request(str(exc)) from None
    return "ok"


def _number_or_expression(value: float | str) -> float | str:
    if isinstance(value, int | float):
        return float(value)
    try:
        number = float(value)
    except ValueError:
        return value
    return number if math.isfinite(number) else value


# -- Modbus registers ------------------------------------------------------------------------

_MODBUS_QUERY_KEYS = ("read", "count", "write", "value", "values")


def _modbus_target(ctx: CnfContext, device: str) -> tuple[str, int]:
    """`device=` → (the configured device whose bridge answers, Modbus id to address). Besides
    device ids, a device type may name aliases for its first device (the Power Brain's
    evse, meter1, meter2: its profile's DeviceType.device_aliases)."""
    devices = ctx.state.installation.devices
    registry = ctx.state.registry
    for name in registry.names():
        device_type = registry.get(name)
        aliases = dict(device_type.device_aliases)
        if device not in aliases:
            continue
        owners = sorted(
            (d for d in devices.values() if d.dev_type == name),
            key=lambda d: (d.number, d.dev_id),
        )
        if not owners:
            raise not_found(
                f"device={device} needs a configured {device_type.display_name} ({name})"
            )
        return owners[0].dev_id, aliases[device]
    config = devices.get(device)
    if config is None:
        names = sorted(a for n in registry.names() for a, _ in registry.get(n).device_aliases)
        raise not_found(f"unknown device {device!r}: use {', '.join(names)} or a device id")
    if config.dev_type not in registry or registry.get(config.dev_type).transport != "modbus":
        raise bad_request(f"{device} is not a Modbus device")
    return config.dev_id, config.id


@command("modbus")
async def modbus(ctx: CnfContext, req: CnfRequest) -> Any:
    device = req.required_text("device", max_length=32)
    query = {
        key: text
        for key in _MODBUS_QUERY_KEYS
        if (text := req.text(key, required=False, max_length=2000)) is not None
    }
    if ("read" in query) == ("write" in query):
        raise bad_request("give either read or write")
    if "write" in query and not req.is_admin:
        raise unauthorized("cmd=modbus&write needs the admin password (HTTP basic auth)")
    secret = "read" in query and query["read"] != "all" and _reads_secret(query)
    if secret and not req.is_admin:
        raise unauthorized(
            "reading the last RFID/PIN register (8096) needs the admin password (HTTP basic auth)"
        )
    dev_id, unit = _modbus_target(ctx, device)
    if ctx.modbus is None:
        raise ApiError(503, "no Modbus bridge is connected")
    try:
        reply = await ctx.modbus.request(dev_id, unit, query)
    except RpcTimeout as exc:
        raise ApiError(504, str(exc)) from None
    if reply.status != 200:
        raise ApiError(reply.status, str(reply.body), body=reply.body)
    if query.get("read") == "all" and not req.is_admin and isinstance(reply.body, dict):
        return {k: v for k, v in reply.body.items() if not _secret_key(k)}
    return reply.body


# A Power Brain keeps the last RFID/PIN presented at the wallbox in 8096..8110 (a string):
# a credential, shown to the admin only like the users' PINs.
_SECRET_REGISTERS = range(8096, 8096 + 15)
# Registers a single read takes by its suffix; a string at most the longest map entry's.
_SUFFIX_SPAN = {"": 1, "d": 2, "q": 4, "s": 16}


def _address(text: str) -> tuple[int, str] | None:
    """`8096s` → (8096, "s"); None for what the bridge will refuse anyway."""
    text = text.strip()
    suffix = text[-1:].lower() if text[-1:].lower() in ("d", "q", "s") else ""
    digits = text[: len(text) - len(suffix)]
    return (int(digits), suffix) if digits.isascii() and digits.isdigit() else None


def _reads_secret(query: dict[str, str]) -> bool:
    parsed = _address(query["read"])
    if parsed is None:
        return False
    address, suffix = parsed
    count_text = query.get("count", "").strip()
    span = int(count_text) if count_text.isascii() and count_text.isdigit() else 0
    span = span or _SUFFIX_SPAN[suffix]
    return address < _SECRET_REGISTERS.stop and _SECRET_REGISTERS.start < address + span


def _secret_key(key: str) -> bool:
    """A read=all key such as `8096s`."""
    parsed = _address(key)
    return parsed is not None and parsed[0] in _SECRET_REGISTERS


# -- charging sessions ----------------------------------------------------------------------

_RFID_MAX = 64


# Refusals that must not tell a valid PIN from an invalid one: each answers as unknown_rfid.
_HIDDEN_REFUSALS = frozenset({"unknown_rfid", "no_evse", "not_allowed"})


@command("enter_rfid")
async def enter_rfid(ctx: CnfContext, req: CnfRequest) -> Any:
    """Open like the product's (the PIN is the credential; clients call it without auth).
    Every refused PIN counts as a failed guess; an unknown PIN, a known one with no vehicle
    waiting for it and one not allowed at the EVSE answer alike, so PINs cannot be probed."""
    rfid = req.required_text("rfid", max_length=_RFID_MAX)
    dev_id = req.text("dev_id", required=False, max_length=32)
    devices = ctx.state.installation.devices
    if dev_id is not None and not isinstance(devices.get(dev_id), EvseConfig):
        raise not_found(f"unknown EVSE {dev_id!r}")
    ticket = admit(ctx.throttle, req.http)
    outcome = await ctx.control.enter_rfid(rfid, dev_id)
    if not outcome.accepted:
        ctx.throttle.failed(ticket)
        log.debug("enter_rfid refused at %s: %s", outcome.dev_id or "-", outcome.action)
        action = "unknown_rfid" if outcome.action in _HIDDEN_REFUSALS else outcome.action
        raise ApiError(403, f"RFID/PIN refused: {action}")
    ctx.throttle.succeeded(ticket)
    return "ok"


# Which flags a user's RFID/PIN may set; the admin may set all (the cFos documentation).
_USER_FLAGS = frozenset("CcUu")


@command("override_device")
async def override_device(ctx: CnfContext, req: CnfRequest) -> Any:
    dev_id = _device_id(ctx, req)
    config = ctx.state.installation.devices[dev_id]
    if not isinstance(config, EvseConfig):
        raise bad_request(f"{dev_id} is not an EVSE")
    flags = req.text("flags", required=False, max_length=12) or ""
    unknown = sorted(set(flags) - OVERRIDE_FLAGS)
    if unknown:
        raise bad_request(f"unknown override flag(s) {''.join(unknown)}: use C c E e U u")
    # Clients send mamps as a float ("16000.0"); a negative value removes the cap.
    mamps_value = req.number("mamps", required=False, minimum=-1, maximum=2_000_000)
    mamps = None if mamps_value is None else round(mamps_value)
    if not flags and mamps is None:
        raise bad_request("give flags and/or mamps")
    if not req.is_admin:
        _authorise_user_override(ctx, req, config, flags)
    await ctx.control.override(dev_id, flags, mamps)
    return "ok"


def _authorise_user_override(
    ctx: CnfContext, req: CnfRequest, config: EvseConfig, flags: str
) -> None:
    rfid = req.text("rfid", required=False, max_length=_RFID_MAX)
    if not rfid:
        raise unauthorized("override_device needs the admin password or a user's RFID/PIN")
    admin_only = sorted(set(flags) - _USER_FLAGS)
    if admin_only:
        raise forbidden(f"flag(s) {''.join(admin_only)} need the admin password")
    ticket = admit(ctx.throttle, req.http)
    match = find_rfid(ctx.state.users.users, rfid)
    # The session's own user only: another user's PIN must not stop or unleash it.
    session = ctx.state.memory.evse(config.dev_id).auth
    if match is None or not may_override(match.user, config.dev_id, config.users, session):
        ctx.throttle.failed(ticket)
        raise forbidden(f"RFID/PIN may not override {config.dev_id}")
    ctx.throttle.succeeded(ticket)


# -- HTTP-input devices (bridges/http_input.py) -----------------------------------------------


async def _http_input(ctx: CnfContext, req: CnfRequest, cmd: str) -> Any:
    # The device as configured now: whatever set_params acknowledged holds for the next
    # request, even before its config has reached the bridge through the broker.
    dev_id = _device_id(ctx, req)
    if ctx.http_input is None:
        raise ApiError(503, "the HTTP-input bridge is not running")
    dev_type = ctx.state.installation.devices[dev_id].dev_type
    return await ctx.http_input.handle_request(
        cmd, dev_id, req.method, req.params, req.body, dev_type=dev_type
    )


@command("set_ajax_meter", admin=True)
async def set_ajax_meter(ctx: CnfContext, req: CnfRequest) -> Any:
    """A meter's values pushed by GET (query) or POST (JSON body) → "ok"."""
    return await _http_input(ctx, req, "set_ajax_meter")


@command("set_ajax_evse", admin=True)
async def set_ajax_evse(ctx: CnfContext, req: CnfRequest) -> Any:
    """An EVSE's values pushed by GET or POST → the control values for exactly that state."""
    return await _http_input(ctx, req, "set_ajax_evse")
