"""The control law: from the allocation's currents to the commands, on a plant that lags.

The allocation (allocation/) answers "what may each EVSE have now" for one snapshot of
readings. The wallboxes and cars answer late: a car follows a new current within seconds
(IEC 61851 allows about 5 s) and ramps, and meters are read a moment after the wallboxes
report. Sent as they are, the allocation's answers overshoot a fuse (a raise goes out while
the car whose current was cut still draws its old one) and oscillate (every reading moves the
answer a little). The control law stands between them, with memory of its own per EVSE
(`EvseControl`); see docs/load-balancing.md, "Control in the loop":

* **Decreases go out at once.** A cut smaller than `deadband` is held back only while every
  limit still holds with the old command.
* **Follow time.** An EVSE whose command was lowered counts at the higher of its measured
  draw and its old command until a report taken after the cut shows it followed, or
  `follow_time` has passed. Increases of other EVSEs must fit beside that.
* **Increases** go out only once the allocation has offered more for `settle_time` (and
  `settle_time` after the EVSE's last change), in steps of at most `ramp_step`, and only when
  they are at least `deadband`. Every increase must fit the budgets of all the EVSE's
  constraint slots (groups, phases, caps) beside what the others are committed to, in the
  allocation's order of precedence.
* **Resume with hysteresis.** A vehicle that has charged in this session and stopped is
  offered current again only when its minimum plus `resume_margin` (or its whole target,
  when smaller) fits (the allocation's admission; with the other load held at its peak of
  `load_hold_time`, "fits" means "has fitted that long"), after its `pause_min_time`; it
  then waits `resume_time` more (default 0). A first start waits `settle_time`.
* **Car limits.** A car that has not taken up a raise, and draws steadily less, limits itself:
  what it draws plus CAR_LIMIT_MARGIN_MA is remembered (`EvseControl.car_limit`) and caps its
  target in the next runs (EvseInput.car_limit), so that the others get the rest of its share.
  It is dropped when the car draws close to it, stops or leaves, or after CAR_LIMIT_FORGET_S.

An EVSE never gets more than the allocation gave it, so every limit the allocation keeps
holds for the commands too, except for the current of EVSEs still following a cut, which the
increases of the others leave room for. Pure: no I/O, the time comes in.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Final, NamedTuple

from service.core.allocation import (
    CHARGING_STATES,
    R_LIMITED,
    R_NO_CURRENT,
    R_NO_VEHICLE,
    Allocation,
    AllocationInput,
    EvseMemory,
    EvseResult,
    Memory,
    effective_minimum,
)
from service.core.allocation.views import new
from service.core.models import Params

# A car counts as following a cut when it draws at most this much above the new command
# (meters and the car's own regulation are not exact).
FOLLOW_TOLERANCE_MA = 500
R_SETTLING = "settling"  # the allocation offers current; the control law waits for it to hold
# A car that did not take up a raise limits itself (its own charger, its battery): what it
# was measured drawing, plus this margin, is its car limit, which the allocation caps its
# share at (EvseInput.car_limit) so that the others get the rest. More than
# FOLLOW_TOLERANCE_MA, or a car drawing its limit would count as drawing its command.
CAR_LIMIT_MARGIN_MA = 1000
# Learned only when it frees at least this much of what it is given, its command or its share
# (the allocation's offer) if more, for the others (less is not worth the commands it takes).
# Its share counts: a car that did not take up a raise gets no further raise, so its command
# may stay within this gain of its draw while its share is well above (mixed plant 25).
CAR_LIMIT_MIN_GAIN_MA = 1000
# A raise not taken up after follow_time teaches a car limit once two of the car's reports
# at least CAR_LIMIT_STEADY_S apart show it steady (within CAR_LIMIT_STEADY_MA: a slow car,
# started late at 1 A/s, may still be ramping), or at the latest CAR_LIMIT_LEARN_FOLLOWS
# follow_times after the raise.
CAR_LIMIT_STEADY_S = 1.0
CAR_LIMIT_STEADY_MA = 300
CAR_LIMIT_LEARN_FOLLOWS = 2
# A learned car limit is dropped after this long, and at once when the car draws within
# FOLLOW_TOLERANCE_MA of it (it may take more), stops charging or is unplugged.
CAR_LIMIT_FORGET_S = 600.0
_HELD_BACK = frozenset((R_LIMITED, R_NO_CURRENT))  # results held back by a limit


@dataclass(frozen=True, slots=True)
class ControlSettings:
    follow_s: float = 6.0
    settle_s: float = 3.0
    ramp_step: int = 6000
    deadband: int = 300
    resume_s: float = 0.0

    @classmethod
    def from_params(cls, params: Params) -> ControlSettings:
        return cls(
            follow_s=params.follow_time,
            settle_s=params.settle_time,
            ramp_step=params.ramp_step,
            deadband=params.deadband,
            resume_s=params.resume_time,
        )


class EvseControl(NamedTuple):
    """What the control law keeps per EVSE between runs."""

    command: int = 0  # mA last commanded (0: none, paused or off)
    changed_at: float = -math.inf  # when `command` last changed
    lowered_at: float | None = None  # when it was last cut, while it may still follow
    lingering: int = 0  # mA per phase it may still draw until it has followed the cut
    up_since: float | None = None  # since when the allocation has offered more
    charged: bool = False  # it has had current in this session: a new start is a resume
    raised_at: float | None = None  # when the command was last raised
    # mA per phase its car takes at most, learned from a raise it did not take up, with
    # CAR_LIMIT_MARGIN_MA (EvseInput.car_limit); 0: none. And when it was learned.
    car_limit: int = 0
    car_limit_at: float = 0.0
    # A report of a raise not taken up (its time, the mA it showed), to tell a car that
    # limits itself from one still ramping.
    draw_seen: tuple[float, int] | None = None
    # Raised before its car followed a cut: the command it was cut to (mA per phase), which
    # its car may still be going down to while it ramps toward the raise (ramp_floor).
    cut_in_flight: int | None = None
    # Cut before its car took up a raise: until then a report that shows it below the cut
    # proves nothing (its car may still take the raise up, then follow the cut).
    raise_pending_until: float | None = None


NO_CONTROL = EvseControl()

# The params that switch every wait of the control law off (settle, steps, deadband and its
# margins, resume hysteresis, the other-load hold and with it the ramp credit): commands are
# then the allocation's answers at once. For tests of the plumbing and benchmarks of cuts.
NO_WAITS: Final[Mapping[str, int]] = {
    "settle_time": 0,
    "ramp_step": 0,
    "deadband": 0,
    "resume_margin": 0,
    "resume_time": 0,
    "load_hold_time": 0,
}


@dataclass(frozen=True, slots=True)
class ControlMemory:
    evses: Mapping[str, EvseControl] = field(default_factory=dict)

    def evse(self, dev_id: str) -> EvseControl:
        return self.evses.get(dev_id, NO_CONTROL)

    def following(self, dev_id: str, now: float, window_s: float) -> bool:
        """Whether an EVSE was cut less than `window_s` ago and has not been seen to follow."""
        ctl = self.evses.get(dev_id)
        return ctl is not None and is_following(ctl, now, window_s)

    def ramping_to(
        self,
        dev_id: str,
        now: float,
        window_s: float,
        *,
        rising_window_s: float = 0.0,
        still_rising: Callable[[], bool] | None = None,
    ) -> int | None:
        """The command an EVSE was raised to less than `window_s` ago (it may still be
        ramping up to it), or less than `rising_window_s` ago while `still_rising()` says
        its reports still rise (asked only then), else None (see pairing.counted_current).
        One cut in `window_s` and not yet seen to follow counts at its new command too: a
        car cut while it was still ramping up may be anywhere below its old command, and
        at a start its report may not show the current the grid reading already does."""
        ctl = self.evses.get(dev_id)
        if ctl is None or ctl.command <= 0:
            return None
        if in_transition(ctl, now, window_s):
            return ctl.command
        if (
            rising_window_s > window_s
            and still_rising is not None
            and in_transition(ctl, now, rising_window_s)
            and still_rising()
        ):
            return ctl.command
        return None

    def only_rising(self, dev_id: str) -> bool:
        """Whether its commands since its car last stood still were raises only: raised
        (a cut clears that) after its car had followed any cut. What its car draws then
        only rises toward the command, so a report after a grid reading bounds what it drew
        at that reading (pairing.counted_current)."""
        ctl = self.evses.get(dev_id)
        return ctl is not None and ctl.raised_at is not None and ctl.cut_in_flight is None

    def ramp_floor(self, dev_id: str, ramping: int) -> int:
        """The least an EVSE that ramps toward `ramping` may draw by its commands (mA per
        phase): `ramping`, or the command of a cut its car had not followed when it was
        raised (it may still be going down to that before it turns; pairing.draw_spread)."""
        ctl = self.evses.get(dev_id)
        # Set by a raise, cleared by a cut (_remember): while set, the raise is the last change.
        if ctl is None or ctl.cut_in_flight is None:
            return ramping
        return min(ramping, ctl.cut_in_flight)

    def may_draw(self, dev_id: str, now: float, follow_s: float) -> int:
        """What an EVSE may draw as it was told (mA per phase): its command, or, while it
        follows a cut of less than `follow_s` ago, the current it was cut from."""
        ctl = self.evses.get(dev_id)
        if ctl is None:
            return 0
        if self.following(dev_id, now, follow_s):
            return max(ctl.command, ctl.lingering)
        return ctl.command

    def moving(self, dev_id: str, now: float, window_s: float) -> bool:
        """Raised, or cut and not yet seen to follow, less than `window_s` ago: only such an
        EVSE can be ramping (ramping_to) or following (most of a site's EVSEs are neither)."""
        ctl = self.evses.get(dev_id)
        return ctl is not None and in_transition(ctl, now, window_s)


def is_following(ctl: EvseControl, now: float, window_s: float) -> bool:
    """Cut less than `window_s` ago and not yet seen to follow (ControlMemory.following)."""
    return ctl.lowered_at is not None and ctl.lingering > 0 and now - ctl.lowered_at < window_s


def in_transition(ctl: EvseControl, now: float, window_s: float) -> bool:
    """Raised, or cut and not yet seen to follow, less than `window_s` ago
    (ControlMemory.moving). For callers that hold the entry already: a run asks it of every
    EVSE (service/evse_inputs.py)."""
    raised = ctl.raised_at is not None and now - ctl.raised_at < window_s
    return raised or is_following(ctl, now, window_s)


def all_paused(memory: ControlMemory, now: float) -> ControlMemory:
    """The memory after every EVSE was paused at 0 A outside the control law (a failed run's
    fail-safe): each counts as cut now, so that the next run starts it again through
    settle_time and steps, and counts what it may still draw until it followed."""
    return ControlMemory(
        {
            d: EvseControl(
                0,
                now if ctl.command else ctl.changed_at,
                now if ctl.command else ctl.lowered_at,
                max(ctl.command, ctl.lingering),
                None,
                ctl.charged,
                None,
            )
            for d, ctl in memory.evses.items()
        }
    )


@dataclass(slots=True)
class _Step:
    """One EVSE within one run."""

    dev_id: str
    result: EvseResult
    offered: int  # what the allocation gives it (0 when it may not charge)
    before: EvseControl
    command: int
    lingering: int
    lowered_at: float | None
    up_since: float | None
    slots: tuple[int, ...]
    small_cut: bool = False
    car_limit: int = 0
    car_limit_at: float = 0.0
    draw_seen: tuple[float, int] | None = None
    raise_pending_until: float | None = None


def govern(
    alloc: Allocation,
    inp: AllocationInput,
    memory: ControlMemory,
    settings: ControlSettings,
) -> tuple[Allocation, ControlMemory]:
    """The allocation with its commands as the control law sends them, and the new memory.
    In observation mode (`lb_enabled` false) the commands are the allocation's."""
    now = inp.now
    if not inp.params.lb_enabled:
        return alloc, _observed(alloc, memory, now)
    kept = dict(memory.evses)
    steps: list[_Step] = []
    for d, r in alloc.evses.items():
        before = kept.get(d)
        offered = r.charging_current if r.charging_enabled and not r.paused else 0
        if (
            before is not None
            and offered == before.command
            and before.lowered_at is None
            and before.up_since is None
            and not before.car_limit
        ):
            # Settled: the allocation offers what it was commanded, nothing in flight. Most
            # EVSEs of a site are, most of the time.
            continue
        steps.append(_first_pass(d, r, offered, alloc, inp, before or NO_CONTROL, settings))
    for gone in kept.keys() - alloc.evses.keys():
        del kept[gone]
    if not steps:
        return alloc, ControlMemory(kept) if len(kept) != len(memory.evses) else memory
    budgets = alloc.budgets
    if any(step.small_cut or step.offered > step.command for step in steps):
        usage = _usage(alloc, kept, steps, len(budgets))
        _keep_small_cuts(steps, budgets, usage)
        # With a late grid reading, or figures a newer report contradicts, the load may have
        # risen unseen: nobody is raised.
        held = alloc.grid_late or inp.figures_unsure
        rising = [] if held else [s for s in steps if s.offered > s.command]
        for step in _by_precedence(rising, inp):
            _increase(step, inp, alloc.raise_budgets or budgets, usage, settings, alloc)
    results = dict(alloc.evses)
    for step in steps:
        results[step.dev_id] = _commanded(step)
        kept[step.dev_id] = _remember(step, now)
    return _with_results(alloc, results, _never_started(alloc, steps, now)), ControlMemory(kept)


def _never_started(alloc: Allocation, steps: Iterable[_Step], now: float) -> Memory:
    """The allocation's memory, told of EVSEs it paused that were never started.

    The allocation notes that an EVSE charges when it offers it current; one the control law
    held back from starting did not. When the allocation then pauses it, that is no stop
    after charging, and its pause_min_time must not hold it back (a car that never charged
    waited 30 s for its first current)."""
    memory = alloc.memory
    changed: dict[str, EvseMemory] = {}
    for step in steps:
        if step.command == 0 and not step.before.charged:
            mem = memory.evses.get(step.dev_id)
            if mem is not None and mem.stopped_at == now:
                changed[step.dev_id] = mem._replace(stopped_at=None)
    if not changed:
        return memory
    return replace(memory, evses={**memory.evses, **changed})


def _observed(alloc: Allocation, memory: ControlMemory, now: float) -> ControlMemory:
    kept: dict[str, EvseControl] = {}
    for dev_id, r in alloc.evses.items():
        before = memory.evse(dev_id)
        command = r.charging_current if r.charging_enabled and not r.paused else 0
        changed = before.changed_at if command == before.command else now
        kept[dev_id] = EvseControl(command, changed, charged=command > 0 or before.charged)
    return ControlMemory(kept)


def _first_pass(
    dev_id: str,
    r: EvseResult,
    offered: int,
    alloc: Allocation,
    inp: AllocationInput,
    before: EvseControl,
    settings: ControlSettings,
) -> _Step:
    """Cuts at once; notes who may rise; ends the follow time of those that followed."""
    now = inp.now
    c = before.command
    lingering, lowered_at = _still_following(dev_id, before, inp, settings)
    step = _Step(dev_id, r, offered, before, c, lingering, lowered_at, before.up_since,
                 alloc.slots.get(dev_id, ()))  # fmt: skip
    if before.car_limit and _car_limit_holds(dev_id, before, r, inp):
        step.car_limit = before.car_limit
        step.car_limit_at = before.car_limit_at
    step.draw_seen = before.draw_seen
    step.raise_pending_until = before.raise_pending_until if lowered_at is not None else None
    if offered < c:
        measured = _measured(dev_id, inp)
        # A raised car starts within follow_time and may take as long again to ramp up.
        ramp_s = 2 * settings.follow_s
        if (
            before.raised_at is not None
            and now - before.raised_at < ramp_s
            and measured < c - FOLLOW_TOLERANCE_MA
        ):
            # Its car has not shown the raise yet: it may still take it up before the cut.
            step.raise_pending_until = max(
                step.raise_pending_until or 0.0, before.raised_at + ramp_s
            )
        step.command = offered
        if 0 < offered < r.target:
            # Cut by a budget: half a deadband below it, as a raise stops (see _increase),
            # or the next reading's noise needs another cut of a few mA.
            ev = inp.evses.get(dev_id)
            floor = effective_minimum(ev.config) if ev is not None else offered
            step.command = max(min(offered, floor), offered - settings.deadband // 2)
        step.up_since = None
        # Until it has followed, it may draw its old command or what it was measured at.
        step.lingering = max(lingering, c, measured)
        step.lowered_at = now
        step.small_cut = offered > 0 and c - offered < settings.deadband and bool(step.slots)
    elif offered > c:
        if step.up_since is None:
            step.up_since = now
    else:
        step.up_since = None
    return step


def _still_following(
    dev_id: str, before: EvseControl, inp: AllocationInput, settings: ControlSettings
) -> tuple[int, float | None]:
    """What a cut EVSE may still draw, and since when; (0, None) once it followed."""
    if before.lowered_at is None or before.lingering <= 0:
        return 0, None
    if inp.now - before.lowered_at >= settings.follow_s:
        return 0, None
    ev = inp.evses.get(dev_id)
    st = ev.state if ev is not None else None
    if (
        st is not None
        and st.ts > max(before.lowered_at, before.raise_pending_until or 0.0)
        and max(st.current) <= before.command + FOLLOW_TOLERANCE_MA
    ):
        return 0, None
    return before.lingering, before.lowered_at


def _car_limit_holds(
    dev_id: str, before: EvseControl, r: EvseResult, inp: AllocationInput
) -> bool:
    """Whether a learned car limit still holds: not too old, the car still charging, and
    drawing less than FOLLOW_TOLERANCE_MA below it (close to it, it may take more: the
    allocation offers it its whole share again)."""
    if inp.now - before.car_limit_at >= CAR_LIMIT_FORGET_S or r.reason == R_NO_VEHICLE:
        return False
    ev = inp.evses.get(dev_id)
    st = ev.state if ev is not None else None
    if st is None:
        return True  # nothing new is known of it (a lost EVSE counts at its maximum)
    if st.state not in CHARGING_STATES:
        return False
    return max(st.current) < before.car_limit - FOLLOW_TOLERANCE_MA


def _learn_car_limit(
    step: _Step, inp: AllocationInput, settings: ControlSettings, alloc: Allocation
) -> None:
    """A raise its car has not taken up after follow_time, while its reports show it steady
    (or CAR_LIMIT_LEARN_FOLLOWS follow_times after the raise): the car limits itself to what
    it draws; with CAR_LIMIT_MARGIN_MA that is its car limit. Only while another EVSE on one
    of its constraint slots is held back: else the rest of its share helps nobody, and the
    cut would only be a command."""
    raised = step.before.raised_at
    if step.car_limit or raised is None:
        return
    drawn, steady = _draw_steady(step, inp, raised, settings.follow_s)
    if drawn is None or drawn + FOLLOW_TOLERANCE_MA >= step.command:
        return  # not charging, or it took up its raise: nothing shows a limit of the car
    # On a raise the offer (its share) is above the command.
    if drawn + CAR_LIMIT_MARGIN_MA + CAR_LIMIT_MIN_GAIN_MA > step.offered:
        return  # too little of its share to hand on
    if not steady and inp.now - raised < CAR_LIMIT_LEARN_FOLLOWS * settings.follow_s:
        return
    if not _others_held_back(step, alloc):
        return
    step.car_limit = drawn + CAR_LIMIT_MARGIN_MA
    step.car_limit_at = inp.now


def _others_held_back(step: _Step, alloc: Allocation) -> bool:
    """Whether another EVSE that loads one of its constraint slots gets less than its target
    (limited, or paused because its minimum does not fit)."""
    mine = step.slots
    for dev_id, r in alloc.evses.items():
        if dev_id != step.dev_id and r.reason in _HELD_BACK:
            slots = alloc.slots.get(dev_id, ())
            if any(s in slots for s in mine):
                return True
    return False


def _draw_steady(
    step: _Step, inp: AllocationInput, raised: float, follow_s: float
) -> tuple[int | None, bool]:
    """What the car of a raised EVSE draws by its last report after the raise (None: no
    such report, or it does not charge), and whether that has held for CAR_LIMIT_STEADY_S
    of its reports, the last taken at least follow_s after the raise; notes the report in
    step.draw_seen when it starts a new comparison. Reports taken sooner show a car that
    may not have begun to follow yet (IEC 61851 allows it 5 s): a wallbox that reports
    late showed a car steady at its old current 3 and 4 s after the raise, and a limit
    learned from that cut it from 11.2 to 7 A as it ramped (late plant 286)."""
    ev = inp.evses.get(step.dev_id)
    st = ev.state if ev is not None else None
    if st is None or st.ts <= raised or st.state not in CHARGING_STATES:
        return None, False
    drawn = max(0, *st.current)
    seen = step.draw_seen
    if seen is None or seen[0] <= raised or drawn > seen[1] + CAR_LIMIT_STEADY_MA:
        step.draw_seen = (st.ts, drawn)  # the first, or it still rises: look again
        return drawn, False
    return drawn, st.ts - seen[0] >= CAR_LIMIT_STEADY_S and st.ts - raised >= follow_s


def _raise_taken(
    dev_id: str, before: EvseControl, inp: AllocationInput, settings: ControlSettings
) -> bool | None:
    """Whether the car took up its last raise: True when a report after it shows the new
    current (less FOLLOW_TOLERANCE_MA) and the allocation no longer credits its ramp; False
    when follow_time has passed without (its car takes less); None while it may still be
    ramping. The next step waits for it: while the car ramps, what it will draw is not
    known, and a raise on top (a surplus that looks larger while the car's draw lags,
    headroom the ramp has not shown yet) overshoots and has to be taken back."""
    raised = before.raised_at
    if raised is None:
        return True
    ev = inp.evses.get(dev_id)
    st = ev.state if ev is not None else None
    if (
        ev is not None
        and st is not None
        and st.ts > raised
        and max(st.current) >= before.command - FOLLOW_TOLERANCE_MA
        # With a grid reading older than that report the allocation still counts the ramp
        # (its credit): its figures are not yet those of the followed car.
        and ev.ramp_credit == 0
    ):
        return True
    if inp.now - raised >= settings.follow_s:
        return False
    return None


def _measured(dev_id: str, inp: AllocationInput) -> int:
    ev = inp.evses.get(dev_id)
    if ev is None or ev.state is None:
        return 0
    return max(0, *ev.state.current)


def _usage(
    alloc: Allocation, kept: Mapping[str, EvseControl], steps: Iterable[_Step], n_slots: int
) -> list[int]:
    """What the EVSEs are committed to, per constraint slot: the settled ones their command,
    the others (`steps`) the higher of their command and what they may still draw."""
    usage = [0] * n_slots
    moving = {step.dev_id: step for step in steps}
    for dev_id, slots in alloc.slots.items():
        step = moving.get(dev_id)
        if step is not None:
            committed = max(step.command, step.lingering)
        else:
            ctl = kept.get(dev_id)
            committed = ctl.command if ctl is not None else 0
        if committed:
            for s in slots:
                usage[s] += committed
    return usage


def _room(slots: Sequence[int], budgets: Sequence[int], usage: Sequence[int]) -> int:
    return min((budgets[s] - usage[s] for s in slots), default=0)


def _keep_small_cuts(steps: Iterable[_Step], budgets: Sequence[int], usage: list[int]) -> None:
    """A cut below the deadband is not sent while the old command still fits every limit:
    meter noise would otherwise send one every few readings."""
    for step in steps:
        if not step.small_cut:
            continue
        old = step.before.command
        # `usage` holds this EVSE at the higher of its new command and what it may still
        # draw; keeping the old command adds the rest.
        extra = max(0, old - max(step.command, step.lingering))
        if _room(step.slots, budgets, usage) < extra:
            continue  # a limit needs the cut
        for s in step.slots:
            usage[s] += extra
        step.command = old
        step.lingering = step.before.lingering
        step.lowered_at = step.before.lowered_at


def _by_precedence(steps: Sequence[_Step], inp: AllocationInput) -> list[_Step]:
    """Higher priority first, then EVSEs already charging, then by device id."""

    def key(step: _Step) -> tuple[int, int, str]:
        ev = inp.evses.get(step.dev_id)
        prio = ev.config.prio if ev is not None else 0
        return (-prio, 0 if step.command > 0 else 1, step.dev_id)

    return sorted(steps, key=key)


def _increase(
    step: _Step,
    inp: AllocationInput,
    budgets: Sequence[int],
    usage: list[int],
    settings: ControlSettings,
    alloc: Allocation,
) -> None:
    """Raises the command toward the offer when the offer has held, within every slot."""
    now = inp.now
    c = step.command
    offered = step.offered
    ev = inp.evses.get(step.dev_id)
    minimum = effective_minimum(ev.config) if ev is not None else 1
    resume = c == 0 and step.before.charged
    if c == 0 and offered < min(step.result.target, minimum):
        step.up_since = None  # the minimum does not fit: the hold starts anew when it does
        return
    # The margin of a resume is the allocation's admission (minimum + resume_margin fits,
    # wishes.demand_for); once admitted it counts as charging there and shares down to its
    # minimum, so asking for the margin again here held it off while the others were cut.
    wait = settings.resume_s if resume else settings.settle_s
    since = step.up_since if step.up_since is not None else now
    if now - since < wait or now - step.before.changed_at < settings.settle_s:
        return
    # With settle_time 0 nothing waits, the take-up of a raise neither.
    taken = (
        _raise_taken(step.dev_id, step.before, inp, settings)
        if c > 0 and settings.settle_s > 0
        else True
    )
    if taken is None:
        return  # the car may still be taking up its last raise
    if not taken:
        # Its car did not take up the last raise: it limits itself, and more would only be
        # more commands. Once a report shows it drawing its command, it may rise again.
        # Once it has not for a while, what it draws is its car limit: the allocation then
        # gives the rest of its share to the others.
        _learn_car_limit(step, inp, settings, alloc)
        return
    if offered - c < settings.deadband and c > 0:
        return
    # A start goes to at least the minimum (a car cannot charge below it).
    limit = settings.ramp_step or offered  # 0: no limit
    goal = offered
    if offered < step.result.target:
        # Limited by a budget: stop half a deadband short, so that the next reading's noise
        # (a budget a few mA lower) needs no cut; a cut that small would be sent, as every
        # cut a limit needs is.
        goal = max(minimum, offered - settings.deadband // 2)
    wanted = min(goal, c + limit if c > 0 else max(minimum, limit))
    base = max(c, step.lingering)
    room = _room(step.slots, budgets, usage) if step.slots else max(0, wanted - base)
    if room < 0:
        return  # a slot is over its budget already (a car still following a cut)
    new = min(wanted, base + room)
    if new <= c or (c == 0 and new < minimum) or (c > 0 and new - c < settings.deadband):
        return
    for s in step.slots:
        usage[s] += max(0, new - base)
    step.command = new
    step.up_since = now if new < offered else None


def _commanded(step: _Step) -> EvseResult:
    r = step.result
    if step.command == (r.charging_current if r.charging_enabled and not r.paused else 0):
        return r
    if step.command == 0:
        # Held back from starting (the offer has not held yet) or kept in its pause.
        return r._replace(paused=True, charging_current=0, reason=R_SETTLING)
    return r._replace(charging_current=step.command, paused=False)


def _remember(step: _Step, now: float) -> EvseControl:
    before = step.before
    changed_at = before.changed_at if step.command == before.command else now
    charged = (before.charged or step.command > 0) and step.result.reason != R_NO_VEHICLE
    raised_at = now if step.command > before.command else before.raised_at
    cut_in_flight = before.cut_in_flight
    if step.command > before.command:
        # Raised while its car may still follow a cut to the old command.
        cut_in_flight = before.command if step.lingering > 0 else None
    if step.command < before.command:
        raised_at = None
        cut_in_flight = None
    # tuple.__new__: a run at an overload remembers a thousand of these.
    return new(EvseControl, (
        step.command, changed_at, step.lowered_at, step.lingering, step.up_since, charged,
        raised_at, step.car_limit, step.car_limit_at,
        None if step.car_limit else step.draw_seen, cut_in_flight,
        step.raise_pending_until if step.lowered_at is not None else None,
    ))  # fmt: skip


def _with_results(
    alloc: Allocation, results: Mapping[str, EvseResult], memory: Memory
) -> Allocation:
    return replace(alloc, evses=results, memory=memory)

