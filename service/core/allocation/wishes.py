"""Stage 4: what a vehicle asks for. Its target (maximum, capped by the override, the charging
rules, a disabled device's minimum and a lost grid meter), its minimum, and the reason it
takes no part in sharing when it does not; then the `Demand` that sharing
(groups.share: minimums first, then water-filling) works on.

`make_wish` is the only place that decides these for every kind of EVSE.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import NamedTuple

from service.core.allocation.model import (
    R_AUTH,
    R_BATTERY_SAVE,
    R_MIN_PAUSE,
    R_OVERRIDE,
    R_RULE,
    R_TARGET,
    EvseMemory,
)
from service.core.allocation.views import new
from service.core.authorization import may_charge
from service.core.charging_rules import (
    MODE_RELATIVE_SOLAR,
    MODE_SOLAR,
    MODE_SOLAR_MINUS,
    MODE_SURPLUS,
    RuleContext,
    RuleState,
    evaluate_rule_set,
)
from service.core.groups import Demand, class_key
from service.core.models import EvseConfig, User
from service.core.phases import PHASE_COUNT, PHASES_OF
from service.core.solar_share import SolarCandidate, split_pool

_FROM_PRODUCTION = frozenset((MODE_SOLAR, MODE_RELATIVE_SOLAR, MODE_SOLAR_MINUS))


class Vehicle(NamedTuple):
    """An EVSE with a vehicle that may ask for current, between its verdict and its wish."""

    dev_id: str
    config: EvseConfig
    memory: EvseMemory  # after this run's session events
    group: int
    local_mask: int
    grid_mask: int
    max_current: int
    disabled_min: bool  # device disabled under disable_policy 1
    old: EvseMemory | None  # the memory the run began with
    slots: tuple[int, ...]  # the constraint slots it loads (constraint * 3 + grid phase)
    minimum: int  # model.effective_minimum of its configuration
    car_limit: int = 0  # EvseInput.car_limit: what its car takes, learned; 0: not known


class Wish(NamedTuple):
    """A vehicle's wish, between making it and building its result after sharing. An EVSE
    whose inputs stay the same hands on the very same object from run to run (see
    sessions.conclude)."""

    dev_id: str
    enabled: bool  # device_enabled
    memory: EvseMemory  # with the rule sets' new state
    local_mask: int
    grid_mask: int
    max_current: int
    watts: int  # W, measured (rounded)
    target: int
    reason: str  # set when it does not take part in sharing (then it has no Demand)
    needs_auth: bool
    capped_min: bool  # limited to its minimum because a grid meter is lost
    user_id: str | None
    old: EvseMemory | None  # the memory the run began with


def has_rules(v: Vehicle, users: Mapping[str, User]) -> bool:
    """Whether charging rules may shape this EVSE's target (they need the solar figures,
    which are known only after all EVSEs have been read)."""
    ov = v.memory.overrides
    if v.config.charging_rules and not ov.evse_rules_disabled:
        return True
    auth = v.memory.auth
    if auth is None or auth.user_id is None or ov.user_rules_disabled:
        return False
    user = users.get(auth.user_id)
    return user is not None and bool(user.charging_rules)


def reads_the_clock(v: Vehicle, users: Mapping[str, User]) -> bool:
    """Whether its wish depends on the time: charging rules, a minimum pause that runs, or
    no plug time yet (its place among equals is then the present)."""
    mem = v.memory
    return mem.stopped_at is not None or not mem.plugged_at or has_rules(v, users)


def make_wish(
    v: Vehicle,
    watts: int,
    users: Mapping[str, User],
    ctx: RuleContext | None,
    min_only: bool,
    now: float,
) -> tuple[Wish, int]:
    """The wish of an EVSE with a vehicle that draws `watts` now, and its minimum. `ctx`
    None: its rules must not matter (the caller made sure it has none that apply)."""
    cfg = v.config
    mem = v.memory
    minimum = v.minimum
    ov = mem.overrides
    auth = mem.auth
    user_id = auth.user_id if auth is not None else None
    user = users.get(user_id) if user_id is not None else None
    needs_auth = bool(cfg.users) and (user is None or not may_charge(user, v.dev_id, cfg.users))
    target = v.max_current
    if ov.max_current is not None and ov.max_current < target:
        target = ov.max_current
    car_limit = v.car_limit
    if car_limit and car_limit < target:
        # Its car takes less (learned by the control law): the rest goes to the others. Not
        # below its minimum (a car drawing less than it still needs it).
        target = min(target, max(car_limit, minimum))
    rule_limited = False
    if ctx is not None and not needs_auth and not ov.charging_disabled:
        target, rule_limited, mem = _ruled(v, user, ctx, minimum, target, now)
    elif mem.evse_rule is not None or mem.user_rule is not None:
        # No rule applies now: what the rule sets remembered ends.
        mem = mem._replace(evse_rule=None, user_rule=None)
    if v.disabled_min and target > minimum:
        target = minimum
    capped_min = False
    if min_only and target > minimum:
        target = minimum
        capped_min = True
    if needs_auth:
        reason = R_AUTH
    elif ov.charging_disabled:
        reason = R_OVERRIDE
    else:
        reason = _pause_reason(cfg, mem, target, minimum, rule_limited, now)
    wish = new(
        Wish,
        (v.dev_id, cfg.device_enabled, mem, v.local_mask, v.grid_mask, v.max_current,
         watts, target, reason, needs_auth, capped_min, user_id, v.old),
    )  # fmt: skip
    return wish, minimum


def _pause_reason(
    cfg: EvseConfig, mem: EvseMemory, target: int, minimum: int, rule_limited: bool, now: float
) -> str:
    """Why a vehicle that may charge pauses before any sharing; "" when it shares."""
    if target < minimum:
        if rule_limited:
            return R_RULE
        # Between min_charging_cur and the threshold it could charge, but the battery saver
        # forbids it; below min_charging_cur it cannot.
        return R_BATTERY_SAVE if target >= cfg.min_charging_cur else R_TARGET
    if mem.stopped_at is not None and now - mem.stopped_at < cfg.pause_min_time:
        return R_MIN_PAUSE
    return ""


def _ruled(
    v: Vehicle, user: User | None, ctx: RuleContext, minimum: int, target: int, now: float
) -> tuple[int, bool, EvseMemory]:
    """The target after the EVSE's and the user's charging rules, whether they lowered it,
    and the memory with the rule sets' new state."""
    cfg = v.config
    mem = v.memory
    ov = mem.overrides
    limited = False
    evse_state: RuleState | None = None
    user_state: RuleState | None = None
    if cfg.charging_rules and not ov.evse_rules_disabled:
        asked, evse_state = evaluate_rule_set(cfg.charging_rules, ctx, minimum, mem.evse_rule, now)
        if asked is not None and asked < target:
            target, limited = asked, True
    if user is not None and user.charging_rules and not ov.user_rules_disabled:
        asked, user_state = evaluate_rule_set(user.charging_rules, ctx, minimum, mem.user_rule, now)
        if asked is not None and asked < target:
            target, limited = asked, True
    if mem.evse_rule != evse_state or mem.user_rule != user_state:
        mem = mem._replace(evse_rule=evse_state, user_rule=user_state)
    return target, limited, mem


def slots_for(
    g: int, grid_mask: int, chain: tuple[int, ...], cells: dict[int, tuple[int, ...]]
) -> tuple[int, ...]:
    """The constraint slots an EVSE of group `g` on `grid_mask` loads. `chain`: the
    constraints its group's EVSEs load; `cells`: the slots per (group, phases), made once
    per constraints."""
    cell = g * 8 + grid_mask
    slots = cells.get(cell)
    if slots is None:
        phases = PHASES_OF[grid_mask]
        slots = cells[cell] = tuple(k * 3 + p for k in chain for p in phases)
    return slots


def demand_for(v: Vehicle, wish: Wish, minimum: int, now: float, resume_margin: int) -> Demand:
    """What a wish that shares asks of sharing. A car that does not charge (waiting to
    start, or stopped for a pause) is admitted only when its minimum plus `resume_margin`
    fits; one that charges keeps its place down to its minimum (hysteresis): else a budget
    that just fits a minimum, moved by a reading, starts and stops cars again and again,
    each time cutting the others to make room. The budgets hold the other load's peak of
    load_hold_time, so "fits now" means "has fitted that long"."""
    cell = v.group * 8 + v.grid_mask
    mem = wish.memory
    prio = v.config.prio
    target = wish.target
    if not mem.charging:
        minimum = min(target, minimum + resume_margin)
    return new(
        Demand,
        (prio, (0 if mem.charging else 1, mem.plugged_at or now, v.dev_id), cell, v.slots,
         v.grid_mask, minimum, target, class_key(prio, cell, minimum, target)),
    )  # fmt: skip


def solar_modes(v: Vehicle, users: Mapping[str, User]) -> tuple[bool, bool]:
    """Whether the EVSE's rules (its own and its user's, unless switched off by override)
    charge from the production (modes 2-4) and from the surplus (mode 5)."""
    ov = v.memory.overrides
    rules = [] if ov.evse_rules_disabled else list(v.config.charging_rules)
    auth = v.memory.auth
    if auth is not None and auth.user_id is not None and not ov.user_rules_disabled:
        user = users.get(auth.user_id)
        if user is not None:
            rules.extend(user.charging_rules)
    modes = {r.mode for r in rules if r.enabled}
    return bool(modes & _FROM_PRODUCTION), MODE_SURPLUS in modes


# What solar_pools made of a vehicle, with the user book it was made under: whether it
# charges from the production and from the surplus, its candidacy and its precedence.
SolarSeen = tuple["Vehicle", Mapping[str, User], bool, bool, SolarCandidate,
                  tuple[int, int, float, str]]  # fmt: skip


def solar_pools(
    deferred: Sequence[tuple[Vehicle, int]],
    users: Mapping[str, User],
    production: int,
    surplus: int,
    seen: dict[str, SolarSeen] | None = None,
    admit_margin: int = 0,
) -> tuple[dict[str, int], dict[str, int]]:
    """Per EVSE charging from it: its share of the production and of the surplus, mA per
    phase (see solar_share). EVSEs not listed see the whole figures. `seen` (a cache) keeps
    what was made of each vehicle while the vehicle object, the user book and
    `admit_margin` (what one that does not charge needs beyond its minimum) stay the same."""
    by_production: list[tuple[tuple[int, int, float, str], SolarCandidate]] = []
    by_surplus: list[tuple[tuple[int, int, float, str], SolarCandidate]] = []
    for v, _ in deferred:
        known = seen.get(v.dev_id) if seen is not None else None
        margin = 0 if v.memory.charging else admit_margin
        if known is None or known[0] is not v or known[1] is not users or known[4].margin != margin:
            uses_production, uses_surplus = solar_modes(v, users)
            c = SolarCandidate(v.dev_id, PHASE_COUNT[v.local_mask], v.minimum, margin)
            known = (v, users, uses_production, uses_surplus, c, _precedence(v))
            if seen is not None:
                seen[v.dev_id] = known
        _, _, uses_production, uses_surplus, c, order = known
        if uses_production:
            by_production.append((order, c))
        if uses_surplus:
            by_surplus.append((order, c))
    return (
        split_pool([c for _, c in sorted(by_production, key=_first)], production),
        split_pool([c for _, c in sorted(by_surplus, key=_first)], surplus),
    )


def _first(item: tuple[tuple[int, int, float, str], SolarCandidate]) -> tuple[int, int, float, str]:
    return item[0]


def _precedence(v: Vehicle) -> tuple[int, int, float, str]:
    """Who is admitted to a solar pool first: the highest priority, then the one charging,
    the one plugged in first, the device id."""
    m = v.memory
    return (-v.config.prio, 0 if m.charging else 1, m.plugged_at or 0.0, v.dev_id)
