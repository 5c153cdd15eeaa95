"""Applying /cnf edits to configuration and users: pure functions that validate fully and
return new documents, or raise EditError and change nothing."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ValidationError

from service.core.authorization import rfid_key
from service.core.dev_info import READONLY_DEVICE_KEYS, READONLY_PARAM_KEYS
from service.core.device_types import DeviceTypeRegistry
from service.core.models import (
    ChargingRule,
    EvseConfig,
    GroupConfig,
    Installation,
    MeterConfig,
    Params,
    User,
)


class EditError(ValueError):
    """A request that cannot be applied; the message names the field and the problem."""


def describe_validation_error(exc: ValidationError, prefix: str = "") -> str:
    parts = []
    for err in exc.errors()[:5]:
        loc = ".".join(str(p) for p in err.get("loc", ()))
        where = f"{prefix}.{loc}" if prefix and loc else (prefix or loc or "value")
        parts.append(f"{where}: {err.get('msg', 'invalid')}")
    more = exc.error_count() - len(parts)
    return "; ".join(parts) + (f" (+{more} more)" if more > 0 else "")


@dataclass
class ConfigEdit:
    installation: Installation
    changed_devices: list[str] = field(default_factory=list)
    params_changed: bool = False
    soft_meters: dict[str, float] = field(default_factory=dict)


_PARAM_FIELDS = frozenset(Params.model_fields) | {
    alias
    for f in Params.model_fields.values()
    if f.validation_alias is not None and hasattr(f.validation_alias, "choices")
    for alias in f.validation_alias.choices
    if isinstance(alias, str)
}


def _validated(model: type[BaseModel], data: dict[str, Any], where: str) -> Any:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise EditError(describe_validation_error(exc, where)) from None


def _next_dev_id(prefix: str, taken: dict[str, Any]) -> str:
    n = 1
    while f"{prefix}{n}" in taken:
        n += 1
    return f"{prefix}{n}"


# Top-level keys of a get_dev_info/get_params answer that say something about the running
# state, not the configuration: a client sending a whole answer back must not be refused.
_ANSWER_ONLY_KEYS = frozenset({"auth_cnt", "loadmgr_disabled", "dev_meta"})


def apply_set_params(
    installation: Installation,
    body: Any,
    registry: DeviceTypeRegistry,
    known_user_ids: set[str],
) -> ConfigEdit:
    if not isinstance(body, dict):
        raise EditError("body must be a JSON object")
    unknown = [
        k
        for k in body
        if k not in ("params", "devices", "groups")
        and k not in _PARAM_FIELDS
        and k not in READONLY_PARAM_KEYS
        and k not in _ANSWER_ONLY_KEYS
    ]
    if unknown:
        raise EditError(f"unknown field(s): {', '.join(sorted(unknown))}")
    param_patch: dict[str, Any] = {k: v for k, v in body.items() if k in _PARAM_FIELDS}
    nested = body.get("params", {})
    if not isinstance(nested, dict):
        raise EditError("params must be a JSON object")
    bad = [k for k in nested if k not in _PARAM_FIELDS and k not in READONLY_PARAM_KEYS]
    if bad:
        raise EditError(f"params: unknown field(s): {', '.join(sorted(bad))}")
    param_patch.update({k: v for k, v in nested.items() if k in _PARAM_FIELDS})
    devices_patch = body.get("devices", [])
    if not isinstance(devices_patch, list):
        raise EditError("devices must be a JSON array of device objects")
    groups_patch = body.get("groups")
    if not param_patch and not devices_patch and groups_patch is None:
        raise EditError("nothing to set: give params fields, devices and/or groups")

    edit = ConfigEdit(installation=installation)
    params = installation.params
    if param_patch:
        merged = {**params.model_dump(), **_canonical_param_keys(param_patch)}
        params = _validated(Params, merged, "params")
        edit.params_changed = params != installation.params

    devices = dict(installation.devices)
    for index, patch in enumerate(devices_patch):
        where = f"devices[{index}]"
        if not isinstance(patch, dict):
            raise EditError(f"{where} must be a JSON object")
        dev_id, device, soft_meter = _edit_device(
            devices, patch, where, registry, known_user_ids, params
        )
        devices[dev_id] = device
        if dev_id not in edit.changed_devices and installation.devices.get(dev_id) != device:
            edit.changed_devices.append(dev_id)
        if soft_meter is not None:
            edit.soft_meters[dev_id] = soft_meter
    groups = installation.groups
    if groups_patch is not None:
        groups = _groups(groups_patch)
        edit.params_changed = edit.params_changed or groups != installation.groups
    _check_references(devices)
    # All devices when the groups change, else the devices of this edit: an older
    # configuration with a dangling group (balanced under the main group) stays editable.
    checked = devices if groups_patch is not None else {
        d: devices[d] for d in edit.changed_devices
    }
    _check_group_references(checked, groups)
    edit.installation = installation.model_copy(
        update={"params": params, "devices": devices, "groups": groups}
    )
    return edit


def _groups(patch: Any) -> list[GroupConfig]:
    """`groups`: the whole tree at once (a list replaces the one before; [] removes all)."""
    if not isinstance(patch, list):
        raise EditError("groups must be a JSON array of group objects")
    groups: list[GroupConfig] = []
    for index, item in enumerate(patch):
        if not isinstance(item, dict):
            raise EditError(f"groups[{index}] must be a JSON object")
        groups.append(_validated(GroupConfig, item, f"groups[{index}]"))
    parents = {g.id: g.parent for g in groups}
    if len(parents) != len(groups):
        raise EditError("groups: a group id is given twice")
    for group in groups:
        if group.parent and group.parent not in parents:
            raise EditError(f"groups: group {group.id}: parent group {group.parent} does not exist")
        # Up the chain: a group that reaches itself before the main group is a loop.
        seen, at = {group.id}, group.parent
        while at:
            if at in seen:
                raise EditError(f"groups: group {group.id} is its own ancestor")
            seen.add(at)
            at = parents[at]
    return groups


def _check_group_references(
    devices: dict[str, EvseConfig | MeterConfig], groups: list[GroupConfig]
) -> None:
    ids = {g.id for g in groups}
    wrong = sorted(d.dev_id for d in devices.values() if d.group and d.group not in ids)
    if wrong:
        raise EditError(f"devices in a group that does not exist: {', '.join(wrong)}")


def _canonical_param_keys(patch: dict[str, Any]) -> dict[str, Any]:
    """Old firmware's names (`max_total_power`, …) under the field's own name. A field given
    under two names with different values is refused, never guessed: a get_params answer
    carries both names with one value, and an edit of only one of them is ambiguous."""
    canonical: dict[str, Any] = {}
    given_as: dict[str, str] = {}
    for key, value in patch.items():
        for name, info in Params.model_fields.items():
            choices = getattr(info.validation_alias, "choices", ())
            if key != name and key not in choices:
                continue
            if name in canonical and canonical[name] != value:
                raise EditError(
                    f"params.{name}: given as {given_as[name]}={canonical[name]!r} and as "
                    f"{key}={value!r}; send one name, or both with the same value"
                )
            canonical[name] = value
            given_as[name] = key
    return canonical


def _edit_device(
    devices: dict[str, EvseConfig | MeterConfig],
    patch: dict[str, Any],
    where: str,
    registry: DeviceTypeRegistry,
    known_user_ids: set[str],
    params: Params,
) -> tuple[str, EvseConfig | MeterConfig, float | None]:
    soft_meter = patch.get("soft_meter")
    if soft_meter is not None and (
        isinstance(soft_meter, bool)
        or not isinstance(soft_meter, int | float)
        or not math.isfinite(soft_meter)
        or soft_meter < 0
    ):
        raise EditError(f"{where}.soft_meter: must be a number >= 0 (Wh)")
    fields = {k: v for k, v in patch.items() if k not in READONLY_DEVICE_KEYS and k != "soft_meter"}
    dev_id = fields.get("dev_id")
    if dev_id is not None and not isinstance(dev_id, str):
        raise EditError(f"{where}.dev_id: must be a string")
    existing = devices.get(dev_id) if dev_id else None
    dev_type = fields.get("dev_type", existing.dev_type if existing else None)
    if not isinstance(dev_type, str):
        raise EditError(f"{where}.dev_type: required for a new device")
    if dev_type not in registry:
        raise EditError(f"{where}.dev_type: unknown device type {dev_type!r}")
    kind = registry.get(dev_type).kind
    if dev_id is None:
        dev_id = _next_dev_id("E" if kind == "evse" else "M", devices)
    prefix = "E" if kind == "evse" else "M"
    if dev_id[:1] != prefix:
        raise EditError(f"{where}.dev_id: {kind} ids begin with {prefix}, got {dev_id!r}")
    model: type[EvseConfig | MeterConfig] = EvseConfig if kind == "evse" else MeterConfig
    base: dict[str, Any]
    if existing is not None:
        base = existing.model_dump()
    else:
        # Clients tell devices apart by name, so a new device is never nameless.
        base = {"name": dev_id}
        if kind == "evse":
            base["pause_min_time"] = params.min_pause_time
    merged = {**base, **fields, "dev_id": dev_id, "dev_type": dev_type}
    device = _validated(model, merged, where)
    _refuse_unused(fields, existing, where)
    virtual = registry.get(dev_type).transport == "virtual"
    if virtual and isinstance(device, MeterConfig) and device.role != 0:
        raise EditError(
            f"{where}.role: {dev_type} is a virtual meter, computed for display (the load "
            "balancing reads the devices it is computed from): its role must be 0"
        )
    if isinstance(device, EvseConfig):
        unknown_users = [u for u in device.users if u not in known_user_ids]
        if unknown_users:
            raise EditError(f"{where}.users: unknown user id(s): {', '.join(unknown_users)}")
    elif soft_meter is not None:
        raise EditError(f"{where}.soft_meter: only EVSEs have a soft meter")
    return dev_id, device, float(soft_meter) if soft_meter is not None else None


# Meter roles the model stores (the product knows them) but the allocation does not use.
_UNUSED_ROLES = {4: "vehicle consumption", 5: "storage"}


def _refuse_unused(
    fields: dict[str, Any], existing: EvseConfig | MeterConfig | None, where: str
) -> None:
    """Settings that would be stored and shown but never acted upon are refused, so that no
    one believes a battery or an attached meter is taken into account when it is not. An
    older configuration that has them still loads, and may be sent back as it is (a client
    that echoes get_dev_info); they stay without effect."""
    role = fields.get("role")
    if (
        isinstance(role, int)
        and role in _UNUSED_ROLES
        and not (isinstance(existing, MeterConfig) and existing.role == role)
    ):
        raise EditError(
            f"{where}.role: {role} ({_UNUSED_ROLES[role]}) is not supported: the load "
            "balancing does not use such meters; use 0 display, 1 consumption, 2 production "
            "or 3 grid demand"
        )
    attach = fields.get("attach")
    if isinstance(attach, str) and attach and (existing is None or existing.attach != attach):
        raise EditError(
            f"{where}.attach: {attach!r}: attached meters are not supported: the load "
            "balancing uses the currents the EVSE reports; leave attach empty"
        )


def _check_references(devices: dict[str, EvseConfig | MeterConfig]) -> None:
    for dev_id, device in devices.items():
        if device.attach and not (
            device.attach in devices and isinstance(devices[device.attach], MeterConfig)
        ):
            raise EditError(f"{dev_id}.attach: {device.attach!r} is not a configured meter")


# What a home automation may change over MQTT `devices/{id}/set` (docs/mqtt.md): how a device
# charges, never what it is or who may use it. `dev_type`, `address`, `id`, `users`,
# `failsafe_current`, `group`, meter roles and the like stay with the admin (/cnf): with
# them a `set` could point the Modbus bridge at any host, drop an EVSE's PIN requirement or
# move a device out of its fuse's group. `dev_id` is allowed (the topic's wins).
MQTT_SET_FIELDS: dict[str, frozenset[str]] = {
    "evse": frozenset(
        {
            "dev_id",
            "name",
            "desc",
            "label",
            "device_enabled",
            "min_charging_cur",
            "max_charging_cur",
            "prio",
            "pause_min_time",
            "charging_rules",
            "battery_save_threshold",
            "enable_snooze",
            "enable_wakeup",
        }
    ),
    "meter": frozenset({"dev_id", "name", "desc"}),
}


def apply_device_set(
    installation: Installation,
    dev_id: str,
    patch: Any,
    registry: DeviceTypeRegistry,
    known_user_ids: set[str],
) -> ConfigEdit:
    """A partial configuration for one existing device (the MQTT `devices/{id}/set` topic),
    limited to MQTT_SET_FIELDS; anything else refuses the whole message."""
    device = installation.devices.get(dev_id)
    if device is None:
        raise EditError(f"unknown device {dev_id!r}")
    if not isinstance(patch, dict):
        raise EditError("payload must be a JSON object")
    allowed = MQTT_SET_FIELDS["evse" if isinstance(device, EvseConfig) else "meter"]
    refused = sorted(k for k in patch if k not in allowed)
    if refused:
        raise EditError(
            f"field(s) {', '.join(refused)} may not be changed over MQTT (only "
            f"{', '.join(sorted(allowed - {'dev_id'}))}; the rest needs the admin over /cnf)"
        )
    return apply_set_params(
        installation, {"devices": [{**patch, "dev_id": dev_id}]}, registry, known_user_ids
    )


def delete_device(installation: Installation, dev_id: str) -> Installation:
    if dev_id not in installation.devices:
        raise EditError(f"unknown device {dev_id!r}")
    devices = {k: v for k, v in installation.devices.items() if k != dev_id}
    # Detach the deleted meter from EVSEs that referenced it rather than refusing.
    for key, device in devices.items():
        if device.attach == dev_id:
            devices[key] = device.model_copy(update={"attach": ""})
    return installation.model_copy(update={"devices": devices})


def apply_set_user(
    users: dict[str, User], body: Any, is_admin: bool, new_id: str
) -> tuple[dict[str, User], str]:
    """Create (admin only) or update a user; a non-admin must name an existing user id and may
    not change which EVSEs the user may use."""
    if not isinstance(body, dict):
        raise EditError("body must be a JSON user object")
    user_id = body.get("id")
    if user_id is not None and not isinstance(user_id, str):
        raise EditError("id: must be a string")
    existing = users.get(user_id) if user_id else None
    if existing is None and not is_admin:
        raise PermissionError("creating a user needs the admin password")
    if user_id is None:
        user_id = new_id
    base = existing.model_dump() if existing is not None else {}
    user = _validated(User, {**base, **body, "id": user_id}, "user")
    if not is_admin and existing is not None and user.dev_ids != existing.dev_ids:
        raise PermissionError("changing dev_ids needs the admin password")
    if not is_admin and existing is not None and user.rfids != existing.rfids:
        # A user id is no credential for PINs: whoever learnt one must not add a card.
        raise PermissionError("changing rfids needs the admin password")
    _check_rfids_unique(users, user)
    return {**users, user_id: user}, user_id


class RfidTaken(EditError):
    """An RFID/PIN that another user holds (compared as rfid_key normalises them)."""


def _check_rfids_unique(users: dict[str, User], user: User) -> None:
    own = {rfid_key(r.id): r.id for r in user.rfids}
    if len(own) != len(user.rfids):
        raise EditError("rfids: the same RFID/PIN is listed twice (letter case does not count)")
    for other in users.values():
        if other.id == user.id:
            continue
        clash = own.keys() & {rfid_key(r.id) for r in other.rfids}
        if clash:
            taken = ", ".join(sorted(own[k] for k in clash))
            raise RfidTaken(f"rfids: {taken} already belongs to another user")


__all__ = [
    "ChargingRule",
    "ConfigEdit",
    "EditError",
    "apply_device_set",
    "apply_set_params",
    "apply_set_user",
    "delete_device",
]
