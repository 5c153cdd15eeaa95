"""How the core takes a bridge's state message (service/state.py record_state)."""

from __future__ import annotations

import json
from pathlib import Path

from service.core.meter_power import power_only
from service.core.models import EvseState, MeterState
from tests.unit.test_metrics import NOW, make_state


def test_an_error_state_without_a_state_is_offline_not_waiting(tmp_path: Path) -> None:
    """A bridge that cannot reach its wallbox sends com_err without `state`: that is 6
    (offline), not the model's default 1, which ends the session (issue 14 item 5)."""
    state = make_state(tmp_path)
    state.record_state("E1", json.dumps({"ts": NOW, "state": 3}).encode())
    recorded = state.record_state(
        "E1", json.dumps({"ts": NOW + 1, "com_err": True, "last_error": "timeout"}).encode()
    )
    assert isinstance(recorded, EvseState) and recorded.state == 6
    assert state.device_info("E1")["state"] == 6
    # A bridge that says what it knows is taken at its word.
    said = state.record_state(
        "E1", json.dumps({"ts": NOW + 2, "com_err": True, "state": 2}).encode()
    )
    assert isinstance(said, EvseState) and said.state == 2


def test_a_push_keeps_what_it_leaves_out(tmp_path: Path) -> None:
    """HTTP-input devices (evse_ajax, meter_ajax): a field not sent keeps its last value,
    state included (issue 14 item 2); a card shown is not carried into the next push."""
    state = make_state(tmp_path)
    state.record_state(
        "E1",
        json.dumps(
            {"ts": NOW, "state": 3, "current": [16_000] * 3, "model": "Box", "rfid": "4711",
             "total_energy": 1200.0}
        ).encode(),
    )  # fmt: skip
    later = state.record_state("E1", json.dumps({"ts": NOW + 1, "current": [0, 0, 0]}).encode())
    assert isinstance(later, EvseState)
    assert (later.state, later.current, later.model, later.total_energy) == (3, [0, 0, 0], "Box",
                                                                              1200.0)  # fmt: skip
    assert later.rfid == "" and later.ts == NOW + 1
    state.record_state(
        "M1",
        json.dumps(
            {"ts": NOW, "model": "P1", "import_wh": 12345, "export_wh": 23456,
             "current": [10_001, 10_002, 10_003], "voltage": [231, 232, 233]}
        ).encode(),
    )  # fmt: skip
    meter = state.record_state("M1", json.dumps({"ts": NOW + 1, "power_w": 100}).encode())
    assert isinstance(meter, MeterState)
    assert (meter.model, meter.import_wh, meter.export_wh) == ("P1", 12345, 23456)
    assert meter.current == [10_001, 10_002, 10_003] and meter.power_w == 100


def test_a_power_only_push_stays_power_only_for_the_load_balancing(tmp_path: Path) -> None:
    """Carried currents are shown, but a push of power without currents is balanced as a
    power-only reading (its power on every phase), never on an earlier push's currents."""
    state = make_state(tmp_path)
    for n in range(3):
        meter = state.record_state("M1", json.dumps({"ts": NOW + n, "power_w": 9000}).encode())
        assert isinstance(meter, MeterState) and power_only(meter), n
    state.record_state("M1", json.dumps({"ts": NOW + 5, "current": [1000, 1000, 1000],
                                         "power_w": 690}).encode())  # fmt: skip
    meter = state.record_state("M1", json.dumps({"ts": NOW + 6, "power_w": 20_000}).encode())
    assert isinstance(meter, MeterState) and power_only(meter)
    assert meter.current == [1000, 1000, 1000]  # shown as the last value
    inp = state.allocation_input(NOW + 6)
    shown = inp.meters["M1"].state
    assert shown is not None and power_only(shown)
    # The next push with currents is a per-phase reading again.
    meter = state.record_state("M1", json.dumps({"ts": NOW + 7, "current": [2000, 0, 0]}).encode())
    assert isinstance(meter, MeterState) and not power_only(meter)
