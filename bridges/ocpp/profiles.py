"""The SetChargingProfile that limits one connector (docs/ocpp.md, "How chargebus limits a
charge point").

TxDefaultProfile on the connector, a fixed profile id per connector (each call replaces the
last, so the box's profile slots never fill up), one period from 0 with the limit in A per
phase (0.1 A steps, rounded down) or, for boxes that take only W, 230 V * A * phases; kind
Absolute with `startSchedule` a minute in the past (no gap at the box's clock), or Relative.
Pause = limit 0. The per-device switches choose TxProfile, W, Relative, a stack level.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Literal

from ocpp.v16 import call
from ocpp.v16.datatypes import ChargingProfile, ChargingSchedule, ChargingSchedulePeriod
from ocpp.v16.enums import (
    ChargingProfileKindType,
    ChargingProfilePurposeType,
    ChargingRateUnitType,
)

NOMINAL_VOLTAGE = 230.0
# Profile ids: a fixed one per connector, far from what other backends tend to use.
PROFILE_ID_BASE = 9100


@dataclass(frozen=True, slots=True)
class ProfileChoice:
    """How this box takes a limit (the device's switches and what the box reported)."""

    unit: Literal["A", "W"] = "A"
    stack_level: int = 0
    purpose: Literal["TxDefaultProfile", "TxProfile"] = "TxDefaultProfile"
    kind: Literal["absolute", "relative"] = "absolute"
    phases: int = 3


def profile_id(connector_id: int) -> int:
    return PROFILE_ID_BASE + connector_id


def limit_value(limit_ma: int, choice: ProfileChoice) -> float:
    """The schedule's limit: A per phase in 0.1 A steps (rounded down), or whole W."""
    if choice.unit == "W":
        return float(int(NOMINAL_VOLTAGE * limit_ma / 1000 * choice.phases))
    return (max(0, limit_ma) // 100) / 10


def set_charging_profile(
    connector_id: int,
    limit_ma: int,
    choice: ProfileChoice,
    *,
    now: datetime | None = None,
    transaction_id: int | None = None,
) -> call.SetChargingProfile:
    purpose = ChargingProfilePurposeType(choice.purpose)
    start: str | None = None
    if choice.kind == "absolute":
        moment = (now or datetime.now(UTC)) - timedelta(minutes=1)
        start = moment.strftime("%Y-%m-%dT%H:%M:%SZ")
    schedule = ChargingSchedule(
        charging_rate_unit=ChargingRateUnitType.watts
        if choice.unit == "W"
        else ChargingRateUnitType.amps,
        charging_schedule_period=[
            ChargingSchedulePeriod(
                start_period=0,
                limit=limit_value(limit_ma, choice),
                number_phases=choice.phases if choice.unit == "W" else None,
            )
        ],
        start_schedule=start,
    )
    profile = ChargingProfile(
        charging_profile_id=profile_id(connector_id),
        stack_level=choice.stack_level,
        charging_profile_purpose=purpose,
        charging_profile_kind=ChargingProfileKindType.absolute
        if choice.kind == "absolute"
        else ChargingProfileKindType.relative,
        charging_schedule=schedule,
        transaction_id=transaction_id if choice.purpose == "TxProfile" else None,
    )
    return call.SetChargingProfile(connector_id=connector_id, cs_charging_profiles=profile)
