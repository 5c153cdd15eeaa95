"""Pairing wallbox reports with the grid reading they are subtracted from, and the held other
load (service/core/pairing.py, allocation.hold_peaks)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from service.core.allocation import hold_peaks
from service.core.models import GroupConfig, MeterConfig, MeterState
from service.core.pairing import (
    NOTHING,
    counted_current,
    drop_after,
    grid_reading_times,
    paired_draw,
    reading_time_for,
)

SAMPLES = [(10.0, (6000, 0, 0)), (11.0, (9000, 0, 0)), (12.0, (12_000, 0, 0))]


def test_the_newest_report_at_or_before_the_reading_never_a_newer_one() -> None:
    assert paired_draw(SAMPLES, 11.5) == (9000, 0, 0)
    assert paired_draw(SAMPLES, 12.0) == (12_000, 0, 0)
    assert paired_draw(SAMPLES, 30.0) == (12_000, 0, 0)
    # Every report is newer than the reading: the EVSE counts as drawing nothing.
    assert paired_draw(SAMPLES, 9.9) == NOTHING
    assert counted_current(SAMPLES, None) is None


def test_a_ramping_evse_counts_at_its_command_on_the_phases_it_draws_on() -> None:
    assert counted_current(SAMPLES, 11.5, ramping_to=16_000) == (16_000, 0, 0)
    # At a start nothing is drawn yet: the phases it may use.
    start = [(10.0, (0, 0, 0))]
    assert counted_current(start, 10.5, ramping_to=6000, phases=7) == (6000, 6000, 6000)
    assert counted_current(start, 10.5, ramping_to=6000, phases=2) == (0, 6000, 0)
    # Already above the command (a cut one is not ramping up): its report counts.
    assert counted_current(SAMPLES, 12.5, ramping_to=10_000) == (12_000, 0, 0)


def test_an_evse_is_paired_with_its_own_groups_grid_meter_or_the_nearest_above() -> None:
    groups = [GroupConfig(id=1, max_current=20_000), GroupConfig(id=2, parent=1, max_current=1)]
    meters = [
        (MeterConfig(dev_type="m", dev_id="M1", role=3), MeterState(ts=100.0)),
        (MeterConfig(dev_type="m", dev_id="M2", role=3, group=1), MeterState(ts=90.0)),
        (MeterConfig(dev_type="m", dev_id="M3", role=3, group=1), MeterState(ts=95.0)),
        (MeterConfig(dev_type="m", dev_id="M4", role=1, group=2), MeterState(ts=50.0)),
    ]
    times = grid_reading_times(meters)
    assert times == {0: 100.0, 1: 90.0}  # several in one group: the oldest reading
    assert reading_time_for(2, groups, times) == 90.0
    assert reading_time_for(0, groups, times) == 100.0
    assert reading_time_for(7, groups, times) == 100.0  # an unknown group is the main one
    assert reading_time_for(0, groups, {}) is None


def test_the_held_load_rises_at_once_and_falls_after_the_hold() -> None:
    held, history = hold_peaks((), [5000, 0, 0], 0.0, 10.0)
    assert held == [5000, 0, 0]
    held, history = hold_peaks(history, [2000, 0, 0], 5.0, 10.0)
    assert held == [5000, 0, 0]
    held, history = hold_peaks(history, [7000, 0, 0], 6.0, 10.0)
    assert held == [7000, 0, 0]
    held, history = hold_peaks(history, [2000, 0, 0], 16.5, 10.0)
    assert held == [2000, 0, 0]


def test_figures_made_in_transition_lower_the_held_load_only_by_what_they_are_sure_of() -> None:
    _, history = hold_peaks((), [8000, 0, 0], 0.0, 10.0)
    # Ramps follow one another for 30 s: their figures are low by up to 7 A, the 8 A stays.
    for t in range(1, 30):
        held, history = hold_peaks(history, [1000, 0, 0], float(t), 10.0, (7000, 0, 0))
        assert held == [8000, 0, 0], t
    # One low by at most 2 A lets the held load fall to its figure plus 2 A at once ...
    held, history = hold_peaks(history, [1000, 0, 0], 30.0, 10.0, (2000, 0, 0))
    assert held == [3000, 0, 0]
    # ... and a plain figure takes over at once: what was carried keeps the time of the
    # 8 A figure it came from, which is older than the hold (its clock ran on).
    held, history = hold_peaks(history, [2500, 0, 0], 31.0, 10.0)
    assert held == [2500, 0, 0]
    held, _ = hold_peaks(history, [2000, 0, 0], 35.0, 10.0)
    assert held == [2500, 0, 0]


def test_a_rise_seen_during_transitions_is_kept() -> None:
    """A load rise that shows in a figure made while a car ramped stays held while ramps
    go on, though every later figure is low by the ramp (plugging seed 39: 2 A over)."""
    _, history = hold_peaks((), [600, 0, 0], 0.0, 10.0)
    held, history = hold_peaks(history, [25_000, 0, 0], 5.0, 10.0, (1000, 0, 0))
    assert held == [25_000, 0, 0]
    for t in range(6, 40):
        held, history = hold_peaks(history, [19_000, 0, 0], float(t), 10.0, (6000, 0, 0))
        assert held == [25_000, 0, 0], t


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(st.floats(0.01, 5.0), st.integers(0, 50_000), st.integers(0, 20_000)),
        min_size=1,
        max_size=60,
    )
)
def test_the_held_load_keeps_what_a_figure_in_transition_cannot_disprove(
    steps: list[tuple[float, int, int]],
) -> None:
    history: tuple[tuple[float, int, int, int, bool], ...] = ()
    now = 0.0
    seen: list[tuple[float, int]] = []
    before = 0
    for dt, load, spread in steps:
        now += dt
        held, history = hold_peaks(history, [load, 0, 0], now, 10.0, (spread, 0, 0))
        seen.append((now, load))
        assert held[0] >= load
        recent = [v for t, v in seen if now - t < 10.0]
        if spread:
            # Never below what the figure cannot disprove, never above what was held.
            assert held[0] >= min(before, load + spread)
            assert held[0] <= max([*recent, before])
        else:
            assert held[0] <= max([*recent, before])
        before = held[0]
        assert len(history) <= 33


def test_an_older_report_above_the_maximum_is_no_credit() -> None:
    lying = [(10.0, (60_000, 0, 0)), (11.0, (6000, 0, 0))]
    assert counted_current(lying, 10.5, bound=17_600) == NOTHING
    assert counted_current(lying, 11.5, bound=17_600) == (6000, 0, 0)


def test_a_newer_report_that_shows_less_is_how_low_the_paired_draw_may_be() -> None:
    # The car drew 10.4 A until its report at 76.0 s, then followed a cut to 6.8 A; its
    # next report (77.4 s) shows it. A grid reading taken at 77.0 s may have seen either.
    samples = [(75.0, (10_400, 10_400, 10_400)), (76.0, (10_400, 10_400, 10_400)),
               (77.4, (6800, 6800, 6800))]  # fmt: skip
    paired = paired_draw(samples, 77.0)
    assert paired == (10_400, 10_400, 10_400)
    assert drop_after(samples, 77.0, paired) == (3600, 3600, 3600)
    # No newer report, a newer one that shows as much or more, or one within the reports'
    # noise: nothing.
    assert drop_after(samples, 78.0, (6800, 6800, 6800)) is NOTHING
    assert drop_after(samples[:2], 75.5, (10_400,) * 3) is NOTHING
    assert drop_after([(1.0, (8000, 0, 0)), (2.0, (7800, 0, 0))], 1.5, (8000, 0, 0)) is NOTHING
    # Per phase: a 1-phase car that dropped on L1 only.
    assert drop_after([(1.0, (8000, 0, 0)), (2.0, (6000, 0, 0))], 1.5, (8000, 0, 0)) == (
        2000,
        0,
        0,
    )


def test_a_car_that_only_rises_counts_at_no_more_than_its_next_report() -> None:
    """A car whose commands since it last stood still were raises only draws no less later:
    its first report after the reading bounds what it drew then. Counted at its command, a
    rise of other load hid in its credit while it started late (plugging seed 108: 1.6 A
    over the fuse for 9 s)."""
    assert counted_current(SAMPLES, 11.5, ramping_to=16_000, only_rising=True) == (12_000, 0, 0)
    # Nothing newer than the reading yet: at its command.
    assert counted_current(SAMPLES, 12.5, ramping_to=16_000, only_rising=True) == (16_000, 0, 0)
    # Never below the report paired with the reading.
    assert counted_current(SAMPLES, 11.5, ramping_to=8000, only_rising=True) == (9000, 0, 0)
    # A car not yet started: its later report shows nothing on any phase.
    late = [(10.0, NOTHING), (11.0, NOTHING)]
    assert counted_current(late, 10.5, ramping_to=6000, only_rising=True) == NOTHING
    # One that may still follow a cut counts at its command on every phase it may use.
    assert counted_current(late, 10.5, ramping_to=6000) == (6000, 6000, 6000)
