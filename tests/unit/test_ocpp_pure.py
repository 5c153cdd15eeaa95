"""The OCPP bridge's pure parts: lenient meter values, status mapping, the profiles it sends
(checked against the official 1.6 schema), the password verifier, ids and credentials."""

from __future__ import annotations

import base64
from datetime import UTC, datetime
from typing import Any

import pytest
from ocpp.charge_point import remove_nones, serialize_as_dict, snake_to_camel_case
from ocpp.messages import Call, _validate_payload

from bridges.ocpp import meter_values, statuses
from bridges.ocpp.bridge import basic_password, charge_point_id, state_payload
from bridges.ocpp.profiles import ProfileChoice, limit_value, set_charging_profile
from bridges.ocpp.station import Connector, Station
from service.core import verifier
from service.core.models import EvseConfig

NOW = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)


def sample(value: Any, measurand: str | None = None, **fields: Any) -> dict[str, Any]:
    return {"value": value, **({"measurand": measurand} if measurand else {}), **fields}


def test_meter_values_leniently() -> None:
    readings = meter_values.parse(
        [{"timestamp": "1970-01-01T00:00:05Z", "sampled_value": [
            sample("16.1", "Current.Import", phase="L1-N", unit="A"),
            sample(15.9, "Current.Import", phase="L2"),
            sample("3.0", "Current.Import", phase="N"),  # the neutral: not a phase
            sample("400", "Voltage", phase="L1-L2"),  # line to line: not a phase voltage
            sample("231", "Voltage", phase="L1-N"),
            sample("3.7", "Power.Active.Import", phase="L1", unit="kW"),
            sample("3.6", "Power.Active.Import", phase="L2", unit="kW"),
            sample("12.5", unit="kWh"),  # no measurand: the energy register
            sample("50", "Frequency", unit="Hz"),
            sample("oops", "Current.Import", phase="L3"),
            sample("10", "Current.Offered", unit="A"),
        ]}],
        transaction_id="7",
    )  # fmt: skip
    assert readings.current_a == [16.1, 15.9, None]
    assert readings.voltage_v == [231.0, None, None]
    assert readings.power_w == pytest.approx(7300.0)
    assert readings.energy_wh == pytest.approx(12500.0)
    assert readings.offered_a == 10.0
    assert readings.transaction_id is None  # a string is no transaction id


def test_phaseless_current_and_newest_sample_wins() -> None:
    readings = meter_values.parse(
        [{"timestamp": "2026-01-01T00:00:10Z", "sampled_value": [sample("8", "Current.Import")]},
         {"timestamp": "2026-01-01T00:00:05Z", "sampled_value": [sample("2", "Current.Import")]}],
        transaction_id=5,
    )  # fmt: skip
    assert readings.current_a[0] == 8.0 and readings.phaseless_current
    assert readings.transaction_id == 5
    for junk in (None, "x", [1, "a", {"sampled_value": "no"}], [{"sampled_value": [None]}]):
        assert not meter_values.parse(junk).has_current


@pytest.mark.parametrize(
    ("status", "error", "state"),
    [("Available", "NoError", 1), ("Preparing", "NoError", 2), ("SuspendedEV", "", 2),
     ("Charging", "NoError", 3), ("Faulted", "NoError", 5), ("Charging", "GroundFailure", 5),
     ("Finishing", "NoError", 2), ("Whatever", "NoError", 1)],
)  # fmt: skip
def test_status_mapping(status: str, error: str, state: int) -> None:
    assert statuses.cp_state(status, error) == state


CHOICES = [
    ProfileChoice(),
    ProfileChoice(unit="W", phases=1),
    ProfileChoice(stack_level=8, kind="relative"),
    ProfileChoice(purpose="TxProfile"),
]


@pytest.mark.parametrize("choice", CHOICES)
@pytest.mark.parametrize("limit_ma", [0, 6000, 16_149, 80_000])
def test_profiles_follow_the_official_schema(choice: ProfileChoice, limit_ma: int) -> None:
    payload = set_charging_profile(2, limit_ma, choice, now=NOW, transaction_id=42)
    body = remove_nones(snake_to_camel_case(serialize_as_dict(payload)))
    call = Call("1", "SetChargingProfile", body)
    _validate_payload(call, "1.6")  # raises on any deviation
    profile = body["csChargingProfiles"]
    assert profile["chargingProfileId"] == 9102
    assert profile["chargingProfilePurpose"] == choice.purpose
    period = profile["chargingSchedule"]["chargingSchedulePeriod"][0]
    assert period["limit"] == limit_value(limit_ma, choice)
    if choice.unit == "A":
        assert period["limit"] == (limit_ma // 100) / 10 and "numberPhases" not in period
    else:
        assert period["limit"] == int(230 * limit_ma / 1000) and period["numberPhases"] == 1
    assert ("startSchedule" in profile["chargingSchedule"]) == (choice.kind == "absolute")
    assert ("transactionId" in profile) == (choice.purpose == "TxProfile")


def test_verifier_takes_raw_or_hex_and_nothing_else() -> None:
    key = "000102030405060708090a0b0c0d0e0f10111213"
    made = verifier.make_verifier(key, "E1\0BOX")
    assert key not in made and made == verifier.make_verifier(key, "E1\0BOX")
    assert made != verifier.make_verifier(key, "E2\0BOX")  # salted per device
    assert verifier.check(made, key.encode())
    assert verifier.check(made, bytes.fromhex(key))
    assert verifier.check(made, key.upper().encode())  # hex digits in either case
    assert not verifier.check(made, b"000102")
    assert not verifier.check(made, b"")
    text = verifier.make_verifier("s3cret-pass", "E2\0X")
    assert verifier.check(text, b"s3cret-pass") and not verifier.check(text, b"s3cret-pas")
    assert not verifier.check("plain", b"plain") and not verifier.check("scrypt$zz$yy", b"x")


def test_ids_and_credentials() -> None:
    assert charge_point_id("/steve/websocket/CentralSystemService/WB-1") == "WB-1"
    assert charge_point_id("/WB 1/") == "WB 1"
    token = base64.b64encode(b"ID:WITH:COLONS:pa:ss").decode()
    assert basic_password(f"Basic {token}", "ID:WITH:COLONS") == b"pa:ss"
    assert basic_password(f"Basic {token}", "OTHER") is None
    assert basic_password("Basic !!!", "ID") is None
    assert basic_password(None, "ID") is None


def test_state_of_a_box_that_is_not_connected() -> None:
    station = Station("BOX")
    connector = Connector("E1", 1, EvseConfig(dev_type="evse_ocpp", dev_id="E1"))
    station.connectors[1] = connector
    state = state_payload(station, connector, failsafe=False)
    assert state["state"] == 6 and state["com_err"] is True
    assert "BOX" in state["last_error"] and "current" not in state
