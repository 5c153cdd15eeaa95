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


def conclude(
    wishes: list[Wish],
    demand_of: list[int],
    currents: list[int],
    now: float,
    observe: bool,
    settled: dict[str, Settled],
    results: dict[str, EvseResult],
    changed_mem: dict[str, EvseMemory],
) -> None:
    """Every vehicle's result into `results`, its changed memory into `changed_mem`.
    `demand_of`: per wish, the index of its demand in `currents`, -1 = it did not share.
    `settled` (a cache) hands on the very same result while the wish object, its current
    and the mode stay the same, for results that neither the clock nor a change of memory
    went into."""
    settled_get = settled.get
    for wish, k in zip(wishes, demand_of, strict=True):
        current = currents[k] if k >= 0 else 0
        last = settled_get(wish[0])
        if last is not None and last[0] is wish and last[1] == current and last[2] == observe:
            results[wish[0]] = last[3]
            continue
        result, mem = _result(wish, k >= 0, current, now, observe)
        results[wish[0]] = result
        old = wish[12]
        if mem is old:
            if mem[M_PAUSED_SINCE] is None:
                settled[wish[0]] = (wish, current, observe, result)
        elif mem != old:
            changed_mem[wish[0]] = mem


def _result(
    wish: Wish, shared: bool, current: int, now: float, observe: bool
) -> tuple[EvseResult, EvseMemory]:
    (_, enabled, mem, local, gmask, max_cur, watts, target, reason, needs_auth, capped,
     user_id, _) = wish  # fmt: skip
    if shared:
        reason = _shared_reason(current, target, capped)
        paused = current == 0
    else:
        paused = reason in PAUSE_REASONS
    mem = _pause_memory(mem, current, paused, now)
    since = mem[M_PAUSED_SINCE]
    ov = mem.overrides
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


def _shared_reason(current: int, target: int, capped: bool) -> str:
    if current == 0:
        return R_NO_CURRENT
    if capped:
        return R_GRID_LOST
    return R_OK if current >= target else R_LIMITED


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
