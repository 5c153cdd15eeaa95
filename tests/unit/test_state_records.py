"""How the core takes a bridge's state message (service/state.py record_state)."""

from __future__ import annotations

import json
from pathlib import Path

from service.core.models import EvseState
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
