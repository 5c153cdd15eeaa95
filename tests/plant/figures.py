"""The figures of one plant run, computed from its trace (true currents, not readings).

* over a limit: a step where the true current on any phase of the main fuse or of a group is
  more than EXCESS_TOLERANCE_MA above that limit (the meters' noise is ±100 mA: a load
  manager that uses all the headroom may go over by the noise);
* an episode of excess is explained when it begins within the follow bound after a
  disturbance that raised the load (base load up, solar down, a limit lowered), ends within
  the follow bound after it, and is never larger than it would be with every car held at
  what it drew just before the disturbance, or at the highest command it may still have been
  following then (those of its last delay), or one the core sent before it could know of the
  disturbance (before the first meter reading taken after it arrived: a raise decided on
  the readings before a base-load step may go out as the step comes, and no load manager
  can take it back before it sees the step): "what the cars' old commands explain";
* settle time (as a step response's settling time: until the output stays within a band
  of its final value): from a disturbance until the last command change that left a command
  more than SETTLE_BAND_MA (or on/off) away from where it ends before the next disturbance,
  provided the commands then stayed within that band for QUIET_S
  (None: they did not, though the next disturbance left time for it; a window too short
  to tell is not judged unless a change came later than the settle bound). The settle bound
  is SETTLE_BOUND_S, or longer for a plant whose slowest car and meter make the chain of a
  start longer (settle_bound_s), or for a window in which a car rose further than two raises
  take it, what that rise takes in raises of ramp_step (rise_chain_s), or with a pause in
  it, the pause's own time (window_bound_s);
* steady state: from the settle bound after a disturbance to the next one; changes per
  minute count every change of a command there, per EVSE;
* headroom used: at the end of each steady window, for each EVSE the core lets charge with
  less than its car could take, the most used of its limits (constraint and phase: what
  the EVSEs draw there over the headroom, or the own demand of the cars the core lets
  charge when that is smaller); the least of those over the EVSEs;
* paused while the minimum fits: an EVSE that reports (the core cannot know of a car at one
  that never does) whose car wants to charge is switched off while its
  minimum, with those of the EVSEs that are on, fits every limit with fit_margin_ma to
  spare; at the moment it is paused, or for longer than RESUME_GRACE_S after the minimum
  began to fit and its pause_min_time plus the resume's own work (the EVSEs cut to make
  room follow, the offer holds settle_time, a cycle).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from service.core.models import Params
from tests.plant.harness import SentCommand, Trace
from tests.plant.model import Command, Disturbance, PlantSpec, grid_phase

EXCESS_TOLERANCE_MA = 200
# The control law's deadband (300 mA) plus the meters' noise (±100 mA): a budget that drifts
# as the held peak of a noisy reading ages may let one raise of the deadband's size through
# long after a disturbance. That is a steady-state change (counted there), not settling.
SETTLE_BAND_MA = 500
QUIET_S = 20.0
SETTLE_BOUND_S = 30.0
# What "fits" needs to spare: the admission's resume_margin (1000 mA by default), plus twice
# the meters' noise (fit_margin_ma): the core sees the other load through readings whose
# held peak may read that much high, so a minimum that fits by less than the noise may look
# to it as one that does not.
FIT_MARGIN_MA = 1000
RESUME_GRACE_S = 30.0
HEADROOM_AVERAGE_S = 5.0
# An EVSE offered this much less than its car could take is held back by a limit.
HELD_BACK_MA = 500


@dataclass(frozen=True)
class Episode:
    start: float
    end: float
    peak_ma: int
    where: str
    disturbance: float | None  # the disturbance it is linked to
    unexplained_ma: int  # the largest excess beyond what the cars' old draws explain

    @property
    def within(self) -> float:
        """Seconds from its disturbance (or its own start) to its end."""
        return self.end - (self.disturbance if self.disturbance is not None else self.start)


@dataclass(frozen=True)
class Figures:
    seconds_over: float
    peak_excess_ma: int
    episodes: tuple[Episode, ...]
    follow_bound_s: float
    settle_s: tuple[tuple[float, float | None], ...]  # (disturbance t, settle s or None)
    settle_bounds: tuple[float, ...]  # per entry of settle_s: its bound (window_bound_s)
    changes_per_min: dict[str, float]
    steady_minutes: float
    headroom_used: float | None
    paused_while_min_fit: tuple[tuple[float, str, str], ...]  # (t, dev_id, why)
    runs: int
    failures: int

    @property
    def max_changes_per_min(self) -> float:
        return max(self.changes_per_min.values(), default=0.0)

    @property
    def max_settle_s(self) -> float | None:
        """The longest settle time; None when some disturbance never settled."""
        found = [s for _, s in self.settle_s]
        if any(s is None for s in found):
            return None
        return max((s for s in found if s is not None), default=0.0)

    def problems(self) -> list[str]:
        """Every claim of issue 12 this run breaks, in words (empty: none)."""
        out: list[str] = []
        for e in self.episodes:
            if e.disturbance is None:
                out.append(
                    f"{e.where}: {e.peak_ma} mA over from {e.start:.1f} s to {e.end:.1f} s "
                    "without a disturbance"
                )
            elif e.within > self.follow_bound_s:
                out.append(
                    f"{e.where}: over until {e.end:.1f} s, {e.within:.1f} s after the "
                    f"disturbance at {e.disturbance:.1f} s (bound {self.follow_bound_s:.1f} s)"
                )
            if e.unexplained_ma > EXCESS_TOLERANCE_MA:
                out.append(
                    f"{e.where}: {e.unexplained_ma} mA more than the cars' old draws explain "
                    f"at {e.start:.1f}..{e.end:.1f} s"
                )
        for (t, settle), bound in zip(self.settle_s, self.settle_bounds, strict=True):
            if settle is None or settle > bound:
                out.append(f"not settled within {bound:.1f} s after {t:.1f} s: {settle}")
        for dev_id, rate in self.changes_per_min.items():
            if rate > 2.0:
                out.append(f"{dev_id}: {rate:.1f} command changes per minute in steady state")
        if self.headroom_used is not None and self.headroom_used < 0.9:
            out.append(f"only {self.headroom_used:.0%} of the headroom used once settled")
        for t, dev_id, why in self.paused_while_min_fit:
            out.append(f"{dev_id} paused at {t:.1f} s while its minimum fits ({why})")
        if self.failures:
            out.append(f"{self.failures} runs of the core failed")
        return out


def known_at(d: Disturbance, tr: Trace, bound: float) -> float:
    """When the core could first know of a disturbance: at once for a change of its
    parameters; for a measured one, when the first meter reading taken after it arrived
    (at most the follow bound later, which counts that reading's way)."""
    if not d.measured:
        return d.t
    return min((at for at, ts in tr.meter_readings if ts >= d.t - 1e-9), default=d.t + bound)


def settle_bound_s(spec: PlantSpec) -> float:
    """How long the site may take to settle after a disturbance: SETTLE_BOUND_S, or, when
    longer, the chain a car that can start only after the disturbance goes through: the
    other load's fall counts after `load_hold_time`, the offer waits `settle_time`, then the
    start chain (start_chain_s). A window in which an EVSE was paused gets its
    pause_min_time on top (window_bound_s)."""
    params = Params.model_validate(dict(spec.extra_params))
    chain = params.load_hold_time + params.settle_time + start_chain_s(spec)
    return max(SETTLE_BOUND_S, chain)


def _reading_s(spec: PlantSpec) -> float:
    """The wait for the grid reading that shows a raise taken up: poll, jitter, lag, a cycle
    and the command's way."""
    reading = max(
        (m.poll_period_s + m.poll_jitter_s + m.lag_s[1] for m in spec.meters if not m.silent),
        default=0.0,
    )
    return (
        reading
        + spec.cycle_time_ms / 1000
        + max((w.command_delay_s for w in spec.wallboxes), default=0.0)
    )


def start_chain_s(spec: PlantSpec) -> float:
    """Two raises (the start at the minimum, one `ramp_step`), each taken up only after the
    slowest car's delay and ramp and the grid reading that shows it (_reading_s)."""
    params = Params.model_validate(dict(spec.extra_params))
    car = max(
        (
            w.car.delay_s + min(params.ramp_step or w.max_ma, w.max_ma) / w.car.ramp_up_ma_per_s
            for w in spec.wallboxes
            if w.car is not None
        ),
        default=0.0,
    )
    return 2 * (car + _reading_s(spec))


def rise_chain_s(
    spec: PlantSpec, changes: dict[str, list[tuple[float, Command]]], t0: float, t1: float
) -> float:
    """The raises an EVSE's rise in the window from t0 to t1 takes, for the EVSE whose rise
    takes longest: from the lowest command in force there to the highest, a start at the
    minimum when it was off, then steps of `ramp_step` (the control law waits for a car to
    take up a raise before the next), each after the car's delay and the reading that shows
    it, and the car's ramp over the whole rise. A car that goes far at 1 A/s needs more
    than the two raises of start_chain_s; what its rise needs, not more, is allowed."""
    params = Params.model_validate(dict(spec.extra_params))
    reading = _reading_s(spec)
    chain = 0.0
    for w in spec.wallboxes:
        seq = changes.get(w.dev_id, [])
        if w.car is None or not seq:
            continue
        before = [c.offer_ma for t, c in seq if t < t0]
        inside = [c.offer_ma for t, c in seq if t0 <= t < t1]
        if not inside:
            continue
        low = min([*before[-1:], *inside])
        rise = max(inside) - low
        if rise <= 0:
            continue
        step = params.ramp_step or rise
        started = 1 if low == 0 else 0
        raises = started + math.ceil(max(0, rise - (w.min_ma if started else 0)) / step)
        chain = max(chain, raises * (w.car.delay_s + reading) + rise / w.car.ramp_up_ma_per_s)
    return chain


def window_bound_s(
    spec: PlantSpec, changes: dict[str, list[tuple[float, Command]]], t0: float, t1: float
) -> float:
    """The settle bound of the window from the disturbance at t0 to the next at t1: an EVSE
    paused there, or before it and still within its pause_min_time, may not resume before
    that time is over, then
    the resume's own work (the EVSEs cut for it follow, the offer holds settle_time, a
    cycle) and the start chain."""
    params = Params.model_validate(dict(spec.extra_params))
    hold = params.load_hold_time + params.settle_time
    bound = max(settle_bound_s(spec), hold + rise_chain_s(spec, changes, t0, t1))
    resume = params.follow_time + params.settle_time + spec.cycle_time_ms / 1000
    pause_min = {w.dev_id: w.pause_min_time_s for w in spec.wallboxes}
    for dev_id, seq in changes.items():
        for k in range(1, len(seq)):
            t, cmd = seq[k]
            # Paused in the window, or shortly before it and still within pause_min_time.
            since = t0 - pause_min.get(dev_id, 0)
            if since <= t < t1 and cmd.offer_ma <= 0 < seq[k - 1][1].offer_ma:
                paused = t - t0 + pause_min.get(dev_id, 0) + resume + start_chain_s(spec)
                bound = max(bound, paused)
    return bound


def follow_bound_s(spec: PlantSpec) -> float:
    """How long the measured current may stay over a limit after a disturbance: the grid
    meter's next reading (poll interval + jitter + lag), one cycle, the command's way to the
    wallbox, then the slowest car's delay and decrease, plus two simulation steps."""
    car = 0.0
    for w in spec.wallboxes:
        if w.car is None:
            continue
        down = 0.0
        if w.car.ramp_down_ma_per_s is not None:
            down = min(w.max_ma, w.car.max_ma) / w.car.ramp_down_ma_per_s
        car = max(car, w.car.delay_s + down)
    return _reading_s(spec) + car + 2 * spec.dt_s


class _Constraint:
    def __init__(self, where: str, members: list[str], with_other: bool) -> None:
        self.where = where
        self.members = members
        self.with_other = with_other


def _constraints(spec: PlantSpec) -> list[tuple[_Constraint, int | None]]:
    """(constraint, fixed limit or None for the main fuse whose limit may change)."""
    parents = {g.id: g.parent for g in spec.groups}

    def chain(group: int) -> list[int]:
        out = []
        seen = set()
        while group and group in parents and group not in seen:
            seen.add(group)
            out.append(group)
            group = parents[group]
        return out

    out: list[tuple[_Constraint, int | None]] = [
        (_Constraint("main", [w.dev_id for w in spec.wallboxes], True), None)
    ]
    for g in spec.groups:
        members = [w.dev_id for w in spec.wallboxes if g.id in chain(w.group)]
        out.append((_Constraint(f"group {g.id}", members, False), g.max_ma))
    return out


def _current(tr: Trace, c: _Constraint, i: int) -> list[int]:
    cur = list(tr.other[i]) if c.with_other else [0, 0, 0]
    for dev_id in c.members:
        d = tr.draws[dev_id][i]
        cur[0] += d[0]
        cur[1] += d[1]
        cur[2] += d[2]
    return cur


def _changes(commands: list[SentCommand]) -> dict[str, list[tuple[float, Command]]]:
    """Per EVSE, each command that differs from the one before it (the refreshes repeat)."""
    out: dict[str, list[tuple[float, Command]]] = {}
    for sent in commands:
        seq = out.setdefault(sent.dev_id, [])
        if not seq or seq[-1][1] != sent.command:
            seq.append((sent.t, sent.command))
    return out


def _outside(cmd: Command, final: Command) -> bool:
    """Whether a command is not yet settled at `final`: on/off differs, or it is more than
    SETTLE_BAND_MA away."""
    return (cmd.offer_ma > 0) != (final.offer_ma > 0) or abs(
        cmd.offer_ma - final.offer_ma
    ) > SETTLE_BAND_MA


def compute(spec: PlantSpec, tr: Trace) -> Figures:
    bound = follow_bound_s(spec)
    n = len(tr.t)
    dt = spec.dt_s
    constraints = _constraints(spec)
    disturbances = sorted(spec.disturbances, key=lambda d: d.t)
    raising = [d.t for d in disturbances if d.raises_load]

    # -- excess ----------------------------------------------------------------------------
    car_phases = {w.dev_id: _car_phases(spec, w.dev_id) for w in spec.wallboxes}
    lag_steps = {
        w.dev_id: (0 if w.car is None else round(w.car.delay_s / dt) + 1) for w in spec.wallboxes
    }
    known = {d.t: known_at(d, tr, bound) for d in disturbances if d.raises_load}
    # A command sent in step k reaches its wallbox at the first step after its delay, and
    # the trace records that step's offer before the step's events: at k + 2 + delay // dt.
    # The last one sent before step known_i shows at known_i + 1 + delay // dt.
    delivery_steps = {
        w.dev_id: math.floor(w.command_delay_s / dt + 1e-9) + 1 for w in spec.wallboxes
    }
    over = [0] * n
    where_at = [""] * n
    unexplained = [0] * n
    for i in range(n):
        t = tr.t[i]
        linked = max((d for d in raising if d <= t + 1e-9 and t - d <= bound), default=None)
        base_i = None
        known_i = 0
        if linked is not None:
            base_i = max(0, min(n - 1, round(linked / dt) - 1))
            known_i = max(base_i, min(i, round(known[linked] / dt)))
        for c, fixed in constraints:
            limit = tr.main_limit[i] if fixed is None else fixed
            cur = _current(tr, c, i)
            for p in range(3):
                excess = cur[p] - limit
                if excess > over[i]:
                    over[i] = excess
                    where_at[i] = f"{c.where} L{p + 1}"
                if excess <= EXCESS_TOLERANCE_MA:
                    continue
                if base_i is None:
                    unexplained[i] = max(unexplained[i], excess)
                    continue
                # The same constraint with every car held at what it drew before the
                # disturbance, or at most the command it had then (a car may still be
                # ramping up to it).
                held = tr.other[i][p] if c.with_other else 0
                for dev_id in c.members:
                    before = tr.draws[dev_id][base_i][p]
                    if p in car_phases[dev_id]:
                        # A car still follows the offers of its last delay, and those the
                        # core sent before it could know of the disturbance.
                        first = max(0, base_i - lag_steps[dev_id])
                        last_i = min(i, known_i + delivery_steps[dev_id])
                        before = max(before, *tr.offers[dev_id][first : last_i + 1])
                    held += min(tr.draws[dev_id][i][p], before)
                unexplained[i] = max(unexplained[i], excess - max(0, held - limit))
    episodes: list[Episode] = []
    i = 0
    while i < n:
        if over[i] <= EXCESS_TOLERANCE_MA:
            i += 1
            continue
        j = i
        while j + 1 < n and over[j + 1] > EXCESS_TOLERANCE_MA:
            j += 1
        start, end = tr.t[i], tr.t[j] + dt
        linked = max((d for d in raising if d <= start + 1e-9 and start - d <= bound), default=None)
        peak_i = max(range(i, j + 1), key=lambda k: over[k])
        episodes.append(
            Episode(
                start,
                end,
                over[peak_i],
                where_at[peak_i],
                linked,
                max(unexplained[i : j + 1]),
            )
        )
        i = j + 1
    seconds_over = sum(e.end - e.start for e in episodes)
    peak = max((e.peak_ma for e in episodes), default=max(0, max(over, default=0)))

    # -- settle and steady state -----------------------------------------------------------
    changes = _changes(tr.commands)
    starts = [0.0] + [d.t for d in disturbances if d.t > 0]
    ends = [*starts[1:], spec.duration_s]
    settle: list[tuple[float, float | None]] = []
    counts: dict[str, int] = {w.dev_id: 0 for w in spec.wallboxes}
    steady_s = 0.0
    windows: list[tuple[float, float]] = []
    bounds: list[float] = []
    for t0, t1 in zip(starts, ends, strict=True):
        settle_bound = window_bound_s(spec, changes, t0, t1)
        last: float | None = None  # the last change that left a command outside the band
        for seq in changes.values():
            inside = [k for k in range(1, len(seq)) if t0 <= seq[k][0] < t1]
            if not inside:
                continue
            final = seq[inside[-1]][1]
            for k in inside:
                if _outside(seq[k - 1][1], final):
                    last = seq[k][0] if last is None else max(last, seq[k][0])
        if t1 - t0 >= QUIET_S:
            if last is None:
                settle.append((t0, 0.0))
                bounds.append(settle_bound)
            elif t1 - last >= QUIET_S or last - t0 > settle_bound:
                settle.append((t0, last - t0))
                bounds.append(settle_bound)
            elif t1 - t0 >= settle_bound + QUIET_S:
                settle.append((t0, None))
                bounds.append(settle_bound)
            # else: the next disturbance came too soon to tell; not judged.
        steady_from = t0 + settle_bound
        if t1 - steady_from >= 20.0:
            windows.append((steady_from, t1))
            steady_s += t1 - steady_from
            for dev_id, seq in changes.items():
                counts[dev_id] = counts.get(dev_id, 0) + sum(
                    1 for k in range(1, len(seq)) if steady_from <= seq[k][0] < t1
                )
    minutes = steady_s / 60
    per_min = {d: (c / minutes if minutes else 0.0) for d, c in counts.items()}

    # -- headroom --------------------------------------------------------------------------
    in_force = _in_force(spec, tr, changes)
    headroom = None
    if not any(w.charging_rules for w in spec.wallboxes):
        fractions = [
            f
            for _, t1 in windows
            if (f := _headroom_used(spec, tr, constraints, in_force, t1)) is not None
        ]
        headroom = min(fractions) if fractions else None

    return Figures(
        seconds_over=round(seconds_over, 3),
        peak_excess_ma=peak,
        episodes=tuple(episodes),
        follow_bound_s=bound,
        settle_s=tuple(settle),
        settle_bounds=tuple(bounds),
        changes_per_min=per_min,
        steady_minutes=minutes,
        headroom_used=headroom,
        paused_while_min_fit=tuple(_paused_while_fit(spec, tr, constraints, in_force)),
        runs=tr.runs,
        failures=tr.failures,
    )


def _car_phases(spec: PlantSpec, dev_id: str) -> tuple[int, ...]:
    w = next(w for w in spec.wallboxes if w.dev_id == dev_id)
    if w.car is None:
        return ()
    return tuple(grid_phase(w.rotation, i) for i in range(w.car.phases))


def _demand(spec: PlantSpec, dev_id: str) -> int:
    w = next(w for w in spec.wallboxes if w.dev_id == dev_id)
    return 0 if w.car is None else min(w.max_ma, w.car.max_ma)


def _reserved(spec: PlantSpec, c: _Constraint, p: int, t: float) -> int:
    """What the core rightly keeps for EVSEs that never report: their maximum."""
    return sum(
        w.max_ma
        for w in spec.wallboxes
        if w.report == "silent"
        and w.dev_id in c.members
        and w.added_at_s <= t
        and p in _budget_phases(spec, w.dev_id, False)
    )


def _headroom_used(
    spec: PlantSpec,
    tr: Trace,
    constraints: list[tuple[_Constraint, int | None]],
    in_force: dict[str, list[Command | None]],
    t1: float,
) -> float | None:
    """At the end of a steady window, how fully the limits that hold the EVSEs back are
    used: for each EVSE the core lets charge with less than its car could take, the most
    used of its limits (constraint and phase it draws on: drawn / min(headroom, demand));
    the least of those over the EVSEs. An EVSE held back while none of its limits is near
    full is headroom left unused; a limit that cannot fill because another one above or
    beside it is full (a sub-fuse under a main fuse that binds first) is not. None when
    no EVSE is held back. The demand is that of the EVSEs the core lets charge: whether a
    paused one should charge is the pause check's question."""
    end = min(len(tr.t) - 1, round(t1 / spec.dt_s) - 1)
    start = max(0, end - round(HEADROOM_AVERAGE_S / spec.dt_s))
    charging = {
        d
        for d in tr.draws
        if tr.wants[d][end] and (cmd := in_force[d][end]) is not None and cmd.offer_ma > 0
    }
    used: dict[tuple[int, int], float] = {}  # (constraint, phase) → used fraction
    for k, (c, fixed) in enumerate(constraints):
        limit = tr.main_limit[end] if fixed is None else fixed
        for p in range(3):
            other = max(0, tr.other[end][p]) if c.with_other else 0
            room = limit - other - _reserved(spec, c, p, tr.t[end])
            demand = sum(
                _demand(spec, d) for d in c.members if d in charging and p in _car_phases(spec, d)
            )
            if demand <= 0:
                continue
            if room <= 0:
                used[(k, p)] = 1.0
                continue
            drawn = sum(
                sum(tr.draws[d][i][p] for d in c.members) for i in range(start, end + 1)
            ) / (end + 1 - start)
            used[(k, p)] = drawn / min(room, demand)
    fractions = []
    for d in charging:
        cmd = in_force[d][end]
        if cmd is None or cmd.offer_ma >= _demand(spec, d) - HELD_BACK_MA:
            continue  # the car gets what it can take
        mine = [
            used[(k, p)]
            for k, (c, _) in enumerate(constraints)
            if d in c.members
            for p in _car_phases(spec, d)
            if (k, p) in used
        ]
        if mine:
            fractions.append(max(mine))
    return min(fractions) if fractions else None


def _minimums_fit(
    spec: PlantSpec,
    tr: Trace,
    constraints: list[tuple[_Constraint, int | None]],
    i: int,
    on: set[str],
    first_draw: dict[str, int],
) -> bool:
    mins = {w.dev_id: w.min_ma for w in spec.wallboxes}
    phases = {d: _budget_phases(spec, d, i >= first_draw[d]) for d in on}
    margin = fit_margin_ma(spec)
    for c, fixed in constraints:
        limit = tr.main_limit[i] if fixed is None else fixed
        for p in range(3):
            load = max(0, tr.other[i][p]) if c.with_other else 0
            load += _reserved(spec, c, p, tr.t[i])
            load += sum(mins[d] for d in c.members if d in on and p in phases[d])
            # A car the core paused that still draws (it has not followed yet, or ignores
            # the pause) takes what it draws: no command can take that current away sooner
            # (plugging 39: a third car still drawing after its pause held L2 at 50.5 A on
            # a 40 A fuse when the core paused a second one).
            load += sum(tr.draws[e][i][p] for e in c.members if e not in on)
            if load > limit - margin:
                return False
    return True


def fit_margin_ma(spec: PlantSpec) -> int:
    """FIT_MARGIN_MA plus twice the noise of the noisiest meter of the plant."""
    return FIT_MARGIN_MA + 2 * max((m.noise_ma for m in spec.meters), default=0)


def _budget_phases(spec: PlantSpec, dev_id: str, has_drawn: bool) -> tuple[int, ...]:
    """The phases the core can know the EVSE uses: configured, or seen drawing; a car that
    never drew counts on all three (as the core must assume)."""
    w = next(w for w in spec.wallboxes if w.dev_id == dev_id)
    if w.used_phases:
        return tuple(grid_phase(w.rotation, k) for k in range(3) if w.used_phases >> k & 1)
    if has_drawn:
        return _car_phases(spec, dev_id)
    return (0, 1, 2)


def _in_force(
    spec: PlantSpec, tr: Trace, changes: dict[str, list[tuple[float, Command]]]
) -> dict[str, list[Command | None]]:
    """The command in force at each step (as sent, not as applied), per EVSE."""
    n = len(tr.t)
    in_force: dict[str, list[Command | None]] = {}
    for w in spec.wallboxes:
        seq = changes.get(w.dev_id, [])
        col: list[Command | None] = [None] * n
        k = 0
        cur: Command | None = None
        for i in range(n):
            while k < len(seq) and seq[k][0] <= tr.t[i] + 1e-9:
                cur = seq[k][1]
                k += 1
            col[i] = cur
        in_force[w.dev_id] = col
    return in_force


def _paused_while_fit(
    spec: PlantSpec,
    tr: Trace,
    constraints: list[tuple[_Constraint, int | None]],
    in_force: dict[str, list[Command | None]],
) -> list[tuple[float, str, str]]:
    dt = spec.dt_s
    n = len(tr.t)
    pause_min = {w.dev_id: w.pause_min_time_s for w in spec.wallboxes}
    # After its pause_min_time a resume takes its own time: the EVSEs cut to make room
    # follow (follow_time), the offer holds (settle_time), the next cycle sends it.
    params = Params.model_validate(dict(spec.extra_params))
    resume_work = params.follow_time + params.settle_time + spec.cycle_time_ms / 1000
    swap = round(1.0 / dt)
    first_draw = {
        d: next((i for i, x in enumerate(col) if any(x)), n) for d, col in tr.draws.items()
    }
    found: list[tuple[float, str, str]] = []
    for w in spec.wallboxes:
        if w.charging_rules:
            continue  # its rules, not the limits, may ask for nothing
        if w.report == "silent":
            # The core never hears it: it cannot know a car wants to charge there (it counts
            # the wallbox at its maximum as load, and commands it nothing).
            continue
        d = w.dev_id
        paused_since: float | None = None
        fit_since: float | None = None
        reported = False
        for i in range(1, n):
            cmd, before = in_force[d][i], in_force[d][i - 1]
            off = cmd is not None and cmd.offer_ma <= 0 and tr.wants[d][i]
            if not off:
                paused_since = fit_since = None
                reported = False
                continue
            # The EVSEs on around this moment: a swap (one paused so that another starts,
            # within a second) is a choice between minimums, not a pause while one fits.
            on = {
                e
                for e in in_force
                if e != d
                and tr.plugged[e][i]
                and any(
                    (c := in_force[e][k]) is not None and c.offer_ma > 0
                    for k in range(i - 1, min(n, i + swap + 1))
                )
            }
            fits = _minimums_fit(spec, tr, constraints, i, on | {d}, first_draw)
            if paused_since is None:
                paused_since = tr.t[i]
                if before is not None and before.offer_ma > 0 and fits:
                    found.append((tr.t[i], d, "when it was paused"))
                    reported = True
            fit_since = (fit_since if fit_since is not None else tr.t[i]) if fits else None
            if fits and not reported and fit_since is not None:
                allowed = (
                    max(paused_since + pause_min[d] + resume_work, fit_since + RESUME_GRACE_S) + dt
                )
                if tr.t[i] > allowed + w.command_delay_s:
                    found.append((tr.t[i], d, f"fits since {fit_since:.1f} s"))
                    reported = True
    return found


def timeline(spec: PlantSpec, tr: Trace, every_s: float = 1.0) -> str:
    """The run as a table, one row per `every_s`: true main current, each EVSE's draw
    (grid phases, A) and offer, and the commands sent in between. For reading a failure."""
    step = max(1, round(every_s / spec.dt_s))
    changes = _changes(tr.commands)
    rows = []
    for i in range(0, len(tr.t), step):
        t = tr.t[i]
        main = list(tr.other[i])
        for d in tr.draws:
            for p in range(3):
                main[p] += tr.draws[d][i][p]
        cells = [f"{t:6.1f}", "main " + "/".join(f"{c / 1000:5.1f}" for c in main)]
        cells.append(f"lim {tr.main_limit[i] / 1000:4.1f}")
        for d in tr.draws:
            draw = "/".join(f"{c / 1000:4.1f}" for c in tr.draws[d][i])
            sent = [
                f"{c.offer_ma / 1000:.1f}" for ct, c in changes.get(d, []) if t - every_s < ct <= t
            ]
            cells.append(
                f"{d} {draw} off {tr.offers[d][i] / 1000:4.1f}"
                + (f" cmd {','.join(sent)}" if sent else "")
            )
        rows.append("  ".join(cells))
    return "\n".join(rows)
