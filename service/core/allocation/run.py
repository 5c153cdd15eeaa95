"""`allocate()`: the stages of one run, in order (see the package docstring)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

from service.core.allocation.budgets import (
    Meters,
    group_budgets,
    held_loads,
    last_grid_loads,
    loads_for_raises,
    non_evse_loads,
    overdraft,
    read_meters,
    solar_surplus,
)
from service.core.allocation.cache import AllocationCache, Prepared
from service.core.allocation.model import (
    NO_SPREAD,
    OBSERVED_AT_MAXIMUM,
    Allocation,
    AllocationInput,
    EvseInput,
    EvseMemory,
    EvseResult,
    Memory,
    resolve_max_current,
)
from service.core.allocation.sessions import conclude
from service.core.allocation.verdict import Site, Verdict, classify, refreshed
from service.core.allocation.views import grid_draw, new, state_view
from service.core.allocation.wishes import (
    SolarSeen,
    Vehicle,
    Wish,
    demand_for,
    has_rules,
    make_wish,
    solar_pools,
)
from service.core.authorization import RfidIndex
from service.core.charging_rules import RuleContext, minute_of_week, numeric_variables
from service.core.groups import Demand, sum_subtrees
from service.core.models import EvseState
from service.core.phases import PHASE_COUNT

# Holds a vehicle's place in the results until sharing has decided, so that results keep
# the input order.
_PLACEHOLDER: Final = EvseResult(
    False, False, False, 0, 0, 0, 0, 0, 0, 0, "", False, False, None, 0, 0
)  # fmt: skip


def allocate(
    inp: AllocationInput, memory: Memory, cache: AllocationCache | None = None
) -> Allocation:
    """One run: the commands for `inp`, and the memory for the next run. `cache`: the
    caller's AllocationCache, handed to every run (the result is the same without it, only
    slower: None makes everything anew)."""
    if cache is None:
        cache = AllocationCache()
    params = inp.params
    now = inp.now
    notes: list[str] = []
    com_err: set[str] = set()
    # 1. Meters, and the context every verdict is made under.
    tree = cache.group_tree(inp.groups, params.max_total_current)
    notes.extend(tree.notes)
    meters = read_meters(inp, tree.index, notes, com_err)
    context = cache.context(params, tree, meters.failed(), inp.users)
    variables = numeric_variables(params.cm_vars)
    site = Site(
        context, now, variables, RfidIndex(inp.users), notes,
        cache.views, cache.state_views, cache.clocked,
    )  # fmt: skip
    # 2. Each EVSE's verdict (and the wishes that read neither the clock nor the sun).
    cache.forget_gone(inp.evses)
    survey = Survey.empty(len(tree.ids), com_err)
    survey.take_verdicts(inp, memory, site, cache.verdicts, cache.taken_back(memory.evses))
    # 3. Budgets, now that what the EVSEs draw and the fixed loads are known.
    draw_sub = sum_subtrees(tree, survey.draw)
    over = overdraft(params, memory, meters, now)
    non_evse, load_peaks = held_loads(
        params, tree, non_evse_loads(tree, meters, draw_sub), memory.load_peaks,
        survey.spread, now,
    )  # fmt: skip
    non_evse, grid_load = last_grid_loads(
        params, tree, meters, non_evse, memory.grid_load, over.active
    )
    fixed_sub = sum_subtrees(tree, survey.fixed)
    budgets = group_budgets(params, tree, context.constraints, non_evse, fixed_sub, over.active)
    # EVSEs in transition: raises allow for a rise of the other load they may hide.
    unsure = loads_for_raises(tree, meters, draw_sub, sum_subtrees(tree, survey.spread), non_evse)
    raise_budgets = (
        ()
        if unsure is None
        else tuple(
            group_budgets(params, tree, context.constraints, unsure, fixed_sub, over.active).slots
        )
    )
    # 4. The wishes that charging rules shape, now that the solar figures are known.
    if survey.deferred:
        surplus = solar_surplus(meters, draw_sub, survey.idle_draw)
        survey.wishes_with_rules(inp, site, meters, surplus, cache.solar)
    # 5. Sharing: minimums by priority, then water-filling.
    currents = cache.share(budgets.slots, survey.demands, params.max_imbalance)
    # 6. Sessions: reasons, pauses and results after sharing.
    observe = not params.lb_enabled
    conclude(
        survey.wishes, currents, now, observe, cache.settled,
        survey.results, survey.changed_mem,
    )  # fmt: skip
    if observe:
        _observed_at_maximum(inp, survey.results, variables)
    evses_memory, gone = _merged(memory.evses, survey.changed_mem, inp.evses)
    cache.handed_out(evses_memory, survey.changed_mem, gone)
    return Allocation(
        evses=survey.results,
        cons_evse_power=round(survey.cons_power),
        avail_evse_power=budgets.available_power,
        budget_per_phase=budgets.per_group,
        memory=Memory(
            evses=evses_memory,
            last_now=now,
            overdraft=over.active,
            overdraft_until=over.until,
            overdraft_reported=over.reported,
            over_since=over.over_since,
            load_peaks=load_peaks,
            grid_load=grid_load,
        ),
        grid_meter_lost=meters.main_grid_lost,
        overdraft_cur=over.reported,
        overdraft_active=over.active,
        com_err=frozenset(com_err),
        energy_wh=survey.energy,
        notes=tuple(notes),
        budgets=tuple(budgets.slots),
        raise_budgets=raise_budgets,
        slots=survey.slot_of,
        grid_late=any(meters.grid_late),
    )


@dataclass(slots=True)
class Survey:
    """What the EVSEs' verdicts add up to: draws and fixed loads per group and grid phase,
    results of the EVSEs that do not share, the wishes and demands of those that do."""

    draw: list[list[int]]
    fixed: list[list[int]]
    com_err: set[str]
    results: dict[str, EvseResult]
    # A wish shares (has a demand, in the same order) when it has no reason not to.
    wishes: list[Wish]
    slot_of: dict[str, tuple[int, ...]]  # per wish's EVSE: the constraint slots it loads
    demands: list[Demand]
    deferred: list[tuple[Vehicle, int]]  # vehicles (and W) whose wish the rules shape
    changed_mem: dict[str, EvseMemory]  # most runs change few EVSEs' memory
    energy: dict[str, float]
    # Per group and grid phase: how low its other-load figure may be, by the EVSEs in
    # transition (EvseInput.draw_spread).
    spread: list[list[int]]
    cons_power: float = 0.0
    idle_draw: int = 0  # mA (Σ phases) drawn by EVSEs given no current in the last run

    @classmethod
    def empty(cls, n_groups: int, com_err: set[str]) -> Survey:
        return cls(
            [[0, 0, 0] for _ in range(n_groups)], [[0, 0, 0] for _ in range(n_groups)],
            com_err, {}, [], {}, [], [], {}, {}, [[0, 0, 0] for _ in range(n_groups)],
        )  # fmt: skip

    def take_verdicts(
        self,
        inp: AllocationInput,
        memory: Memory,
        site: Site,
        verdicts: dict[str, Prepared],
        trusted: bool,
    ) -> None:
        """Every EVSE's verdict, cached or made anew, added up. The hot loop of a run.
        `trusted`: every kept verdict was made from its EVSE's memory in `memory` (see
        AllocationCache.taken_back)."""
        old_get = memory.evses.get
        verdicts_get = verdicts.get
        stale = inp.stale_after_s
        context = site.context
        hours = _hours_since(memory.last_now, site.now, stale)
        # Every EVSE's place in the results, in input order, made whole in C; a vehicle's
        # result replaces its placeholder after sharing.
        results = self.results = dict.fromkeys(inp.evses, _PLACEHOLDER)
        draw, energy = self.draw, self.energy
        wishes, demands = self.wishes, self.demands
        slot_of = self.slot_of
        power_sum = 0.0
        idle_draw = 0
        for dev_id, ev in inp.evses.items():
            age = ev.state_age_s
            entry = verdicts_get(dev_id)
            # A cached verdict holds while what it was made from is the very same objects
            # and the state is still fresh; a new state that only moved its measurements
            # carries it over (verdict.refreshed).
            if (
                entry is not None
                and entry[0] is ev.config
                # Rare (a maximum just lowered): made anew, the draw check reads it.
                and not ev.commanded_above_max
                # Rare too (a car that takes less than it is offered): its wish reads it.
                and not ev.car_limit
                and entry[4] is context
                and (trusted or entry[3] is old_get(dev_id))
                and age is not None
                and age <= stale
            ):
                if entry[1] is ev.state:
                    verdict = entry[5]
                else:
                    verdict = _carried_over(dev_id, ev, entry[3], entry, site, verdicts)
            else:
                orig = old_get(dev_id)
                is_fresh = age is not None and age <= stale
                made = classify(dev_id, ev, orig, is_fresh, site)
                verdict = _made(dev_id, ev.state, made, orig, site, verdicts)
            (g, power, soft, d0, d1, d2, rotation, fixed, changed, result, vehicle, wish,
             demand, slots, lost, idle) = verdict  # fmt: skip
            power_sum += power
            if soft and hours:
                energy[dev_id] = soft * hours
            if rotation >= 0:
                # What it draws, to tell it apart from other load: at the time of the grid
                # reading, when the control loop paired them.
                paired = ev.counted_current
                if paired is not None:
                    d0, d1, d2 = grid_draw(rotation, *paired)
                if d0 or d1 or d2:  # many draw nothing (no car, or one not charging)
                    acc = draw[g]
                    acc[0] += d0
                    acc[1] += d1
                    acc[2] += d2
                    if idle:
                        # Not given current in the last run: what it still draws (a car just
                        # paused) is no surplus, or a surplus car would restart from the grid.
                        idle_draw += d0 + d1 + d2
                if not idle:
                    # A ramp credit is no surplus either: a car ramping up is counted at its
                    # report, and only its own rules see its credit (wishes_with_rules).
                    idle_draw += ev.ramp_credit
                spread = ev.draw_spread
                if spread is not NO_SPREAD and spread != NO_SPREAD:
                    self._take_spread(g, rotation, spread)
            if wish is not None:
                # add_wish, inline: most vehicles come here in most runs.
                wishes.append(wish)
                slot_of[dev_id] = slots
                if demand is not None:
                    demands.append(demand)
            elif result is not None:
                results[dev_id] = result
                if fixed is not None or changed is not None or lost:
                    self._take_rest(dev_id, g, fixed, changed, lost)
            else:
                self.vehicle_wish(vehicle, round(power), site)
        self.cons_power = power_sum
        self.idle_draw = idle_draw

    def _take_spread(self, g: int, rotation: int, spread: tuple[int, int, int]) -> None:
        """An EVSE in transition: its group's load figure may be low by what it may not have
        drawn (EvseInput.draw_spread)."""
        s0, s1, s2 = grid_draw(rotation, *spread)
        sp = self.spread[g]
        sp[0] += s0
        sp[1] += s1
        sp[2] += s2

    def _take_rest(
        self,
        dev_id: str,
        g: int,
        fixed: tuple[int, int, int] | None,
        changed: EvseMemory | None,
        lost: bool,
    ) -> None:
        """The rarer parts of a verdict: fixed load, a changed memory, a lost EVSE."""
        if fixed is not None:
            acc = self.fixed[g]
            acc[0] += fixed[0]
            acc[1] += fixed[1]
            acc[2] += fixed[2]
        if changed is not None:
            self.changed_mem[dev_id] = changed
        if lost:
            self.com_err.add(dev_id)

    def add_wish(self, wish: Wish, demand: Demand | None, slots: tuple[int, ...]) -> None:
        self.wishes.append(wish)
        self.slot_of[wish[0]] = slots
        if demand is not None:
            self.demands.append(demand)

    def vehicle_wish(self, vehicle: Vehicle | None, watts: int, site: Site) -> None:
        """The wish of a vehicle (drawing `watts` now) made in this run: now, or after all
        EVSEs are read when charging rules shape it."""
        assert vehicle is not None  # a verdict is a result or a vehicle
        ctx = site.context
        if has_rules(vehicle, ctx.users):
            self.deferred.append((vehicle, watts))
            return
        mem = vehicle.memory
        if not mem.plugged_at:
            # No plug time yet: its place among equals is the present.
            self._wish(vehicle, watts, site, None)
            return
        # Else the clock goes into its wish only as whether its minimum pause still runs
        # (wishes.make_wish): the wish made last time holds while that, its vehicle object
        # and its power stay the same (a paused car waits like this run after run).
        stopped = mem.stopped_at
        pausing = stopped is not None and site.now - stopped < vehicle.config.pause_min_time
        dev_id = vehicle.dev_id
        kept = site.clocked.get(dev_id)
        if kept is not None and kept[0] is vehicle and kept[1] == watts and kept[2] == pausing:
            self.add_wish(kept[3], kept[4], vehicle.slots)
            return
        wish, demand = self._wish(vehicle, watts, site, None)
        site.clocked[dev_id] = (vehicle, watts, pausing, wish, demand)

    def wishes_with_rules(
        self,
        inp: AllocationInput,
        site: Site,
        meters: Meters,
        surplus: int,
        solar_seen: dict[str, SolarSeen],
    ) -> None:
        """The deferred wishes, with the solar figures: per phase the vehicle uses, its share
        of the production or the surplus when its rules charge from that (solar_pools), else
        the whole figure."""
        week_minute = minute_of_week(site.now, inp.utc_offset_s)
        production = meters.production
        # One that does not charge yet is admitted to a pool with a deadband to spare (see
        # solar_share).
        from_production, from_surplus = solar_pools(
            self.deferred, site.context.users, production, surplus, solar_seen,
            inp.params.deadband,
        )  # fmt: skip
        for vehicle, watts in self.deferred:
            n = PHASE_COUNT[vehicle.local_mask]
            dev_id = vehicle.dev_id
            # Its own ramp is not lost surplus (its report lags what it draws), but nobody
            # else may count on it: a second car would start on surplus that is the first
            # car's draw still to come.
            own_ramp = inp.evses[dev_id].own_ramp // n
            rules = new(
                RuleContext,
                (week_minute, vehicle.max_current, from_production.get(dev_id, production // n),
                 from_surplus.get(dev_id, surplus // n) + own_ramp, site.variables),
            )  # fmt: skip
            self._wish(vehicle, watts, site, rules)

    def _wish(
        self, vehicle: Vehicle, watts: int, site: Site, rules: RuleContext | None
    ) -> tuple[Wish, Demand | None]:
        ctx = site.context
        g = vehicle.group
        cons = ctx.constraints
        wish, minimum = make_wish(vehicle, watts, ctx.users, rules, cons.min_only[g], site.now)
        demand = None
        if not wish.reason:
            demand = demand_for(vehicle, wish, minimum, site.now, ctx.resume_margin)
        self.add_wish(wish, demand, vehicle.slots)
        return wish, demand


def _hours_since(last_now: float | None, now: float, stale: float) -> float:
    """Hours the soft meter counts since the last run: the gap, at most `stale` seconds."""
    if last_now is None:
        return 0.0
    return min(max(0.0, now - last_now), stale) / 3600


def _carried_over(
    dev_id: str,
    ev: EvseInput,
    orig: EvseMemory | None,
    entry: Prepared,
    site: Site,
    verdicts: dict[str, Prepared],
) -> Verdict:
    """The verdict of an EVSE with a new state, whose cached verdict was made from the very
    same configuration, memory and context, and whose state is fresh: carried over when only
    the state's measurements moved (verdict.refreshed), else made anew (and cached when it
    may be)."""
    st = ev.state
    old_view = entry[2]
    if st is not None and old_view is not None:
        view = state_view(st)
        moved = refreshed(entry[5], entry[0], old_view, view)
        if moved is not None:
            verdicts[dev_id] = (entry[0], st, view, orig, entry[4], moved)
            return moved
    return _made(dev_id, st, classify(dev_id, ev, orig, True, site), orig, site, verdicts)


def _made(
    dev_id: str,
    st: EvseState | None,
    made: tuple[Verdict, bool],
    orig: EvseMemory | None,
    site: Site,
    verdicts: dict[str, Prepared],
) -> Verdict:
    """A verdict made anew, kept in the cache when it may be."""
    verdict, keep = made
    if keep:
        view = site.state_views.get(dev_id) if st is not None else None
        verdicts[dev_id] = (site.views[dev_id].config, st, view, orig, site.context, verdict)
    else:
        # One made from another memory must not stay (see AllocationCache.taken_back).
        verdicts.pop(dev_id, None)
    return verdict


def _observed_at_maximum(
    inp: AllocationInput, results: dict[str, EvseResult], variables: Mapping[str, float]
) -> None:
    """Observation (lb_enabled false): the EVSEs that share nothing are commanded at their
    maximum too (the computed figures stay visible), as far as access control allows."""
    for dev_id, res in results.items():
        if res.reason in OBSERVED_AT_MAXIMUM:
            ev = inp.evses[dev_id]
            if ev.config.users and res.user_id is None:
                # One with users that no user's session authorises stays off: a car
                # plugging in must not charge before its card is shown.
                continue
            max_cur, _ = resolve_max_current(ev.config, ev.state, variables)
            results[dev_id] = res._replace(
                charging_enabled=True, paused=False, charging_current=max_cur
            )


def _merged(
    old: Mapping[str, EvseMemory],
    changed: dict[str, EvseMemory],
    evses: Mapping[str, object],
) -> tuple[Mapping[str, EvseMemory], list[str]]:
    """The EVSEs' memory for the next run: the old one (the very same mapping when nothing
    changed) with the changes, without EVSEs that are gone; and those that are gone."""
    # EVSEs that are gone (the key views compare in C).
    gone: list[str] = []
    if not old.keys() <= evses.keys():
        gone = [d for d in old if d not in evses]
    if not changed and not gone:
        return old, gone
    merged = dict(old)
    merged.update(changed)
    if gone:
        merged = {d: m for d, m in merged.items() if d in evses}
    return merged, gone
