"""Stage 6: sessions after sharing. Each vehicle's reason, its pause bookkeeping in memory
(`paused_since`, `charging`, `stopped_at`) and its result, from its wish and the current
sharing gave it.

Pauses: a vehicle that wants current but gets none is paused; `pause_min_time` then counts
from when it stopped charging (wishes.make_wish holds it back meanwhile). Authorisation
missing or override C are not pauses: those EVSEs are commanded `charging_enabled` false.
"""

from __future__ import annotations

from service.core.allocation.model import (
    M_CHARGING,
    M_OVERRIDES,
    M_PAUSED_SINCE,
    PAUSE_REASONS,
    R_AUTH,
    R_GRID_LOST,
    R_LIMITED,
    R_NO_CURRENT,
    R_OK,
    R_OVERRIDE,
    EvseMemory,
    EvseResult,
)
from service.core.allocation.views import new
from service.core.allocation.wishes import Wish
from service.core.authorization import NO_OVERRIDES

# A result with what it was made from: wish, current, observation mode.
Settled = tuple[Wish, int, bool, EvseResult]

assert Wish._fields[8] == "reason"  # read by position in conclude


def conclude(
    wishes: list[Wish],
    currents: list[int],
    now: float,
    observe: bool,
    settled: dict[str, Settled],
    results: dict[str, EvseResult],
    changed_mem: dict[str, EvseMemory],
) -> None:
    """Every vehicle's result into `results`, its changed memory into `changed_mem`.
    `currents`: what sharing gave the wishes that share (those without a reason), in order.
    `settled` (a cache) hands on the very same result while the wish object, its current
    and the mode stay the same, for results that neither the clock nor a change of memory
    went into."""
    settled_get = settled.get
    next_current = iter(currents).__next__
    for wish in wishes:
        dev_id = wish[0]
        shared = not wish[8]  # reason
        current = next_current() if shared else 0
        last = settled_get(dev_id)
        if last is not None and last[0] is wish and last[1] == current and last[2] == observe:
            results[dev_id] = last[3]
            continue
        result, mem = _result(wish, shared, current, now, observe)
        results[dev_id] = result
        old = wish[12]
        if mem is old:
            if mem[M_PAUSED_SINCE] is None:
                settled[dev_id] = (wish, current, observe, result)
        elif mem != old:
            changed_mem[dev_id] = mem


def _result(
    wish: Wish, shared: bool, current: int, now: float, observe: bool
) -> tuple[EvseResult, EvseMemory]:
    (_, enabled, mem, local, gmask, max_cur, watts, target, reason, needs_auth, capped,
     user_id, _) = wish  # fmt: skip
    if not shared:
        paused = reason in PAUSE_REASONS
    elif current == 0:
        reason = R_NO_CURRENT
        paused = True
    else:
        paused = False
        reason = R_GRID_LOST if capped else R_OK if current >= target else R_LIMITED
    since = mem[M_PAUSED_SINCE]
    # Most runs leave the pause bookkeeping as it was: charging while it gets current,
    # paused since a time while it pauses.
    if mem[M_CHARGING] != (current > 0) or (since is not None) != paused:
        mem = _pause_memory(mem, current, paused, now)
        since = mem[M_PAUSED_SINCE]
    ov = mem[M_OVERRIDES]
    enabled_cmd = reason != R_AUTH and reason != R_OVERRIDE
    if observe:
        # Observation does not steer the current (the computed figures stay visible), but
        # access control still holds: an EVSE waiting for a PIN/RFID or switched off by
        # override C stays off.
        paused_cmd, current_cmd = False, max_cur if enabled_cmd else 0
    else:
        paused_cmd, current_cmd = paused, current
    result = new(
        EvseResult,
        (enabled, enabled_cmd, paused_cmd, current_cmd, current, target,
         int(now - since) if since is not None else 0, local, gmask, watts, reason,
         needs_auth, False, user_id, 0 if ov is NO_OVERRIDES else ov.bits,
         max_cur if ov is NO_OVERRIDES or ov.max_current is None else ov.max_current),
    )  # fmt: skip
    return result, mem


def _pause_memory(mem: EvseMemory, current: int, paused: bool, now: float) -> EvseMemory:
    """The pause bookkeeping after this run: charging, paused (since when, and when it
    stopped charging), or switched off. Returns `mem` itself when nothing changed."""
    since = mem[M_PAUSED_SINCE]
    charging = mem[M_CHARGING]
    if current > 0:
        if since is not None or not charging:
            return mem._replace(paused_since=None, charging=True, stopped_at=None)
    elif paused:
        if since is None or charging:
            return mem._replace(
                paused_since=now if since is None else since,
                charging=False,
                stopped_at=now if charging else mem.stopped_at,
            )
    elif since is not None or charging:
        # Switched off (override, authorisation), not paused: no minimum pause follows.
        return mem._replace(paused_since=None, charging=False)
    return mem
