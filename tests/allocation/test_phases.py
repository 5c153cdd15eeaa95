"""Phase rotation, masks and phase learning."""

from __future__ import annotations

import pytest

from service.core.phases import (
    ALL_PHASES,
    GRID_MASK,
    PHASE_COUNT,
    PHASES_OF,
    assumed_mask,
    measured_mask,
    to_grid,
)

# rotation → the grid phase names of the EVSE's L1, L2, L3, as the docstring's table says.
TABLE = {
    0: ("L1", "L2", "L3"),
    1: ("L2", "L3", "L1"),
    2: ("L3", "L1", "L2"),
    3: ("L1", "L3", "L2"),
    4: ("L2", "L1", "L3"),
    5: ("L3", "L2", "L1"),
}


@pytest.mark.parametrize("rotation", sorted(TABLE))
def test_rotation_table(rotation: int) -> None:
    grid = to_grid(rotation, [1, 2, 3])  # the EVSE's L1 carries 1, L2 2, L3 3
    for local, name in enumerate(TABLE[rotation]):
        assert grid[int(name[1]) - 1] == local + 1


@pytest.mark.parametrize("rotation", sorted(TABLE))
def test_single_phase_masks_follow_the_table(rotation: int) -> None:
    for local, name in enumerate(TABLE[rotation]):
        assert GRID_MASK[rotation][1 << local] == 1 << (int(name[1]) - 1)


def test_masks_keep_their_phase_count_and_all_phases_stay_all() -> None:
    for rotation in range(6):
        assert GRID_MASK[rotation][ALL_PHASES] == ALL_PHASES
        assert GRID_MASK[rotation][0] == 0
        for mask in range(8):
            assert PHASE_COUNT[GRID_MASK[rotation][mask]] == PHASE_COUNT[mask]


def test_phases_of() -> None:
    assert PHASES_OF[0] == ()
    assert PHASES_OF[5] == (0, 2)
    assert PHASES_OF[7] == (0, 1, 2)


def test_measured_mask_uses_one_amp() -> None:
    assert measured_mask([999, 1000, 0]) == 0b010
    assert measured_mask([0, 0, 0]) == 0
    assert measured_mask([16_000, 16_000, 16_000]) == ALL_PHASES
    assert measured_mask([-5000, 0, 6000]) == 0b100


def test_assumed_mask_order_of_precedence() -> None:
    assert assumed_mask(configured=0, rfid_phases=0, learned=0) == ALL_PHASES
    assert assumed_mask(configured=0, rfid_phases=0, learned=2) == 2
    assert assumed_mask(configured=4, rfid_phases=0, learned=2) == 4
    assert assumed_mask(configured=4, rfid_phases=1, learned=2) == 1
