"""Phase bookkeeping: which grid phases an EVSE or meter loads, and phase learning.

Phases are bit fields, bit0 = L1, bit1 = L2, bit2 = L3 (the API's `used_phases`). An EVSE's
own terminals L1/L2/L3 are connected to the grid phases given by its `phase_rotation`:

====  ========  ==========================================
rot   wiring    EVSE L1, L2, L3 are on grid phase
====  ========  ==========================================
0     L1L2L3    L1, L2, L3 (no rotation)
1     L2L3L1    L2, L3, L1
2     L3L1L2    L3, L1, L2
3     L1L3L2    L1, L3, L2
4     L2L1L3    L2, L1, L3
5     L3L2L1    L3, L2, L1
====  ========  ==========================================

So a single-phase car (it charges on the EVSE's L1) behind an EVSE with rotation 1 loads grid
phase L2. Meters carry the same field and are mapped the same way.

Phase learning: when `used_phases` is 0 the phases are learned from what the vehicle draws
while charging (state 3 or 4): every phase with at least LEARN_THRESHOLD_MA. Until something is
learned all three phases are assumed, which over- rather than under-counts the load.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

ALL_PHASES: Final = 0b111
LEARN_THRESHOLD_MA: Final = 1000

# ROTATION[r][i]: grid phase index (0..2) of the device's own phase i.
ROTATION: Final[tuple[tuple[int, int, int], ...]] = (
    (0, 1, 2),
    (1, 2, 0),
    (2, 0, 1),
    (0, 2, 1),
    (1, 0, 2),
    (2, 1, 0),
)


def _rotate_mask(rotation: int, mask: int) -> int:
    grid = 0
    for local, phase in enumerate(ROTATION[rotation]):
        if mask >> local & 1:
            grid |= 1 << phase
    return grid


# GRID_MASK[r][mask]: the grid phases that a device-local phase mask occupies.
GRID_MASK: Final[tuple[tuple[int, ...], ...]] = tuple(
    tuple(_rotate_mask(r, m) for m in range(8)) for r in range(len(ROTATION))
)

# PHASES_OF[mask]: the phase indices in a mask, in ascending order.
PHASES_OF: Final[tuple[tuple[int, ...], ...]] = tuple(
    tuple(p for p in range(3) if m >> p & 1) for m in range(8)
)

PHASE_COUNT: Final[tuple[int, ...]] = tuple(len(p) for p in PHASES_OF)


def to_grid(rotation: int, currents: Sequence[int]) -> tuple[int, int, int]:
    """A device's per-phase currents rearranged onto the grid phases."""
    out = [0, 0, 0]
    rot = ROTATION[rotation]
    out[rot[0]] = currents[0]
    out[rot[1]] = currents[1]
    out[rot[2]] = currents[2]
    return out[0], out[1], out[2]


def measured_mask(currents: Sequence[int], threshold: int = LEARN_THRESHOLD_MA) -> int:
    """The device-local phases that carry at least `threshold` mA (0 when none does)."""
    return (
        (1 if currents[0] >= threshold else 0)
        | (2 if currents[1] >= threshold else 0)
        | (4 if currents[2] >= threshold else 0)
    )


def assumed_mask(configured: int, rfid_phases: int, learned: int) -> int:
    """The device-local phases the allocation must assume an EVSE loads.

    An RFID's `used_phases` describes the car and so beats the EVSE's setting; the EVSE's
    setting beats what was learned; with nothing known all three phases are assumed.
    """
    if rfid_phases:
        return rfid_phases
    if configured:
        return configured
    if learned:
        return learned
    return ALL_PHASES
