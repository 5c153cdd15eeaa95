"""The load manager in the loop: figures per kind of simulated plant; prints a table.

Run: .venv/bin/python bench/bench_closed_loop.py [--seeds 40] [--duration 300] [--quick]
     [--first-seed 0] [--broken]

Each plant (tests/plant/plants.py) runs the service's own ServiceState and ControlLoop in
simulated time (tests/plant/harness.py): cars that follow a new limit 0-5 s late and ramp,
wallboxes that report late or never, grid meters read with lag and noise, a base-load step
every 60 s (solar plants: a sun with passing clouds and surplus rules). The figures are
taken on the true currents (tests/plant/figures.py):

* over s: seconds over a limit (> 200 mA above it, any phase, the main fuse or a group), mean
  per run and the worst run; "unexpl." counts runs with an excess that no disturbance and
  no car's old command explains (one it still followed, or one the core sent before a
  meter reading could show it the disturbance);
* peak mA: the largest excess of any run;
* settle s: from each disturbance until the last command change that left a command more
  than 500 mA from where it ends (median, 95th percentile, worst; "never" counts
  disturbances after which commands did not stay in that band for 20 s before the next
  one);
* chg/min: command changes per minute per EVSE in steady state (30 s after a disturbance
  until the next), mean over runs and the worst EVSE of any run;
* headroom: drawn / what could be drawn on the tightest constraint at the end of each
  steady window (mean, worst run); solar plants have none (their rule, not the fuse, sets
  the current);
* paused: runs in which an EVSE was paused while its minimum fitted;
* broken: runs that break any claim the closed-loop tests assert (Figures.problems: over a
  limit beyond the follow bound or beyond what old commands explain, not settled within the
  plant's settle bound, more than 2 changes per minute, less than 90 % of the headroom,
  paused while the minimum fits, a failed run).

The closed-loop tests (tests/closed_loop) assert the same figures on shorter runs.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.plant.figures import EXCESS_TOLERANCE_MA, Figures, compute
from tests.plant.harness import run_plant_async
from tests.plant.model import PlantSpec
from tests.plant.plants import (
    RANDOM_KINDS,
    demo_fuse_lowered_plant,
    demo_plant,
    demo_silent_evse_plant,
    random_plant,
    solar_plant,
    surplus_flap_plant,
    surplus_sharing_plant,
)


def plants(kind: str, seeds: int, duration_s: float, first: int = 0) -> list[PlantSpec]:
    numbers = range(first, first + seeds)
    if kind == "demo":
        return [demo_plant(seed=s, duration_s=min(duration_s, 120.0)) for s in numbers]
    if kind == "solar":
        return [solar_plant(s, duration_s=duration_s) for s in numbers]
    return [random_plant(kind, s, duration_s=duration_s) for s in numbers]  # type: ignore[arg-type]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def row(kind: str, figures: list[Figures], seconds: float) -> str:
    over = [f.seconds_over for f in figures]
    unexplained = sum(
        1
        for f in figures
        if any(e.disturbance is None or e.unexplained_ma > EXCESS_TOLERANCE_MA for e in f.episodes)
    )
    settles = [s for f in figures for _, s in f.settle_s]
    settled = [s for s in settles if s is not None]
    never = len(settles) - len(settled)
    rates = [r for f in figures for r in f.changes_per_min.values() if f.steady_minutes > 0]
    headroom = [f.headroom_used for f in figures if f.headroom_used is not None]
    paused = sum(1 for f in figures if f.paused_while_min_fit)
    cells = [
        f"{kind:<13}",
        f"{len(figures):>4}",
        f"{statistics.fmean(over):>6.2f} {max(over):>6.1f}",
        f"{unexplained:>7}",
        f"{max(f.peak_excess_ma for f in figures):>7}",
        (
            f"{statistics.median(settled):>5.1f} {percentile(settled, 0.95):>5.1f} "
            f"{max(settled):>5.1f}"
            if settled
            else f"{'-':>5} {'-':>5} {'-':>5}"
        ),
        f"{never:>5}",
        f"{statistics.fmean(rates):>5.1f} {max(rates):>5.1f}" if rates else f"{'-':>5} {'-':>5}",
        (
            f"{statistics.fmean(headroom):>5.0%} {min(headroom):>5.0%}"
            if headroom
            else f"{'-':>5} {'-':>5}"
        ),
        f"{paused:>6}",
        f"{sum(1 for f in figures if f.problems()):>6}",
        f"{seconds:>6.1f}",
    ]
    return " | ".join(cells)


HEADER = (
    f"{'plant':<13} | {'runs':>4} | {'over s mean  max':>13} | {'unexpl.':>7} | {'peak mA':>7} | "
    f"{'settle s med  p95   max':>17} | {'never':>5} | {'chg/min mean max':>11} | "
    f"{'headroom mean min':>11} | {'paused':>6} | {'broken':>6} | {'wall s':>6}"
)


async def scenario_rows() -> list[str]:
    lines = []
    for name, spec in (
        ("demo start", demo_plant(duration_s=60.0)),
        ("fuse 25->16 A", demo_fuse_lowered_plant()),
        ("silent EVSE", demo_silent_evse_plant()),
        ("surplus flap", surplus_flap_plant()),
        ("surplus 2 EVSE", surplus_sharing_plant()),
    ):
        started = time.perf_counter()
        figures = compute(spec, await run_plant_async(spec))
        lines.append(row(name, [figures], time.perf_counter() - started))
    return lines


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=40, help="plants per kind")
    parser.add_argument("--duration", type=float, default=300.0, help="simulated s per plant")
    parser.add_argument("--quick", action="store_true", help="8 seeds of 120 s")
    parser.add_argument(
        "--first-seed", type=int, default=0, help="the first seed (100: plants the tests never run)"
    )
    parser.add_argument(
        "--broken", action="store_true", help="also list each broken run: kind, seed, problems"
    )
    args = parser.parse_args()
    seeds, duration = (8, 120.0) if args.quick else (args.seeds, args.duration)
    first = args.first_seed
    print(f"{seeds} plants per kind (seeds {first}-{first + seeds - 1}), {duration:g} s each\n")
    print(HEADER)
    print("-" * len(HEADER))
    broken: list[str] = []
    for kind in ("demo", *RANDOM_KINDS, "solar"):
        started = time.perf_counter()
        specs = plants(kind, seeds, duration, first)
        figures = [compute(spec, await run_plant_async(spec)) for spec in specs]
        print(row(kind, figures, time.perf_counter() - started), flush=True)
        broken += [
            f"{kind} {spec.seed}: {'; '.join(f.problems())}"
            for spec, f in zip(specs, figures, strict=True)
            if f.problems()
        ]
    if args.broken and broken:
        print("\nBroken runs:\n" + "\n".join(broken))
    print("\nThe issue's scenarios (one run each):\n")
    print(HEADER)
    print("-" * len(HEADER))
    for line in await scenario_rows():
        print(line)


if __name__ == "__main__":
    asyncio.run(main())
