"""Builds the get_dev_info / get_params answer objects from configuration and run time.

Field names and shapes follow the cFos API and what real installations answer (see
docs/api.md): device_enabled as 1/0, power both as power_w and cur_charging_power, phase
currents as current_l1..3 on EVSEs too.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from service import CFOS_API_VERSION, __version__
from service.core.device_types import DeviceTypeRegistry
from service.core.models import (
    EvseConfig,
    EvseState,
    Installation,
    MeterConfig,
    MeterState,
    Params,
    User,
)
from service.core.runtime import DeviceRuntime
from service.core.verifier import make_verifier

CFOS_VENDOR_ID = 52997
# We license nothing: report a limit no installation reaches.
MAX_EVSES = 100_000

EVSE_STATE_OFFLINE = 6
CP_STATE_NAMES = {
    1: "Waiting",
    2: "Vehicle detected",
    3: "Charging",
    4: "Charging with ventilation",
    5: "Error",
    6: "Offline",
}

# Keys we answer but never take as configuration: clients that send back what they read
# (get_params → edit → set_params) must not be refused for them.
READONLY_PARAM_KEYS = frozenset(
    {
        "cons_evse_power",
        "avail_evse_power",
        "shareware_mode",
        "version",
        "chargebus_version",
        "time",
        "vsn",
        "max_evses",
        "ocpp_gateway_license_cnt",
        "ocpp_gateway_licenses_used",
        "license_accepted",
        "allow_usage_stats",
        # get_params's old names of derived figures and the OCPP server's settings
        "consumed_evse_power",
        "remaining_evse_power",
        "ocpp_srv_tls_mode",
        "ocpp_srv_port",
        "ocpp_srv_use_ext_cert",
        "ocpp_srv_cert_fn",
        "ocpp_srv_private_key_fn",
        "ocpp_srv_cacert_fn",
    }
)
READONLY_DEVICE_KEYS = frozenset(
    {
        "com_err",
        "com_err_secs",
        "com_errors",
        "last_error",
        "is_evse",
        "charging_enabled",
        "charging_current",
        "user",
        "cur_charging_power",
        "power_w",
        "power",
        "total_energy",
        "phases",
        "state",
        "model",
        "paused",
        "pause_time",
        "current_l1",
        "current_l2",
        "current_l3",
        "voltage_l1",
        "voltage_l2",
        "voltage_l3",
        "import",
        "export",
        "is_mock",
        "max_power",
        "last_set_charging_cur",
        "ucnt",
        "evse",
        "ocpp",
        "dev_type_name",
        "lreason",
        "status",
        "needs_auth",
        "overrides",
        "ov_cur",
        "crule_set",
    }
)


def params_info(
    installation: Installation,
    now: float,
    cons_evse_power: float = 0.0,
    avail_evse_power: float | None = None,
    *,
    params: Params | None = None,
) -> dict[str, Any]:
    """The params object of get_dev_info; `params` in force when they differ from the
    stored ones (volatile cm_vars)."""
    params = params if params is not None else installation.params
    if avail_evse_power is None:
        limit = params.max_total_current - params.reserve_current
        if params.max_total_evse_current:
            limit = min(limit, params.max_total_evse_current)
        avail_evse_power = max(0, limit) * 230 * 3 / 1000
    info = params.model_dump()
    info.update(
        cons_evse_power=round(cons_evse_power),
        avail_evse_power=round(avail_evse_power),
        max_evses=MAX_EVSES,
        shareware_mode=False,
        version=CFOS_API_VERSION,
        chargebus_version=__version__,
        time=int(now),
        vsn={
            "vendorid": CFOS_VENDOR_ID,
            # A number, as the product answers it: major << 24 | minor << 16 | build.
            "version": version_number(CFOS_API_VERSION),
            "productid": 0,
            "serialno": installation.serialno,
        },
        ocpp_gateway_license_cnt=0,
        ocpp_gateway_licenses_used=0,
        # What accept_license stored, to read back (chargebus's own names).
        license_accepted=installation.license_accepted,
        allow_usage_stats=installation.allow_usage_stats,
    )
    return info


def version_number(version: str) -> int:
    """"1.14.1656" → 17696376: how the product's `vsn.version` encodes its firmware."""
    major, minor, build = (int(part) for part in version.split("."))
    return major << 24 | minor << 16 | build


# get_params answers the params flat, as firmware 1.6 … 1.14 does (the `powerbrain` library
# reads `max_total_evse_power` and `version` at the top level). Those firmwares named six of
# them differently: both names are answered, with the same value and unit.
OLD_PARAM_NAMES: Mapping[str, str] = {
    "max_total_power": "max_total_current",
    "power_reserve": "reserve_current",
    "overdraft": "overdraft_cur",
    "max_total_evse_power": "max_total_evse_current",
    "consumed_evse_power": "cons_evse_power",
    "remaining_evse_power": "avail_evse_power",
}
# The product's OCPP server settings as its get_params shows them, for an installation that
# has none configured (the product's defaults: port 19520, no TLS).
OCPP_SERVER_DEFAULTS: Mapping[str, Any] = {
    "ocpp_srv_tls_mode": "off",
    "ocpp_srv_port": 19520,
    "ocpp_srv_use_ext_cert": False,
    "ocpp_srv_cert_fn": "",
    "ocpp_srv_private_key_fn": "",
    "ocpp_srv_cacert_fn": [],
}


def get_params_answer(
    params: Mapping[str, Any], dev_meta: Mapping[str, str], groups: list[dict[str, Any]]
) -> dict[str, Any]:
    """The get_params answer: the params object of get_dev_info flat at the top level, with
    the old names beside the new ones, the OCPP server settings, `dev_meta` (device type →
    display name, as firmware 1.6 has it) and chargebus's own `groups` (the load-balancing
    group tree as set_params takes it). No device list: that is get_dev_info's."""
    answer = dict(params)
    for old, new in OLD_PARAM_NAMES.items():
        answer[old] = params[new]
    for key, value in OCPP_SERVER_DEFAULTS.items():
        answer.setdefault(key, value)
    answer["dev_meta"] = dict(dev_meta)
    answer["groups"] = groups
    return answer


def _common(
    config: EvseConfig | MeterConfig,
    runtime: DeviceRuntime,
    registry: DeviceTypeRegistry,
    now: float,
) -> dict[str, Any]:
    info = config.model_dump()
    info["device_enabled"] = 1 if config.device_enabled else 0
    if config.dev_type in registry:
        info["dev_type_name"] = registry.get(config.dev_type).display_name
    info.update(
        com_err=runtime.com_err,
        # Seconds the present communication error has lasted (the product's meaning).
        com_err_secs=runtime.com_err_secs(now),
        com_errors=runtime.com_errors,
        last_error=runtime.last_error,
        # The product's simulated devices (bridges/mockup.py).
        is_mock=config.dev_type in registry and registry.get(config.dev_type).transport == "mockup",
        ucnt=0,
        model=runtime.state.model if runtime.state is not None else "",
    )
    return info


def evse_info(
    config: EvseConfig,
    runtime: DeviceRuntime,
    registry: DeviceTypeRegistry,
    now: float,
    soft_meter_wh: float = 0.0,
) -> dict[str, Any]:
    info = _common(config, runtime, registry, now)
    state = runtime.state if isinstance(runtime.state, EvseState) else None
    currents = state.current if state is not None else [0, 0, 0]
    voltages = state.voltage if state is not None else [230.0, 230.0, 230.0]
    if state is not None and state.power_w is not None:
        power = state.power_w
    else:
        power = sum(c * v for c, v in zip(currents, voltages, strict=True)) / 1000
    evse_state = state.state if state is not None else EVSE_STATE_OFFLINE
    phases = sum(1 << i for i, c in enumerate(currents) if c >= 1000)
    total_energy = (
        state.total_energy
        if state is not None and state.total_energy is not None
        else soft_meter_wh
    )
    max_cur = config.max_charging_cur if isinstance(config.max_charging_cur, int) else 0
    result = runtime.result
    set_current = -1
    if result is not None:
        charging_enabled = result.charging_enabled
        paused, pause_time, reason = result.paused, result.pause_time, result.reason
        # What the allocation assumes the EVSE uses; before it ever ran, what it measured.
        phases = result.phases or phases
        needs_auth, overrides, ov_cur = result.needs_auth, result.overrides, result.ov_cur
        allocated = set_current = result.charging_current
    else:
        charging_enabled = config.device_enabled
        paused, pause_time, reason = False, 0, ""
        needs_auth, overrides, ov_cur = bool(config.users), 0, max_cur
        allocated = 0
    info.update(
        is_evse=True,
        charging_enabled=charging_enabled,
        cur_charging_power=round(power),
        power_w=round(power),
        total_energy=round(total_energy),
        soft_meter=round(soft_meter_wh),
        phases=phases,
        state=evse_state,
        paused=paused,
        pause_time=pause_time,
        charging_current=allocated,
        current_l1=currents[0],
        current_l2=currents[1],
        current_l3=currents[2],
        max_power=round(max_cur * 230 * 3 / 1000),
        # What the last command sent said (mA, 0 for off or paused); -1 before any.
        last_set_charging_cur=runtime.commanded if runtime.commanded is not None else -1,
        lreason=reason,
        status=reason,
        needs_auth=needs_auth,
        overrides=overrides,
        ov_cur=ov_cur,
        user=result.user_id if result is not None and result.user_id else "",
        evse={
            "cp_state": CP_STATE_NAMES.get(evse_state, "Unknown"),
            "pp_state": "",
            "charging": evse_state in (3, 4),
            "current": allocated,
            "set_current": max(0, set_current),
            "enabled": charging_enabled,
            "phases": bin(phases).count("1"),
            "pause_reason": reason if paused else "",
            "pause_time": pause_time,
        },
        ocpp={"status": state.ocpp_status if state is not None else ""},
    )
    return info


def meter_info(
    config: MeterConfig,
    runtime: DeviceRuntime,
    registry: DeviceTypeRegistry,
    now: float,
) -> dict[str, Any]:
    info = _common(config, runtime, registry, now)
    state = runtime.state if isinstance(runtime.state, MeterState) else None
    sign = -1 if config.invert else 1
    currents = [sign * c for c in state.current] if state is not None else [0, 0, 0]
    voltages = state.voltage if state is not None else [230.0, 230.0, 230.0]
    if state is not None and state.power_w is not None:
        power = sign * state.power_w
    else:
        power = sum(c * v for c, v in zip(currents, voltages, strict=True)) / 1000
    info.update(
        is_evse=False,
        is_va=state.is_va if state is not None and state.is_va is not None else config.is_va,
        power_w=round(power),
        power=round(power),
        current_l1=currents[0],
        current_l2=currents[1],
        current_l3=currents[2],
        voltage_l1=round(voltages[0]),
        voltage_l2=round(voltages[1]),
        voltage_l3=round(voltages[2]),
        state=EVSE_STATE_OFFLINE if state is None else 1,
    )
    imported = state.import_wh if state is not None and state.import_wh is not None else 0
    exported = state.export_wh if state is not None and state.export_wh is not None else 0
    info["import"], info["export"] = (
        (round(exported), round(imported)) if config.invert else (round(imported), round(exported))
    )
    return info


# Credentials and user ids are shown to the admin only: a user id opens that user's record
# (get_user) to whoever knows it.
SECRET_DEVICE_KEYS = ("users", "fixed_rfid", "ocpp_password")


def redact_device(
    info: dict[str, Any], users: Mapping[str, User] | None = None
) -> dict[str, Any]:
    """A device's configuration or info for anyone but the admin. `user` (the id of the user
    charging) becomes that user's name when the user lets it be shown (`display`), else ""."""
    shown = {k: v for k, v in info.items() if k not in SECRET_DEVICE_KEYS}
    if info.get("ocpp_password"):
        # The OCPP bridge checks the charge point's password against this (verifier.py).
        context = f"{info.get('dev_id', '')}\0{info.get('address', '')}"
        shown["ocpp_password_verifier"] = make_verifier(str(info["ocpp_password"]), context)
    if "user" in shown:
        user = (users or {}).get(shown["user"]) if shown["user"] else None
        shown["user"] = user.name if user is not None and user.display else ""
    return shown


def device_info(
    config: EvseConfig | MeterConfig,
    runtime: DeviceRuntime,
    registry: DeviceTypeRegistry,
    now: float,
    soft_meter_wh: float = 0.0,
) -> dict[str, Any]:
    if isinstance(config, EvseConfig):
        return evse_info(config, runtime, registry, now, soft_meter_wh)
    return meter_info(config, runtime, registry, now)
