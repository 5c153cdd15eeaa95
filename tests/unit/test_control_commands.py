"""Which commands a run sends, and in which order (service.control_loop.commands_to_send)."""

from __future__ import annotations

import json

from hypothesis import given
from hypothesis import strategies as st

from service.control_loop import Sent, commands_to_send
from service.core.allocation import EvseResult

NOW = 1_000.0


def result(current: int, *, enabled: bool = True, paused: bool = False) -> EvseResult:
    return EvseResult(
        device_enabled=True, charging_enabled=enabled, paused=paused,
        charging_current=current, current=current, target=current, pause_time=0, phases=7,
        grid_phases=7, cur_charging_power=0, reason="ok", needs_auth=False, com_err=False,
        user_id=None, overrides=0, ov_cur=current,
    )  # fmt: skip


def sent(current: int, state_ts: float | None = 1.0, *, enabled: bool = True) -> Sent:
    return Sent(True, enabled, False, current, state_ts)


def test_first_run_sends_everything_with_state_ts() -> None:
    out = commands_to_send({"E1": result(6000)}, {"E1": 5.0}, {}, NOW, refresh=False)
    assert [o.dev_id for o in out] == ["E1"]
    assert json.loads(out[0].payload) == {
        "device_enabled": True, "charging_enabled": True, "paused": False,
        "charging_current": 6000, "ts": NOW, "state_ts": 5.0,
    }  # fmt: skip


def test_unchanged_commands_wait_for_the_cycle() -> None:
    previous = {"E1": sent(6000)}
    assert commands_to_send({"E1": result(6000)}, {"E1": 1.0}, previous, NOW, refresh=False) == []
    refreshed = commands_to_send({"E1": result(6000)}, {"E1": 1.0}, previous, NOW, refresh=True)
    assert [o.dev_id for o in refreshed] == ["E1"]


def test_a_new_state_is_answered_even_when_the_command_is_the_same() -> None:
    previous = {"E1": sent(6000)}
    out = commands_to_send({"E1": result(6000)}, {"E1": 2.0}, previous, NOW, refresh=False)
    assert [json.loads(o.payload)["state_ts"] for o in out] == [2.0]


def test_switching_off_counts_as_a_decrease() -> None:
    previous = {"E1": sent(16000), "E2": sent(6000)}
    results = {"E2": result(10000), "E1": result(16000, enabled=False)}
    out = commands_to_send(results, {"E1": 1.0, "E2": 1.0}, previous, NOW, refresh=False)
    assert [o.dev_id for o in out] == ["E1", "E2"]


@given(
    st.dictionaries(
        st.sampled_from([f"E{i}" for i in range(12)]),
        st.tuples(st.integers(0, 32000), st.integers(0, 32000), st.booleans()),
        min_size=1,
    ),
    st.booleans(),
)
def test_decreases_always_go_out_before_increases(
    cases: dict[str, tuple[int, int, bool]], refresh: bool
) -> None:
    previous = {d: sent(before) for d, (before, _, _) in cases.items()}
    results = {d: result(after, paused=paused) for d, (_, after, paused) in cases.items()}
    out = commands_to_send(results, dict.fromkeys(cases, 1.0), previous, NOW, refresh=refresh)

    def effective(dev_id: str) -> int:
        _, after, paused = cases[dev_id]
        return 0 if paused else after

    cuts = [effective(o.dev_id) < cases[o.dev_id][0] for o in out]
    # Every cut comes before every non-cut.
    assert cuts == sorted(cuts, reverse=True)
    # Nothing that changed is left out; on the cycle nothing at all is.
    changed = {d for d in cases if previous[d] != sent(cases[d][1]) or cases[d][2]}
    expected = set(cases) if refresh else changed
    assert {o.dev_id for o in out} == expected


@given(
    st.booleans(), st.booleans(), st.booleans(), st.integers(0, 80_000),
    st.one_of(st.none(), st.floats(0, 4e9, allow_nan=False)),
    st.floats(0, 4e9, allow_nan=False),
)  # fmt: skip
def test_hand_formatted_payload_is_the_json_of_the_command(
    device_enabled: bool, charging_enabled: bool, paused: bool, current: int,
    state_ts: float | None, now: float,
) -> None:  # fmt: skip
    sent = Sent(device_enabled, charging_enabled, paused, current, state_ts)
    out = commands_to_send(
        # A device is commanded off only when disable_policy 0 switched it off.
        {"E1": result(current, enabled=charging_enabled, paused=paused)._replace(
            device_enabled=device_enabled, reason="ok" if device_enabled else "disabled")},
        {"E1": state_ts}, {}, now, refresh=True,
    )  # fmt: skip
    assert out[0].sent == sent
    assert json.loads(out[0].payload) == {
        "device_enabled": device_enabled, "charging_enabled": charging_enabled,
        "paused": paused, "charging_current": current, "ts": now, "state_ts": state_ts,
    }  # fmt: skip
