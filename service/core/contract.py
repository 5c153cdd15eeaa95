"""The MQTT contract's payloads (docs/mqtt.md) as typed values, one set for the core and
every bridge, so that no part parses a topic by hand with defaults of its own.

| topic | model | who writes, who reads |
|---|---|---|
| `{base}/status`, `{base}/bridges/{name}/status` | `ONLINE` / `OFFLINE` | core, bridge → all |
| `{base}/params` | `ParamsView` (what bridges need of `Params`) | core → bridges |
| `{base}/devices/{id}/config` | `DeviceConfig` (`EvseConfig` / `MeterConfig`) | core → bridges |
| `{base}/devices/{id}/command` | `Command` | core → EVSE bridges |
| `{base}/devices/{id}/state` | `EvseState` / `MeterState` | bridges → core |

The configuration and state models live in models.py (the core validates with them); this
module adds what a reader of the bus needs around them. Pure: no I/O.
"""

from __future__ import annotations

import json
from typing import Any, Protocol

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from service.core.allocation.model import stale_after_s
from service.core.models import (
    DeviceConfig,
    EvseCommand,
    EvseConfig,
    EvseState,
    MeterConfig,
    MeterState,
    Params,
)

__all__ = [
    "OFFLINE",
    "ONLINE",
    "Command",
    "ContractError",
    "DeviceConfig",
    "EvseConfig",
    "EvseState",
    "MeterConfig",
    "MeterState",
    "ParamsView",
    "encode",
    "is_online",
    "parse_command",
    "parse_device_config",
    "parse_params",
]

ONLINE = b"online"
OFFLINE = b"offline"


class ContractError(ValueError):
    """A payload that does not follow the contract; the message says what is wrong."""


def is_online(payload: bytes) -> bool:
    """A `status` payload: anything but `online` (an empty retained message, `offline`, a
    last will) counts as offline."""
    return payload == ONLINE


class ControlFields(Protocol):
    """The control fields of a command, as the core and every bridge read them."""

    @property
    def device_enabled(self) -> bool: ...
    @property
    def charging_enabled(self) -> bool: ...
    @property
    def paused(self) -> bool: ...
    @property
    def charging_current(self) -> int: ...


def charging_allowed(c: ControlFields) -> bool:
    """The wallbox may charge: enabled, allowed, not paused, and more than 0 mA."""
    return c.device_enabled and c.charging_enabled and not c.paused and c.charging_current > 0


def effective_current(c: ControlFields) -> int:
    """The mA the wallbox may draw: the current, or 0 when it may not charge."""
    return c.charging_current if charging_allowed(c) else 0


class Command(EvseCommand):
    """`devices/{id}/command`: what the core tells an EVSE."""

    # The `ts` of the EVSE state the run used, or None when it had none.
    state_ts: float | None = None

    @property
    def charging_allowed(self) -> bool:
        """The wallbox may charge: enabled, allowed, not paused, and more than 0 mA."""
        return charging_allowed(self)

    @property
    def effective_current(self) -> int:
        """The mA the wallbox may draw: the command's current, or 0 when it may not charge."""
        return effective_current(self)


def parse_command(payload: bytes) -> Command | None:
    """A command message; None for one that is not a command (malformed, fields missing,
    a negative current)."""
    try:
        return Command.model_validate_json(payload)
    except ValidationError:
        return None


class ParamsView(BaseModel):
    """The part of `{base}/params` a bridge needs: when states and commands go stale."""

    model_config = ConfigDict(extra="ignore", allow_inf_nan=False)

    cycle_time: int = Field(default=Params.model_fields["cycle_time"].default, ge=100, le=60_000)
    stale_time: int = Field(default=0, ge=0, le=3_600_000)

    @property
    def stale_after_s(self) -> float:
        """How old the last command may be before a bridge applies its fail-safe: the same
        age after which the core counts a state as stale (`stale_time`, or 3 cycles)."""
        return stale_after_s(self)


def parse_params(payload: bytes) -> ParamsView | None:
    try:
        return ParamsView.model_validate_json(payload)
    except ValidationError:
        return None


_DEVICE_CONFIG: TypeAdapter[EvseConfig | MeterConfig] = TypeAdapter(DeviceConfig)


def parse_device_config(payload: bytes) -> EvseConfig | MeterConfig | None:
    """A retained `devices/{id}/config`; None for an empty one (the device was deleted).

    Fields this version does not know are left out, so that a bridge keeps working with a
    newer core; a known field with a wrong value is a ContractError."""
    if not payload:
        return None
    try:
        data = json.loads(payload)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ContractError(f"not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ContractError("not a JSON object")
    dev_id = data.get("dev_id")
    if not isinstance(dev_id, str) or dev_id[:1] not in ("E", "M"):
        raise ContractError(f"dev_id must be a string starting with E or M, got {dev_id!r}")
    model = EvseConfig if dev_id.startswith("E") else MeterConfig
    known = {k: v for k, v in data.items() if k in model.model_fields}
    try:
        return _DEVICE_CONFIG.validate_json(json.dumps(known))
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc'][1:]) or 'config'}: {err['msg']}"
            for err in exc.errors()
        )
        raise ContractError(problems) from None


def encode(value: BaseModel | dict[str, Any]) -> bytes:
    """Compact JSON, as every chargebus part publishes."""
    if isinstance(value, BaseModel):
        return value.model_dump_json().encode()
    return json.dumps(value, separators=(",", ":")).encode()
