"""The control lane's CopyFilter: each reading is handled once, whichever connection brings
it first (service/control_lane.py)."""

from __future__ import annotations

from service.control_lane import LANE, MAIN, TWIN_WINDOW_S, CopyFilter


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def test_the_twin_from_the_other_connection_is_dropped() -> None:
    copies = CopyFilter(Clock())
    assert copies.first(LANE, "M1", b"a")
    assert not copies.first(MAIN, "M1", b"a")


def test_the_main_copy_first_wins_too() -> None:
    copies = CopyFilter(Clock())
    assert copies.first(MAIN, "M1", b"a")
    assert not copies.first(LANE, "M1", b"a")


def test_a_late_twin_behind_newer_readings_is_still_recognised() -> None:
    copies = CopyFilter(Clock())
    for payload in (b"1", b"2", b"3"):
        assert copies.first(LANE, "M1", payload)
    assert [copies.first(MAIN, "M1", p) for p in (b"1", b"2", b"3")] == [False, False, False]


def test_the_same_bytes_sent_twice_count_twice() -> None:
    """A meter without ts may send identical readings: each publish pairs with one twin."""
    copies = CopyFilter(Clock())
    results = [
        copies.first(LANE, "M1", b"same"),
        copies.first(LANE, "M1", b"same"),
        copies.first(MAIN, "M1", b"same"),
        copies.first(MAIN, "M1", b"same"),
    ]
    assert results == [True, True, False, False]


def test_only_one_connection_means_no_twins() -> None:
    copies = CopyFilter(Clock())
    assert all(copies.first(MAIN, "M1", b"same") for _ in range(5))


def test_twins_are_per_device_and_expire() -> None:
    clock = Clock()
    copies = CopyFilter(clock)
    assert copies.first(LANE, "M1", b"a")
    assert copies.first(MAIN, "M2", b"a")
    clock.t += TWIN_WINDOW_S + 0.1
    assert copies.first(MAIN, "M1", b"a")


def test_a_forgotten_device_starts_afresh() -> None:
    copies = CopyFilter(Clock())
    assert copies.first(LANE, "M1", b"a")
    copies.forget("M1")
    assert copies.first(MAIN, "M1", b"a")
