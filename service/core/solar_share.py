"""Sharing solar current among the EVSEs whose charging rules charge from it.

A rule in mode 2-4 asks for a part of the solar production, one in mode 5 for the surplus
(what would be exported without the EVSEs). Handed to every such EVSE in full, two wallboxes
with a surplus rule would each take the whole surplus and import as much again from the grid.
cFos charges a surplus car "(almost) only" from the surplus; OpenEMS and openWB split the
surplus among the cars that use it. So each pool (production, surplus) is split among the
EVSEs that charge from it:

* in their order (highest priority first, then the one charging, the one plugged in first,
  the device id), an EVSE is admitted while the pool still gives every admitted EVSE at least
  its minimum per phase (an EVSE that does not fit is skipped, a later smaller one may); one
  that does not charge yet needs its `margin` more (the deadband): with a pool just at two
  minimums, the meter's noise would otherwise admit and drop it in turn, and each time cut
  and raise the car that does charge (solar plant 119: 2 commands a minute for 40 s);
* the admitted EVSEs get the same current per phase: pool / Σ their phases (a three-phase car
  takes three times the total of a one-phase car at the same current);
* the others get nothing from the pool (their solar rules see no solar current and do not
  apply, or ask for 0 and the EVSE pauses by rule, subject to its undercut time).

One EVSE alone gets the whole pool, as before sharing existed. Pure: no I/O, no clock.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple


class SolarCandidate(NamedTuple):
    dev_id: str
    phases: int  # how many phases it charges on (1-3)
    minimum: int  # mA per phase it needs to charge at all
    margin: int = 0  # mA per phase more it needs to be admitted (0 once it charges)


def split_pool(candidates: Sequence[SolarCandidate], pool_ma: int) -> dict[str, int]:
    """Each candidate's share of a pool (mA summed over the phases), in mA per phase.
    `candidates` come in the order of precedence."""
    if not candidates:
        return {}
    pool = max(0, pool_ma)
    if len(candidates) == 1:
        only = candidates[0]
        return {only.dev_id: pool // max(1, only.phases)}
    admitted: list[SolarCandidate] = []
    phases = 0
    need = 0
    for c in candidates:
        trial_phases = phases + max(1, c.phases)
        trial_need = max(need, c.minimum)
        if pool // trial_phases >= max(trial_need, c.minimum + c.margin):
            admitted.append(c)
            phases, need = trial_phases, trial_need
    share = pool // phases if phases else 0
    chosen = {c.dev_id for c in admitted}
    return {c.dev_id: share if c.dev_id in chosen else 0 for c in candidates}
