"""Stage 2: each EVSE's verdict, before any current is shared.

`classify` is the one function that says what an EVSE is in this run:

* switched off (device disabled, `disable_policy` 0): not counted at all;
* lost (no fresh state, state 6, com_err): counts as drawing its maximum (fixed load);
* without a vehicle, or in error: gets 0;
* disabled under `disable_policy` -1 ("unlimited"): its maximum, counted as fixed load while
  a vehicle may draw it;
* a vehicle that may ask for current: a `Vehicle`, with its wish already made when no clock
  and no charging rule go into it (wishes.make_wish), else made later in the run.

Every verdict also says what the EVSE draws now (to tell it apart from other load), its
power, and its memory after the state's session events. A verdict that depends on nothing
but its EVSE's configuration, state, memory and the run's `Context` may be cached (see
cache.py); `classify` says which.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import NamedTuple

from service.core.allocation.budgets import Constraints
from service.core.allocation.events import after_state, may_start_or_end_a_session
from service.core.allocation.model import (
    DRAW_TOLERANCE_MA,
    EMPTY_EVSE_MEMORY,
    FALLBACK_MAX_CURRENT,
    IDLE_MEMORY,
    M_CHARGING,
    R_COM_ERR,
    R_DISABLED,
    R_ERROR,
    R_NO_VEHICLE,
    R_UNLIMITED,
    STATE_NO_VEHICLE,
    VEHICLE_STATES,
    EvseInput,
    EvseMemory,
    EvseResult,
    bound_of,
    draw_limit,
    max_note,
    resolve_max_current,
)
from service.core.allocation.views import (
    GATHER,
    ConfigView,
    StateView,
    config_view,
    grid_draw,
    new,
    soft_power,
    state_view,
)
from service.core.allocation.wishes import (
    Vehicle,
    Wish,
    demand_for,
    make_wish,
    reads_the_clock,
    slots_for,
)
from service.core.authorization import NO_OVERRIDES, RfidIndex
from service.core.groups import Demand
from service.core.models import EvseConfig, EvseState, User
from service.core.phases import GRID_MASK, PHASES_OF, assumed_mask

# A wish that read the clock only as whether the vehicle's minimum pause runs, with what it
# was made from: the vehicle object, its power (W), whether the pause ran; and its demand.
Clocked = tuple[Vehicle, int, bool, Wish, Demand | None]


class Context(NamedTuple):
    """What a verdict depends on beyond its EVSE. The cache keeps one object while none of
    it changes, so that a single identity test covers it."""

    constraints: Constraints  # the group tree's limits (and min_only per group)
    group_index: Mapping[int, int]  # group id → its index in the group tree
    policy: int  # disable_policy
    users: Mapping[str, User]  # an RFID's phases come from its user
    resume_margin: int  # params.resume_margin (see wishes.demand_for)
    cells: dict[int, tuple[int, ...]]  # slots per (group, grid phases), made on demand


@dataclass(slots=True)
class Site:
    """What every verdict of one run is made under."""

    context: Context
    now: float
    variables: Mapping[str, float]  # the params' cm_vars, for expressions
    rfids: RfidIndex
    notes: list[str]
    views: dict[str, ConfigView]  # cached, see cache.py
    state_views: dict[str, StateView]
    clocked: dict[str, Clocked]

    def config_view(self, dev_id: str, cfg: EvseConfig) -> ConfigView:
        cv = self.views.get(dev_id)
        if cv is None or cv.config is not cfg:
            cv = self.views[dev_id] = config_view(cfg)
        return cv

    def state_view(self, dev_id: str, st: EvseState) -> StateView:
        sv = self.state_views.get(dev_id)
        if sv is None or sv.state is not st:
            sv = self.state_views[dev_id] = state_view(st)
        return sv

    def max_current(self, dev_id: str, cfg: EvseConfig, st: EvseState | None) -> int:
        """resolve_max_current, with a note when a fallback replaced the expression."""
        max_cur, fallback = resolve_max_current(cfg, st, self.variables)
        if fallback:
            self.notes.append(max_note(dev_id, cfg, max_cur))
        return max_cur


# Positions of the fields that refreshed() rebuilds (the assertion keeps them true).
assert Wish._fields[6] == "watts" and len(Wish._fields) == 13
assert EvseResult._fields[9] == "cur_charging_power"
assert Vehicle._fields[6] == "max_current" and Wish._fields[5] == "max_current"


class Verdict(NamedTuple):
    """What one EVSE is in this run, before any current is shared."""

    group: int  # index in the group tree
    power: float  # W it draws now
    soft_power: float  # W the soft meter counts (no energy reading of its own), else 0
    draw_l1: int  # mA it draws now, on the grid phases
    draw_l2: int
    draw_l3: int
    # Its phase_rotation, to place what it drew at the time of the grid reading
    # (EvseInput.counted_current); -1: what it draws is not counted (switched off, lost).
    rotation: int
    fixed: tuple[int, int, int] | None  # mA it counts as fixed load, on the grid phases
    memory: EvseMemory | None  # its new memory, when it changed (not for a vehicle)
    result: EvseResult | None  # its result: it takes no part in sharing
    # A vehicle that may ask for current, whose wish is made later in the run (None when
    # its wish is made here: a run reads it from the verdict only then).
    vehicle: Vehicle | None
    wish: Wish | None  # its wish already made (no clock or rule goes into it)
    demand: Demand | None  # what that wish asks of sharing (None: it does not share)
    slots: tuple[int, ...]  # the constraint slots a vehicle loads (its Vehicle's), else ()
    com_err: bool
    # Given no current in the last run (its memory says so): what it draws is no surplus.
    idle: bool


_NOTHING = (0.0, 0.0, 0, 0, 0, -1)


def classify(
    dev_id: str, ev: EvseInput, orig: EvseMemory | None, is_fresh: bool, site: Site
) -> tuple[Verdict, bool]:
    """The verdict of one EVSE (`orig`: its memory, None when it has none; `is_fresh`: its
    state's age is within the staleness age), and whether it may be cached: whether it
    depends on nothing but the EVSE's configuration, state and memory objects and the
    site's context (no clock, no variables, no note, no change of memory)."""
    cfg = ev.config
    cv = site.config_view(dev_id, cfg)
    ctx = site.context
    mem = EMPTY_EVSE_MEMORY if orig is None else orig
    if not cv.enabled and ctx.policy == 0:
        # Not read, not counted: what it still draws shows up as other load.
        result = EvseResult(
            False, False, False, 0, 0, 0, 0, 0, 0, 0, R_DISABLED, False, False, None, 0, 0
        )  # fmt: skip
        verdict = Verdict(0, *_NOTHING, None, None, result, None, None, None, (), False, True)
        return verdict, False
    notes_before = len(site.notes)
    g = ctx.group_index.get(cv.group)
    if g is None:
        site.notes.append(f"{dev_id}: group {cv.group} does not exist; using group 0")
        g = 0
    st = ev.state
    sv = None if st is None else site.state_view(dev_id, st)
    if (
        sv is None
        or _unexplained(dev_id, cv, sv, ev.commanded_above_max, site.notes)
        or not is_fresh
        or sv.bad
    ):
        return _lost(dev_id, cfg, cv, st, mem, g, site), False
    m2 = mem
    if may_start_or_end_a_session(mem, sv.s, sv.rfid, sv.measured):
        m2 = after_state(dev_id, mem, sv.state, site.now, cfg, site.rfids)
    # A maximum given as an expression reads the params' cm_vars.
    keep = m2 is mem and len(site.notes) == notes_before
    if sv.s in VEHICLE_STATES and (cv.enabled or ctx.policy == 1):
        verdict = _vehicle(dev_id, cv, sv, m2, orig, g, site, ev.car_limit)
        # A learned car limit is read anew every run (its control memory may drop it).
        return verdict, keep and cv.static_max is not None and not ev.car_limit
    unlimited = not cv.enabled and ctx.policy == -1
    verdict = _not_sharing(dev_id, cv, sv, mem, m2, g, unlimited, site)
    # An RFID shown before plugging in waits in auth, and expires by the clock.
    keep = keep and verdict.memory is None and m2.auth is None
    return verdict, keep and (not unlimited or cv.static_max is not None)


def _unexplained(
    dev_id: str, cv: ConfigView, sv: StateView, commanded: int, notes: list[str]
) -> bool:
    """A draw that the EVSE's maximum cannot explain is a fault, not a credit against the
    grid reading (one that reported 60 A while drawing 6 A cancelled real load): then the
    EVSE counts as lost, and a note says why. What it was commanded and may still draw
    (`commanded`, above the maximum right after the maximum was lowered) explains a draw
    too."""
    peak = max(sv.c0, sv.c1, sv.c2)
    if peak <= DRAW_TOLERANCE_MA:
        return False
    bound = bound_of(max(draw_limit(cv.static_max, sv.reported_max), commanded))
    if peak <= bound:
        return False
    notes.append(
        f"{dev_id}: reports {peak} mA on a phase, more than its maximum "
        f"explains (at most {bound} mA); counted as lost, at its maximum"
    )
    return True


def _local_mask(cv: ConfigView, mem: EvseMemory, site: Site) -> int:
    """The EVSE-local phases it is assumed to load (see phases.assumed_mask)."""
    return assumed_mask(cv.used_phases, site.rfids.phases(mem.auth), mem.learned_phases)


def _on_phases(grid_mask: int, amount: int) -> tuple[int, int, int]:
    phases = PHASES_OF[grid_mask]
    return (
        amount if 0 in phases else 0,
        amount if 1 in phases else 0,
        amount if 2 in phases else 0,
    )


def _lost(
    dev_id: str,
    cfg: EvseConfig,
    cv: ConfigView,
    st: EvseState | None,
    mem: EvseMemory,
    g: int,
    site: Site,
) -> Verdict:
    """No fresh state (or one whose draw its maximum cannot explain): assume it draws its
    maximum on the phases it may use, and those it was last measured drawing on."""
    max_cur, fallback = resolve_max_current(cfg, st, site.variables)
    if fallback:
        site.notes.append(max_note(dev_id, cfg, max_cur))
        # Counted as load, the unknown maximum of an EVSE that may still draw is not its
        # minimum: what it reports, else 16 A.
        reported = st.max_charging_current if st is not None else None
        max_cur = max(max_cur, reported or FALLBACK_MAX_CURRENT)
    # With the phases it was last measured drawing on (learned): a setting never hides a
    # draw (see _vehicle).
    local = _local_mask(cv, mem, site) | mem.learned_phases
    gmask = GRID_MASK[cv.rotation][local]
    result = EvseResult(
        cv.enabled, False, False, 0, 0, 0, 0, local, gmask, 0, R_COM_ERR, False, True, None,
        mem.overrides.bits, 0,
    )  # fmt: skip
    changed = mem._replace(charging=False) if mem.charging else None
    fixed = _on_phases(gmask, max_cur)
    return Verdict(g, *_NOTHING, fixed, changed, result, None, None, None, (), True, True)


def _vehicle(
    dev_id: str,
    cv: ConfigView,
    sv: StateView,
    m2: EvseMemory,
    orig: EvseMemory | None,
    g: int,
    site: Site,
    car_limit: int,
) -> Verdict:
    """A vehicle that may ask for current; its wish is made here when it reads neither the
    clock nor the solar figures. `car_limit`: EvseInput.car_limit."""
    cfg = cv.config
    if cv.static_max is not None and not sv.reported_max:
        max_cur = cv.static_max
    else:
        max_cur = site.max_current(dev_id, cfg, sv.state)
    # Every phase it is measured drawing on is budgeted, whatever a card (a user may set
    # used_phases on their own) or the configuration says.
    local = _local_mask(cv, m2, site) | sv.measured
    gmask = GRID_MASK[cv.rotation][local]
    power = sv.power
    ctx = site.context
    constraints = ctx.constraints
    slots = slots_for(g, gmask, constraints.chain[g], ctx.cells)
    vehicle = new(
        Vehicle,
        (dev_id, cfg, m2, g, local, gmask, max_cur, not cv.enabled, orig, slots, cv.minimum,
         car_limit),
    )  # fmt: skip
    wish = demand = None
    if not reads_the_clock(vehicle, ctx.users):
        wish, minimum = make_wish(
            vehicle, round(power), ctx.users, None, constraints.min_only[g], site.now
        )
        if not wish.reason:
            demand = demand_for(vehicle, wish, minimum, site.now, ctx.resume_margin)
    draw = grid_draw(cv.rotation, sv.c0, sv.c1, sv.c2)
    return new(
        Verdict,
        (g, power, soft_power(power, sv.metered), *draw, cv.rotation, None, None, None,
         vehicle if wish is None else None, wish, demand, slots, False,
         orig is None or not orig[M_CHARGING]),
    )  # fmt: skip


def _not_sharing(
    dev_id: str,
    cv: ConfigView,
    sv: StateView,
    mem: EvseMemory,
    m2: EvseMemory,
    g: int,
    unlimited: bool,
    site: Site,
) -> Verdict:
    """No vehicle, an error, or (`unlimited`) a disabled device under disable_policy -1:
    its maximum, outside the balancing, counted as load while a vehicle may draw it."""
    local = _local_mask(cv, m2, site) | sv.measured  # as for a vehicle
    gmask = GRID_MASK[cv.rotation][local]
    watts = round(sv.power)
    fixed = None
    if unlimited:
        max_cur = site.max_current(dev_id, cv.config, sv.state)
        counted = 0
        if sv.s in VEHICLE_STATES:
            counted = max_cur
            fixed = _on_phases(gmask, max_cur)
        result = EvseResult(
            False, True, False, max_cur, counted, max_cur, 0, local, gmask, watts, R_UNLIMITED,
            False, False, None, m2.overrides.bits, max_cur,
        )  # fmt: skip
    else:
        auth = m2.auth
        ov = m2.overrides
        result = new(
            EvseResult,
            (cv.enabled, True, False, 0, 0, 0, 0, local, gmask, watts,
             R_NO_VEHICLE if sv.s == STATE_NO_VEHICLE else R_ERROR, False, False,
             auth.user_id if auth is not None else None,
             0 if ov is NO_OVERRIDES else ov.bits, 0),
        )  # fmt: skip
    draw = grid_draw(cv.rotation, sv.c0, sv.c1, sv.c2)
    return new(
        Verdict,
        (g, sv.power, soft_power(sv.power, sv.metered), *draw, cv.rotation, fixed,
         _settled_memory(mem, m2), result, None, None, None, (), False, not mem[M_CHARGING]),
    )  # fmt: skip


def _settled_memory(mem: EvseMemory, m2: EvseMemory) -> EvseMemory | None:
    """The memory of an EVSE that does not share: no pause, not charging. None when it
    equals `mem`."""
    if m2.paused_since is not None or m2.charging or m2.stopped_at is not None:
        m2 = m2._replace(paused_since=None, charging=False, stopped_at=None)
    if m2 is mem:
        return None
    if m2 == IDLE_MEMORY:
        m2 = IDLE_MEMORY
    return None if m2 == mem else m2


def refreshed(
    verdict: Verdict, config: EvseConfig, old: StateView, new_view: StateView
) -> Verdict | None:
    """A cached verdict carried over to a new state, when that leaves what the allocation
    decides for the EVSE as it was: only its measurements moved (currents, voltages, power),
    not its state, error, RFID, metering, reported maximum or the phases it draws on. What
    it draws and its power are the new state's. None: the new state needs a verdict of its
    own."""
    # Field by field, not by slices: this runs for every new state of a busy site.
    if (
        old[1] != new_view[1]
        or old[5] != new_view[5]
        or old[6] != new_view[6]
        or old[8] != new_view[8]
        or old[9] != new_view[9]
        or old[10] != new_view[10]
    ):
        return None
    # Unpacked at once and rebuilt whole, not read by name and _replace'd (Python-level
    # calls): this runs for every new state of a busy site.
    (g, _, _, _, _, _, rotation, fixed, _, result, vehicle, wish, demand, slots, _,
     idle) = verdict  # fmt: skip
    _, _, c0, c1, c2, _, _, power, metered, reported_max, _, drawn = new_view
    # A draw its maximum cannot explain needs a verdict of its own (see _unexplained).
    # Compared inline, above 1 A (DRAW_TOLERANCE_MA) only, with the maximum of a vehicle at
    # hand (an EVSE without one rarely draws).
    if c0 > 1000 or c1 > 1000 or c2 > 1000:
        if wish is not None:
            limit = wish[5]  # max_current
        elif vehicle is not None:
            limit = vehicle[6]  # max_current
        else:
            raw = config.max_charging_cur
            limit = draw_limit(raw if isinstance(raw, int) else None, reported_max)
        bound = limit + (limit // 10 if limit > 10_000 else 1000)  # as bound_of
        if c0 > bound or c1 > bound or c2 > bound:
            return None
    watts = round(power)
    if wish is not None and wish[6] != watts:
        (w0, w1, w2, w3, w4, w5, _, w7, w8, w9, w10, w11, w12) = wish
        wish = new(Wish, (w0, w1, w2, w3, w4, w5, watts, w7, w8, w9, w10, w11, w12))
    if result is not None and result[9] != watts:
        result = new(EvseResult, (*result[:9], watts, *result[10:]))
    d0, d1, d2 = GATHER[rotation](drawn)
    return new(
        Verdict,
        (g, power, power if power > 0 and not metered else 0.0, d0, d1, d2, rotation, fixed,
         None, result, vehicle, wish, demand, slots, False, idle),
    )  # fmt: skip
