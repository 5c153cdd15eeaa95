"""Sharing the solar pools among the EVSEs charging from them (service/core/solar_share.py)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from service.core.solar_share import SolarCandidate, split_pool


def test_one_evse_alone_gets_the_whole_pool() -> None:
    assert split_pool([SolarCandidate("E1", 3, 6000)], 21_000) == {"E1": 7000}
    assert split_pool([SolarCandidate("E1", 1, 6000)], 3000) == {"E1": 3000}


def test_two_surplus_wallboxes_share_twenty_amps() -> None:
    pair = [SolarCandidate("E1", 1, 6000), SolarCandidate("E2", 1, 6000)]
    assert split_pool(pair, 20_000) == {"E1": 10_000, "E2": 10_000}
    # Not enough for both minimums: the first keeps the pool.
    assert split_pool(pair, 11_000) == {"E1": 11_000, "E2": 0}


def test_a_three_phase_car_that_does_not_fit_leaves_room_for_a_one_phase_one() -> None:
    cands = [SolarCandidate("E1", 3, 6000), SolarCandidate("E2", 1, 6000)]
    assert split_pool(cands, 10_000) == {"E1": 0, "E2": 10_000}


def test_one_that_does_not_charge_yet_needs_its_margin_to_be_admitted() -> None:
    """12.5 A would give both 6.25 A, above both minimums; the second does not charge yet
    and needs 7 A (its minimum and a 1 A margin), so the first keeps the pool. Once it
    charges (margin 0), it keeps its share down to its minimum: a hysteresis that the
    meter's noise around two minimums cannot flip."""
    charging = SolarCandidate("E1", 1, 6000)
    waiting = SolarCandidate("E2", 1, 6000, margin=1000)
    assert split_pool([charging, waiting], 12_500) == {"E1": 12_500, "E2": 0}
    assert split_pool([charging, waiting], 14_000) == {"E1": 7000, "E2": 7000}
    admitted = waiting._replace(margin=0)
    assert split_pool([charging, admitted], 12_500) == {"E1": 6250, "E2": 6250}


@given(
    st.lists(
        st.tuples(
            st.sampled_from([1, 2, 3]), st.integers(1, 16_000), st.sampled_from([0, 0, 1000])
        ),
        min_size=1,
        max_size=8,
    ),
    st.integers(-5000, 200_000),
)
def test_never_more_than_the_pool_and_every_admitted_one_gets_its_minimum(
    spec: list[tuple[int, int, int]], pool: int
) -> None:
    cands = [SolarCandidate(f"E{i}", p, m, margin) for i, (p, m, margin) in enumerate(spec)]
    shares = split_pool(cands, pool)
    assert set(shares) == {c.dev_id for c in cands}
    assert sum(shares[c.dev_id] * c.phases for c in cands) <= max(0, pool)
    if len(cands) > 1:
        for c in cands:
            assert shares[c.dev_id] == 0 or shares[c.dev_id] >= c.minimum
        # Whoever is admitted gets the same current per phase.
        assert len({v for v in shares.values() if v}) <= 1
