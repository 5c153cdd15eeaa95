"""Pairing each wallbox's draw with the grid reading it is subtracted from.

The other load on a phase is the grid meter's reading minus what the EVSEs behind that meter
draw. Meter and wallboxes are read at different moments: while a car ramps up, a wallbox
report newer than the grid reading shows more than the meter saw, and the difference would
be taken for negative other load, i.e. current that is not there (the demo's start measured
26-27 A on its 25 A fuse that way). So every reading carries the time it was taken (`ts`),
the core keeps each EVSE's recent samples, and the draw subtracted from a grid reading is
the EVSE's newest sample taken at or before that reading, never a newer one (an EVSE
ramping up to a new command counts at that command, see `counted_current`). With no such
sample the EVSE counts as drawing nothing, which can only make the other load look larger.

An EVSE is paired with the grid meter of its own group or, without one, of the nearest
group above it that has one.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from service.core.allocation.model import ROLE_GRID
from service.core.models import GroupConfig, MeterConfig, MeterState

Currents = tuple[int, int, int]
Sample = tuple[float, Currents]  # (ts, EVSE-local currents in mA)
NOTHING: Currents = (0, 0, 0)
# A phase drawing at least this much is one the car charges on (as phases.LEARN_THRESHOLD_MA).
DRAWING_MA = 1000


# A car whose newest report shows this much more than the one before is still ramping up.
RISING_MA = 300


def still_rising(samples: Sequence[Sample]) -> bool:
    """Whether the newest report shows more than the one before (by RISING_MA on a phase):
    a slow car (1 A/s) ramps longer than the ramp window, and its credit lasts while it
    rises."""
    if len(samples) < 2:
        return False
    (_, new), (_, old) = samples[-1], samples[-2]
    return any(n - o >= RISING_MA for n, o in zip(new, old, strict=True))


def paired_draw(samples: Sequence[Sample], reading_ts: float) -> Currents:
    """The newest sample taken at or before `reading_ts` (samples oldest first)."""
    for ts, current in reversed(samples):
        if ts <= reading_ts:
            return current
    return NOTHING


def drop_after(samples: Sequence[Sample], reading_ts: float, paired: Currents) -> Currents:
    """Per phase, how much less than `paired` (its report paired with the grid reading) the
    EVSE's first report after the reading shows, where that is at least RISING_MA (less is
    the reports' noise, which the half deadband a raise keeps from a budget covers);
    NOTHING without a newer report or such a drop. A car that dropped between its paired
    report and the next (it followed a cut, it stopped) may have drawn that much less at
    the reading, whatever the control law knows of it: the other-load figure may be that
    much low (spread_with_drop)."""
    newer = first_after(samples, reading_ts)
    if newer is None:
        return NOTHING
    # Spelt out: every EVSE's draw is checked in every run.
    a, b, c = paired[0] - newer[0], paired[1] - newer[1], paired[2] - newer[2]
    if a < RISING_MA and b < RISING_MA and c < RISING_MA:
        return NOTHING
    return (a if a >= RISING_MA else 0, b if b >= RISING_MA else 0, c if c >= RISING_MA else 0)


def spread_with_drop(
    spread: Currents, counted: Currents, paired: Currents, drop: Currents
) -> Currents:
    """The draw spread (draw_spread) widened by a drop a newer report shows (drop_after):
    counted less the paired report, less the drop, is the least the EVSE may have drawn."""
    return (
        max(spread[0], counted[0] - paired[0] + drop[0]),
        max(spread[1], counted[1] - paired[1] + drop[1]),
        max(spread[2], counted[2] - paired[2] + drop[2]),
    )


def counted_current(
    samples: Sequence[Sample],
    reading_ts: float | None,
    ramping_to: int | None = None,
    phases: int = 7,
    bound: int | None = None,
    only_rising: bool = False,
) -> Currents | None:
    """What the allocation subtracts from the grid reading for one EVSE; None: no grid
    reading to pair with (the allocation then uses the EVSE's latest state).

    `ramping_to`: the command of an EVSE that was raised a moment ago and may still be
    ramping up to it; it then counts at that command on the phases it is seen drawing on
    (at a start, when it draws nothing yet: the EVSE-local `phases`, a bit mask).
    A car ramping at 3 A/s draws up to 3 A more at the grid reading than its last report
    showed; taken for other load, every start would cut or pause the other cars. Counted at
    its command, the other load looks lower while the ramp lasts, and the allocation holds
    the highest other load of the last `load_hold_time` seconds (hold_peaks), which reaches
    back to before the raise: the ramp neither lowers the budget nor lends any. A real rise
    of other load during the ramp shows as far as it exceeds what the ramp may explain, and
    in full once the ramp is over (the caller bounds the ramp window by both times).

    `only_rising`: its car's draw has only risen since the report paired with the reading
    (ControlMemory.only_rising). Its first report after the reading then shows at least
    what it drew at the reading: it counts at no more than that. Counted at its command
    instead, a rise of the other load would hide in the credit for as long as the ramp
    lasts (a car that starts late and ramps slowly: seconds over the fuse)."""
    if reading_ts is None:
        return None
    drawn = paired_draw(samples, reading_ts)
    if bound is not None and max(drawn) > bound:
        # A report the EVSE's maximum cannot explain is no credit against the grid reading
        # (the allocation marks the EVSE lost when its latest state says so; an older one
        # paired here must not slip through either).
        drawn = NOTHING
    if ramping_to is None:
        return drawn
    a, b, c = drawn
    # The phases it is seen drawing on; at a start (nothing drawn yet) those it may use.
    seen = (a >= DRAWING_MA) | (b >= DRAWING_MA) << 1 | (c >= DRAWING_MA) << 2
    phases = seen or phases
    x = y = z = ramping_to
    if only_rising:
        later = first_after(samples, reading_ts)
        if later is not None:
            x, y, z = min(x, later[0]), min(y, later[1]), min(z, later[2])
    return (
        max(a, x) if phases & 1 else a,
        max(b, y) if phases & 2 else b,
        max(c, z) if phases & 4 else c,
    )


def first_after(samples: Sequence[Sample], reading_ts: float) -> Currents | None:
    """The first sample taken after `reading_ts` (samples oldest first); None: none yet."""
    newer: Currents | None = None
    for ts, current in reversed(samples):
        if ts <= reading_ts:
            break
        newer = current
    return newer


def draw_spread(counted: Currents, plain: Currents, command: int) -> Currents:
    """Per phase, how much less than `counted` an EVSE in transition may have drawn at the
    grid reading: a car ramping up to `command` drew at least its report, one following a
    cut to `command` (0: a pause) at least that. The other-load figure made with `counted`
    may be low by this much (hold_peaks)."""
    a, b, c = counted
    x, y, z = plain
    return (a - min(x, command), b - min(y, command), c - min(z, command))


def grid_reading_times(
    meters: Iterable[tuple[MeterConfig, MeterState | None]],
) -> dict[int, float]:
    """Per group id, the time of its grid meters' oldest current reading (with several grid
    meters in one group, the oldest: no EVSE sample newer than any of them is paired)."""
    times: dict[int, float] = {}
    for config, state in meters:
        if config.role != ROLE_GRID or not config.device_enabled or state is None:
            continue
        ts = state.ts
        times[config.group] = min(ts, times.get(config.group, ts))
    return times


def reading_time_for(
    group: int, groups: Sequence[GroupConfig], times: Mapping[int, float]
) -> float | None:
    """The grid reading time that governs an EVSE of `group`: its own group's, else the
    nearest group above it with a grid meter."""
    parent = {g.id: g.parent for g in groups}
    seen: set[int] = set()
    g = group
    while g not in seen:
        if g in times:
            return times[g]
        seen.add(g)
        if g == 0:
            break
        g = parent.get(g, 0)
    return None
