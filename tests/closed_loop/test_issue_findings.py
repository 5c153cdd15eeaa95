"""The findings of issue 12, each replayed on a simulated plant in simulated time against the
service's own ServiceState and ControlLoop (tests/plant). Each test states what the issue
measured on today's code and what must hold instead."""

from __future__ import annotations

import itertools
from dataclasses import replace

from tests.plant.figures import compute, follow_bound_s, timeline
from tests.plant.harness import SentCommand, Trace, run_plant_async
from tests.plant.model import Command, PlantSpec
from tests.plant.plants import (
    DEMO_FUSE_MA,
    demo_fuse_lowered_plant,
    demo_plant,
    demo_silent_evse_plant,
    demo_wallbox,
    surplus_flap_plant,
    surplus_sharing_plant,
)

DEMO_SEEDS = range(8)


def main_current(tr: Trace, i: int) -> list[int]:
    cur = list(tr.other[i])
    for draws in tr.draws.values():
        for p in range(3):
            cur[p] += draws[i][p]
    return cur


def changes(tr: Trace, dev_id: str) -> list[tuple[float, Command]]:
    out: list[tuple[float, Command]] = []
    for sent in tr.commands:
        if sent.dev_id == dev_id and (not out or out[-1][1] != sent.command):
            out.append((sent.t, sent.command))
    return out


def switches(tr: Trace, dev_id: str, since: float) -> list[tuple[float, bool]]:
    """(t, on) each time the EVSE's command switches between charging and not, from `since`."""
    out = []
    seq = changes(tr, dev_id)
    for (_, before), (t, after) in itertools.pairwise(seq):
        if t >= since and (before.offer_ma > 0) != (after.offer_ma > 0):
            out.append((t, after.offer_ma > 0))
    return out


def on_at(tr: Trace, dev_id: str, t: float) -> bool:
    last: SentCommand | None = None
    for sent in tr.commands:
        if sent.dev_id == dev_id and sent.t <= t:
            last = sent
    return last is not None and last.command.offer_ma > 0


def mean_draw(spec: PlantSpec, tr: Trace, dev_id: str, start: float, end: float) -> float:
    rows = [d for t, d in zip(tr.t, tr.draws[dev_id], strict=True) if start <= t < end]
    return sum(max(r) for r in rows) / len(rows)


async def run(spec: PlantSpec) -> Trace:
    return await run_plant_async(spec)


async def test_demo_start_never_takes_the_grid_above_the_fuse() -> None:
    """Issue: at start the grid meter read 26.0-27.0 A on the 25 A fuse (both cars were given
    12.5 A while the meter still showed 2 A). Two cars ramping at 3 A/s, 2 A other load:
    the true current never exceeds 25 A, from the first second, whatever the timing."""
    worst = []
    for seed in DEMO_SEEDS:
        spec = demo_plant(seed=seed)
        tr = await run(spec)
        peak = max(max(main_current(tr, i)) for i in range(len(tr.t)))
        if peak > DEMO_FUSE_MA:
            worst.append((seed, peak))
    assert not worst, f"(seed, peak mA) above {DEMO_FUSE_MA}: {worst}"


async def test_demo_settles_within_15_s_then_stays_quiet() -> None:
    """Issue: 136 command changes per minute, limits swinging between 7 and 12 A. The demo
    settles within 15 s (no change beyond 300 mA after that) and then changes each command
    at most twice a minute."""
    found = []
    for seed in DEMO_SEEDS:
        spec = demo_plant(seed=seed, duration_s=75.0)
        tr = await run(spec)
        for dev_id in ("E1", "E2"):
            seq = changes(tr, dev_id)
            late = [
                (t, c.offer_ma)
                for (_, b), (t, c) in itertools.pairwise(seq)
                if t > 15.0
                and ((b.offer_ma > 0) != (c.offer_ma > 0) or abs(b.offer_ma - c.offer_ma) > 300)
            ]
            every = [t for t, _ in seq[1:] if t > 15.0]
            if late or len(every) > 2 * (75.0 - 15.0) / 60:
                found.append(
                    f"seed {seed} {dev_id}: {len(every)} changes after 15 s, big: {late[:5]}"
                )
    assert not found, "\n".join(found)


async def test_a_lower_fuse_keeps_both_cars_charging_at_about_7_a() -> None:
    """Issue: after the fuse was lowered to 16 A with set_params, both cars were paused for
    their pause_min_time although 7 A each fits. Now both keep charging, at about 7 A, and
    the fuse holds once the cars have followed."""
    spec = demo_fuse_lowered_plant()
    tr = await run(spec)
    off = [(d, s) for d in ("E1", "E2") for s in switches(tr, d, 40.0)]
    assert not off, f"switched after the fuse was lowered: {off}\n{timeline(spec, tr, 2.0)}"
    e1 = mean_draw(spec, tr, "E1", 100.0, 120.0)
    e2 = mean_draw(spec, tr, "E2", 100.0, 120.0)
    assert 6000 <= e1 <= 7100 and 6000 <= e2 <= 7100, (e1, e2)
    # L1 carries both: at least 90 % of the 14 A left beside the 2 A other load.
    assert e1 + e2 >= 0.9 * 14_000
    bound = follow_bound_s(spec)
    late = [
        (t, max(main_current(tr, i)))
        for i, t in enumerate(tr.t)
        if t > 40.0 + bound and max(main_current(tr, i)) > 16_000
    ]
    assert not late, f"over 16 A later than {bound:.1f} s after the change: {late[:5]}"


async def test_an_http_input_evse_that_never_reports_makes_no_on_off_cycle() -> None:
    """Issue: after adding an HTTP-input EVSE that never reports (it counts at its maximum,
    16 A per phase: 7 A are left), both cars went into a cycle, ~1 s of current, then 10 s
    paused. One car's minimum fits on L1: one car charges steadily, the other waits, and no
    car that charged is paused while its minimum fits."""
    spec = demo_silent_evse_plant()
    tr = await run(spec)
    figures = compute(spec, tr)
    cycling = {d: switches(tr, d, 60.0) for d in ("E1", "E2")}
    assert not any(cycling.values()), f"{cycling}\n{timeline(spec, tr, 2.0)}"
    assert any(on_at(tr, d, 150.0) for d in ("E1", "E2")), "neither car charges"
    wrong = [p for p in figures.paused_while_min_fit if p[0] >= 30.0]
    assert not wrong, f"{wrong}\n{timeline(spec, tr, 1.0)}"


async def test_a_surplus_car_paused_by_a_cloud_does_not_flap() -> None:
    """Issue: with a solar-surplus rule, a grid reading that arrives before the wallbox's
    next report still counts a just-paused car's old current, so the car restarts from the
    grid and flaps. The grid meter is read every 0.5 s here, the wallbox reports every
    2.5 s. After the cloud (surplus 12 A -> 3 A per phase, below the 6 A minimum) the car is
    paused once and stays paused."""
    spec = surplus_flap_plant()
    tr = await run(spec)
    assert mean_draw(spec, tr, "E1", 30.0, 40.0) >= 6000, "no charging from the surplus"
    seen = switches(tr, "E1", 40.0)
    assert [on for _, on in seen] in ([], [False]), f"{seen}\n{timeline(spec, tr, 1.0)}"
    assert not on_at(tr, "E1", 120.0)


async def test_two_surplus_wallboxes_share_the_surplus() -> None:
    """Issue: two wallboxes with a surplus rule (mode 5) each got the whole surplus, so
    together they imported as much from the grid as the surplus is (20 A -> 2 x 20 A). Both
    together take about the surplus, and each command is quiet once settled."""
    spec = surplus_sharing_plant()
    tr = await run(spec)
    together = mean_draw(spec, tr, "E1", 60.0, 90.0) + mean_draw(spec, tr, "E2", 60.0, 90.0)
    assert 0.75 * 20_000 <= together <= 1.1 * 20_000, f"{together}\n{timeline(spec, tr, 2.0)}"
    for dev_id in ("E1", "E2"):
        late = [t for t, _ in changes(tr, dev_id) if t >= 40.0]
        assert len(late) <= 2, f"{dev_id} changed at {late[:10]}"


async def test_a_car_that_takes_less_than_its_share_leaves_the_rest_to_the_other() -> None:
    """Issue (mixed and late plants): a car whose own charger takes less than its equal share
    (8 A of 11.5 A) kept that share, so only 88 % of the headroom was used. The control law
    learns what it takes (a raise it did not take up) and the allocation gives the rest to
    the other car: at least 90 % of the headroom used once settled, quiet after that."""
    e1, e2 = demo_wallbox("E1", 3), demo_wallbox("E2", 1)
    assert e2.car is not None
    spec = replace(
        demo_plant(seed=3, duration_s=120.0),
        name="demo-self-limited",
        wallboxes=(e1, replace(e2, car=replace(e2.car, max_ma=8000))),
    )
    tr = await run(spec)
    figures = compute(spec, tr)
    assert figures.headroom_used is not None and figures.headroom_used >= 0.9, (
        figures.headroom_used,
        timeline(spec, tr, 5.0),
    )
    assert not figures.problems(), figures.problems()
    # E1 (3 phases, on L1 with E2) gets what E2 leaves: 23 A less E2's 8 A and the margin.
    assert mean_draw(spec, tr, "E1", 90.0, 120.0) >= 13_000
    assert len(changes(tr, "E1")) + len(changes(tr, "E2")) <= 14
