"""Configuration and state models, with the /cnf API's field names and units.

Currents in mA, power in W, energy in Wh, voltage in V, cycle time in ms, pauses in s.
"""

from __future__ import annotations

import secrets
from typing import Annotated, Any, Literal

from pydantic import (
    AliasChoices,
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    field_validator,
    model_validator,
)

MilliAmps = Annotated[int, Field(ge=0, le=2_000_000)]
# Upper bound for a single EVSE's current: 80 A covers every AC wallbox standard.
_MAX_EVSE_MILLIAMPS = 80_000
EvseMilliAmps = Annotated[int, Field(ge=0, le=_MAX_EVSE_MILLIAMPS)]
PhaseMask = Annotated[int, Field(ge=0, le=7)]


class StrictModel(BaseModel):
    """Rejects unknown fields and wrong JSON types instead of coercing them silently."""

    # allow_inf_nan=False: json.loads accepts NaN/Infinity, but json.dumps would write them
    # back as tokens our own loader then refuses, so a saved file would no longer load.
    model_config = ConfigDict(
        extra="forbid", strict=True, validate_assignment=True, allow_inf_nan=False
    )


class ChargingRule(StrictModel):
    days: int = Field(default=127, ge=0, le=127, description="bit0 Monday … bit6 Sunday")
    mode: int = Field(
        default=0,
        ge=0,
        le=5,
        description="0 absolute, 1 relative, 2 solar, 3 relative solar, 4 solar minus value, "
        "5 solar surplus",
    )
    current: int = Field(default=0, ge=-2_000_000, le=2_000_000, description="mA")
    enabled: bool = True
    udur: int = Field(default=0, ge=0, le=86_400, description="undercut duration, s")
    time: int = Field(default=0, ge=0, le=1439, description="minutes after midnight")
    dur: int = Field(default=1440, ge=0, le=10_080, description="minutes")
    expr: str = Field(default="", max_length=1000)
    input: str = Field(default="", max_length=200)
    price_level: int = Field(default=0, ge=0, le=100)
    solar: int = Field(default=0, ge=0, le=2_000_000, description="solar current, mA")


class Params(StrictModel):
    """The settable Charging Manager parameters (the r/o ones are derived, see dev_info)."""

    title: str = Field(default="chargebus", max_length=200)
    desc: str = Field(default="", max_length=1000)
    max_total_current: MilliAmps = Field(
        default=32_000, validation_alias=AliasChoices("max_total_current", "max_total_power")
    )
    reserve_current: MilliAmps = Field(
        default=0, validation_alias=AliasChoices("reserve_current", "power_reserve")
    )
    overdraft_cur: MilliAmps = Field(
        default=0, validation_alias=AliasChoices("overdraft_cur", "overdraft")
    )
    max_total_evse_current: MilliAmps = Field(
        default=0,
        validation_alias=AliasChoices("max_total_evse_current", "max_total_evse_power"),
        description="0 = no separate EVSE limit",
    )
    lb_enabled: bool = True
    disable_policy: Literal[-1, 0, 1] = 1
    cycle_time: int = Field(default=3000, ge=100, le=60_000, description="ms")
    max_imbalance: MilliAmps = Field(
        default=0, description="largest allowed difference between phases, 0 = no limit"
    )
    min_pause_time: int = Field(default=300, ge=0, le=86_400, description="s, for new EVSEs")
    stale_time: int = Field(
        default=0, ge=0, le=3_600_000, description="ms; older states are a com error, 0 = 3 cycles"
    )
    grid_fail_current: MilliAmps = Field(
        default=0,
        description="per-phase EVSE total while a group's grid meter has no fresh reading; "
        "0 = minimum currents only, beside the other load of its last reading (none before "
        "the first reading)",
    )
    # Control in the loop (chargebus's own; see docs/load-balancing.md, "Control in the loop").
    # The defaults suit wallboxes and meters that report about once a second and cars that
    # follow a new current within the ~5 s IEC 61851 allows.
    follow_time: int = Field(
        default=6, ge=1, le=120, description="s a car may take to follow a lower current"
    )
    settle_time: int = Field(
        default=3, ge=0, le=600, description="s headroom must hold before an increase"
    )
    ramp_step: MilliAmps = Field(
        default=6000, description="largest increase of one command, mA; 0 = no limit"
    )
    deadband: MilliAmps = Field(
        default=300, le=10_000, description="smaller changes are not sent unless a limit needs them"
    )
    resume_margin: MilliAmps = Field(
        default=1000, le=80_000, description="a paused EVSE resumes when minimum + this fits, mA"
    )
    resume_time: int = Field(
        default=0, ge=0, le=3600, description="s more a stopped car waits before it resumes"
    )
    load_hold_time: int = Field(
        default=10, ge=0, le=600, description="s the highest recent other load is held"
    )
    # Charging Manager variables (set_cm_vars): a number, or an expression for rules.
    cm_vars: dict[str, float | Annotated[str, Field(max_length=1000)]] = Field(
        default_factory=dict, max_length=1000
    )

    @field_validator("cm_vars")
    @classmethod
    def _var_names(cls, value: dict[str, float | str]) -> dict[str, float | str]:
        for name in value:
            if not name.isidentifier() or len(name) > 64:
                raise ValueError(f"variable name {name!r} is not an identifier")
        return value


class RfidEntry(StrictModel):
    id: str = Field(min_length=1, max_length=64, pattern=r"^[0-9A-Za-z:_-]+$")
    name: str = Field(default="", max_length=200)
    ac_auth: bool = True
    ac_ovch: bool = False
    used_phases: PhaseMask = 0


class User(StrictModel):
    id: str = Field(min_length=1, max_length=32, pattern=r"^[0-9A-Za-z_-]+$")
    name: str = Field(default="", max_length=200)
    display: bool = True
    dev_ids: list[str] = Field(default_factory=list, max_length=1000)
    rfids: list[RfidEntry] = Field(default_factory=list, max_length=100)
    charging_rules: list[ChargingRule] = Field(default_factory=list, max_length=100)


GenericQuantity = Literal[
    "power_w", "import_wh", "export_wh", "current_l1", "current_l2", "current_l3",
    "voltage_l1", "voltage_l2", "voltage_l3",
]  # fmt: skip


class ModbusRegister(StrictModel):
    """Where a generic Modbus meter keeps one quantity; value * scale is in the state's unit."""

    address: int = Field(ge=0, le=65_535)
    kind: Literal["u16", "i16", "u32", "i32", "u64", "i64", "f32"] = "u16"
    scale: float = 1.0
    function: Literal["holding", "input"] = "holding"


DeviceId = Annotated[str, Field(min_length=2, max_length=32, pattern=r"^[EM][0-9A-Za-z_-]+$")]


class DeviceConfigBase(StrictModel):
    dev_type: str = Field(min_length=1, max_length=64)
    dev_id: DeviceId
    device_enabled: bool = True
    name: str = Field(default="", max_length=200)
    address: str = Field(default="", max_length=500)
    id: int = Field(default=1, ge=0, le=255, description="Modbus id")
    number: int = Field(default=1, ge=0, le=100_000)
    desc: str = Field(default="", max_length=1000)
    used_phases: PhaseMask = Field(default=0, description="0 = determine")
    group: int = Field(default=0, ge=0, le=100_000, description="0 = main group")
    attach: str = Field(default="", max_length=32)
    phase_rotation: int = Field(default=0, ge=0, le=5)
    # chargebus's own (the product has no such fields): how often a Modbus bridge polls the
    # device, and the register map of a generic Modbus meter.
    poll_interval: int = Field(default=1000, ge=100, le=3_600_000, description="ms")
    modbus_registers: dict[GenericQuantity, ModbusRegister] = Field(default_factory=dict)

    @field_validator("device_enabled", mode="before")
    @classmethod
    def _enabled_from_int(cls, value: Any) -> Any:
        # The product answers device_enabled as 1/0; clients send either form back.
        if isinstance(value, int) and not isinstance(value, bool) and value in (0, 1):
            return bool(value)
        return value


class EvseConfig(DeviceConfigBase):
    label: str = Field(default="", max_length=200)
    min_charging_cur: EvseMilliAmps = 6000
    max_charging_cur: EvseMilliAmps | str = Field(default=16_000, description="mA or expression")
    prio: int = Field(default=1, ge=0, le=1000)
    pause_min_time: int = Field(default=300, ge=0, le=86_400, description="s")
    charging_rules: list[ChargingRule] = Field(default_factory=list, max_length=100)
    battery_save_threshold: EvseMilliAmps = 0
    enable_snooze: bool = True
    enable_wakeup: bool = True
    fixed_rfid: str = Field(default="", max_length=64)
    ocpp_gateway_client_id: str = Field(default="", max_length=100)
    users: list[str] = Field(default_factory=list, max_length=1000)
    failsafe_current: EvseMilliAmps = Field(
        default=6000, description="what a bridge applies on its own when the core is gone"
    )
    # OCPP 1.6 charge points (dev_type evse_ocpp: address = charge point id, id = connector):
    # chargebus's own switches for boxes with quirks (docs/ocpp.md).
    ocpp_rate_unit: Literal["auto", "A", "W"] = Field(
        default="auto", description="limit in A per phase or W total; auto: as the box says"
    )
    ocpp_stack_level: int = Field(
        default=-1, ge=-1, le=100, description="profile stack level; -1 = the box's maximum"
    )
    ocpp_profile_kind: Literal["absolute", "relative"] = "absolute"
    ocpp_profile_purpose: Literal["TxDefaultProfile", "TxProfile"] = "TxDefaultProfile"
    ocpp_remote_start: bool = Field(
        default=False, description="start sessions with RemoteStartTransaction (idTag fixed_rfid)"
    )
    ocpp_meter_interval: int = Field(default=10, ge=1, le=3600, description="s")
    ocpp_password: str = Field(
        default="", max_length=64, description="basic auth of the charge point (profile 1)"
    )

    @field_validator("max_charging_cur")
    @classmethod
    def _expr_not_empty(cls, value: int | str) -> int | str:
        if isinstance(value, str):
            if not value.strip() or len(value) > 1000:
                raise ValueError("expression must be non-empty and at most 1000 characters")
            if value.strip().isdigit():
                # Turned into a number after the field's range check: check it here.
                number = int(value.strip())
                if number > _MAX_EVSE_MILLIAMPS:
                    raise ValueError(f"must be at most {_MAX_EVSE_MILLIAMPS} mA")
                return number
        return value


class MeterConfig(DeviceConfigBase):
    is_va: bool = False
    invert: bool = False
    role: int = Field(
        default=0,
        ge=0,
        le=5,
        description="0 display, 1 consumption, 2 production, 3 grid demand, "
        "4 vehicle consumption, 5 storage",
    )


def _device_kind(value: Any) -> str | None:
    dev_id = value.get("dev_id") if isinstance(value, dict) else getattr(value, "dev_id", None)
    if isinstance(dev_id, str) and dev_id[:1] in ("E", "M"):
        return "evse" if dev_id.startswith("E") else "meter"
    return None


# EVSE ids begin with E and meter ids with M (the API's rule), so the id tells the kind.
DeviceConfig = Annotated[
    Annotated[EvseConfig, Tag("evse")] | Annotated[MeterConfig, Tag("meter")],
    Discriminator(_device_kind),
]


class GroupConfig(StrictModel):
    """A load-balancing group: a fuse or sub-distribution with its own per-phase limit.

    Groups form a tree under the main group 0 (whose limit is params.max_total_current);
    devices name their group in `group`; every level's limit holds at once.
    """

    id: int = Field(ge=1, le=100_000)
    name: str = Field(default="", max_length=200)
    parent: int = Field(default=0, ge=0, le=100_000, description="0 = the main group")
    max_current: MilliAmps = Field(description="per-phase limit of this group, mA")


def new_serial_number() -> str:
    return f"CB-{secrets.token_hex(4).upper()}"


class Installation(StrictModel):
    """Everything persisted as configuration: params and devices, in device order."""

    # Clients build their entity ids from params.vsn.serialno: it must never change.
    serialno: str = Field(default_factory=new_serial_number, max_length=64)
    params: Params = Field(default_factory=Params)
    groups: list[GroupConfig] = Field(default_factory=list, max_length=10_000)
    devices: dict[str, DeviceConfig] = Field(default_factory=dict)
    license_accepted: bool = False
    allow_usage_stats: bool = False

    @model_validator(mode="after")
    def _keys_are_dev_ids(self) -> Installation:
        # Edits address a device by its key and answers show its dev_id: they must agree.
        wrong = [k for k, d in self.devices.items() if k != d.dev_id]
        if wrong:
            raise ValueError(f"device key(s) differ from their dev_id: {', '.join(wrong)}")
        return self


# Bounds of the measurements a bridge may report. Beyond them a value is a fault, not a
# reading, and sums of many (a run adds up every EVSE's power) must stay finite: two powers
# of 1e308 W made every run fail with OverflowError. An EVSE: 80 A on three phases at up to
# 1000 V is 240 kW, so 1 MW leaves room for DC chargers; a meter: 2000 A on three phases
# (the current fields' bound) at 1000 V is 6 MW, so 100 MW. Energy: 1 TWh; time: year 5138.
MAX_EVSE_POWER_W = 1_000_000.0
MAX_METER_POWER_W = 100_000_000.0
MAX_ENERGY_WH = 1e12
MAX_TS = 1e11


class EvseState(BaseModel):
    """Measurements an EVSE bridge publishes on devices/{id}/state."""

    model_config = ConfigDict(extra="ignore", allow_inf_nan=False)

    ts: float = Field(ge=0, le=MAX_TS, description="unix seconds when measured")
    state: int = Field(default=1, ge=1, le=6)
    current: list[Annotated[int, Field(ge=-2_000_000, le=2_000_000)]] = Field(
        default_factory=lambda: [0, 0, 0], min_length=3, max_length=3
    )
    voltage: list[Annotated[float, Field(ge=0, le=1000)]] = Field(
        default_factory=lambda: [230.0, 230.0, 230.0], min_length=3, max_length=3
    )
    power_w: float | None = Field(default=None, ge=-MAX_EVSE_POWER_W, le=MAX_EVSE_POWER_W)
    total_energy: float | None = Field(default=None, ge=0, le=MAX_ENERGY_WH)
    max_charging_current: int | None = Field(default=None, ge=0, le=2_000_000)
    model: str = Field(default="", max_length=200)
    rfid: str = Field(default="", max_length=64)
    com_err: bool = False
    last_error: str = Field(default="", max_length=500)
    # The bridge applies its fail-safe current: it heard no command, or the core is offline.
    failsafe: bool = False
    # Read back from the wallbox (Modbus bridges): what it applies now.
    applied_current: int | None = Field(default=None, ge=0, le=2_000_000)
    applied_enabled: bool | None = None
    # The OCPP bridge's view of the charge point's connection (get_dev_info's ocpp.status).
    ocpp_status: str = Field(default="", max_length=100)


class MeterState(BaseModel):
    """Measurements a meter bridge publishes on devices/{id}/state."""

    model_config = ConfigDict(extra="ignore", allow_inf_nan=False)

    ts: float = Field(ge=0, le=MAX_TS)
    import_wh: float | None = Field(
        default=None,
        ge=0,
        le=MAX_ENERGY_WH,
        validation_alias=AliasChoices("import_wh", "import_vah", "import"),
    )
    export_wh: float | None = Field(
        default=None, ge=0, le=MAX_ENERGY_WH, validation_alias=AliasChoices("export_wh", "export")
    )
    power_w: float | None = Field(default=None, ge=-MAX_METER_POWER_W, le=MAX_METER_POWER_W)
    current: list[Annotated[int, Field(ge=-2_000_000, le=2_000_000)]] = Field(
        default_factory=lambda: [0, 0, 0], min_length=3, max_length=3
    )
    voltage: list[Annotated[float, Field(ge=0, le=1000)]] = Field(
        default_factory=lambda: [230.0, 230.0, 230.0], min_length=3, max_length=3
    )
    is_va: bool | None = None
    model: str = Field(default="", max_length=200)
    com_err: bool = False
    last_error: str = Field(default="", max_length=500)


class EvseCommand(BaseModel):
    """What the core tells an EVSE; also the set_ajax_evse answer."""

    device_enabled: bool
    charging_enabled: bool
    paused: bool
    charging_current: int = Field(ge=0)
    ts: float = 0.0
