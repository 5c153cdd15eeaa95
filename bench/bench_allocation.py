"""Times `allocate()` alone for 10 … 10,000 EVSEs in three levels of groups; prints a table.

Run: .venv/bin/python bench/bench_allocation.py [--quick] [--sizes 1000,10000]

The installation is meant to look like a large car park, not a best case: the main fuse is
tighter than the sum of the sub-distributions, so some cars pause and the rest share; 30 % are
single-phase cars behind rotated wallboxes, 10 % have a higher priority, a few have charging
rules and users; a grid meter, consumption meters, max_imbalance and a total EVSE cap are set.

Each timed call gets the memory of the previous one and a clock 3 s later, and runs as the
service runs it (service.control_loop: gc.freeze() once the configuration is loaded, the
collector paused during each run). Four kinds of run, each timed on its own:

* timer: nothing arrived since the last run; the cycle timer runs it (time rules, staleness).
* meter: a new grid-meter reading moves the main group's budget (the reduction that
  bench_end_to_end.py times through the broker).
* operation: a busy site. The new grid-meter reading, and new states from 5 % of the EVSEs
  with moved currents (the runs of a site where every EVSE reports each second, coalesced
  as the control loop does).
* all new: every EVSE sent a new state since the last run (after a broker reconnect, or runs
  rarer than the reports). Only the measurements moved, as is usual from one poll to the next.

The states of a run are made before its clock starts: the bus made them in operation.
"""

from __future__ import annotations

import argparse
import gc
import statistics
import time

from service.control_loop import allocate_paused_gc
from service.core.allocation import (
    AllocationCache,
    AllocationInput,
    EvseInput,
    Memory,
    MeterInput,
    allocate,
)
from service.core.models import (
    ChargingRule,
    EvseConfig,
    EvseState,
    GroupConfig,
    MeterConfig,
    MeterState,
    Params,
    RfidEntry,
    User,
)

LEAF_SIZE = 100  # EVSEs per sub-distribution
LEAVES_PER_TOP = 10


def build(n: int) -> AllocationInput:
    leaves = max(1, -(-n // LEAF_SIZE))
    tops = max(1, -(-leaves // LEAVES_PER_TOP))
    groups: list[GroupConfig] = []
    per_leaf = [0] * leaves
    for i in range(n):
        per_leaf[i % leaves] += 1
    for t in range(tops):
        members = sum(per_leaf[leaf] for leaf in range(leaves) if leaf % tops == t)
        groups.append(
            GroupConfig.model_construct(id=1 + t, name="", parent=0, max_current=members * 7_000)
        )
    for leaf in range(leaves):
        groups.append(
            GroupConfig.model_construct(
                id=1000 + leaf, name="", parent=1 + leaf % tops, max_current=per_leaf[leaf] * 8_000
            )
        )
    users = {
        "u1": User(
            id="u1",
            rfids=[RfidEntry(id="CARD1")],
            charging_rules=[ChargingRule(mode=0, current=10_000)],
        )
    }
    evses: dict[str, EvseInput] = {}
    draw = [0, 0, 0]
    for i in range(n):
        dev_id = f"E{i + 1}"
        single = i % 10 < 3
        rotation = i % 6
        rules = [ChargingRule(days=31, time=1320, dur=600, current=16_000)] if i % 50 == 7 else []
        cfg = EvseConfig(
            dev_type="evse_ajax",
            dev_id=dev_id,
            group=1000 + i % leaves,
            prio=2 if i % 10 == 7 else 1,
            max_charging_cur=32_000 if i % 4 == 0 else 16_000,
            phase_rotation=rotation,
            charging_rules=rules,
            users=["u1"] if i % 97 == 5 else [],
        )
        kind = i % 5
        if kind < 3:
            per_phase = 5_000 + (i % 7) * 250
            current = [per_phase, 0, 0] if single else [per_phase] * 3
            state = EvseState(ts=0, state=3, current=current, rfid="CARD1" if i % 97 == 5 else "")
            for local, amount in enumerate(current):
                draw[(local + rotation) % 3] += amount
        elif kind == 3:
            state = EvseState(ts=0, state=2)
        else:
            state = EvseState(ts=0, state=1)
        evses[dev_id] = EvseInput(cfg, state, 1.0)
    house = 20_000
    meters = {
        "M1": MeterInput(
            MeterConfig(dev_type="meter_ajax", dev_id="M1", role=3),
            MeterState(ts=0).model_copy(update={"current": [d + house for d in draw]}),
            1.0,
        ),
        "M2": MeterInput(
            MeterConfig(dev_type="meter_ajax", dev_id="M2", role=1, group=1),
            MeterState(ts=0, current=[5_000, 3_000, 1_000]),
            1.0,
        ),
        "M3": MeterInput(
            MeterConfig(dev_type="meter_ajax", dev_id="M3", role=2),
            MeterState(ts=0, current=[4_000, 4_000, 4_000]),
            1.0,
        ),
    }
    # Fuses scale with the car park; beyond the models' 2000 A bound only without validation.
    params = Params().model_copy(
        update={
            "max_total_current": n * 3_500 + house,
            "reserve_current": 2_000,
            "max_total_evse_current": n * 6_000,
            "max_imbalance": max(20_000, n * 300),
        }
    )
    return AllocationInput(
        params=params,
        groups=groups,
        evses=evses,
        meters=meters,
        users=users,
        now=1_700_000_000.0,
        stale_after_s=9.0,
    )


KINDS = ("timer", "meter", "operation", "all new")


def moved(state: EvseState, k: int) -> EvseState:
    """The next poll's state: a few mA more or less on the phases that draw, a later ts."""
    step = (k % 5 - 2) * 20
    current = [c + step if c > 1_000 else c for c in state.current]
    return state.model_copy(update={"current": current, "ts": state.ts + 3 * (k + 1)})


def inputs_for(inp: AllocationInput, kind: str, runs: int) -> list[AllocationInput]:
    grid = inp.meters["M1"]
    assert grid.state is not None
    out: list[AllocationInput] = []
    evses = dict(inp.evses)
    ids = list(evses)
    for k in range(runs):
        meters = inp.meters
        if kind != "timer":
            delta = (k % 7 - 3) * 1_500
            reading = grid.state.model_copy(
                update={"current": [c + delta for c in grid.state.current]}
            )
            meters = {**inp.meters, "M1": MeterInput(grid.config, reading, 1.0)}
            reporting: list[str] = []
            if kind == "operation":
                reporting = ids[k % 20 :: 20]
            elif kind == "all new":
                reporting = ids
            evses = dict(evses)
            for dev_id in reporting:
                ev = evses[dev_id]
                assert ev.state is not None
                evses[dev_id] = EvseInput(ev.config, moved(ev.state, k), 1.0)
        out.append(
            AllocationInput(
                params=inp.params,
                groups=inp.groups,
                evses=evses,
                meters=meters,
                users=inp.users,
                now=inp.now + 3 * (k + 1),
                stale_after_s=inp.stale_after_s,
            )
        )
    return out


def measure(n: int, runs: int, kind: str) -> tuple[float, float, int, int]:
    inp = build(n)
    steps = inputs_for(inp, kind, runs)
    # Two calls before the clock starts: the first meets every vehicle (sessions begin), the
    # second prepares what stays the same; from then on a run is one of the service's runs.
    cache = AllocationCache()
    memory = allocate(inp, Memory(), cache).memory
    memory = allocate(inp, memory, cache).memory
    # What a long-running service does once its configuration is loaded: move what exists
    # into the permanent generation, so that full collections skip it.
    gc.collect()
    gc.freeze()
    times: list[float] = []
    result = None
    try:
        for step in steps:
            t0 = time.perf_counter()
            result = allocate_paused_gc(step, memory, cache)
            times.append(time.perf_counter() - t0)
            memory = result.memory
    finally:
        gc.unfreeze()
    assert result is not None
    charging = sum(1 for r in result.evses.values() if r.charging_current > 0)
    paused = sum(1 for r in result.evses.values() if r.paused)
    times.sort()
    p99 = times[min(len(times) - 1, int(len(times) * 0.99))]
    return statistics.median(times), p99, charging, paused


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer runs")
    parser.add_argument("--sizes", default="", help="only these sizes, e.g. 1000,10000")
    args = parser.parse_args()
    sizes = [(10, 2000), (100, 1000), (1_000, 300), (10_000, 60)]
    if args.sizes:
        sizes = [(n, r) for n, r in sizes if str(n) in args.sizes.split(",")]
    if args.quick:
        sizes = [(n, max(5, r // 10)) for n, r in sizes]
    print("allocate() as the service runs it; median and p99 in ms per kind of run")
    print(f"{'EVSEs':>7} {'runs':>5} " + " ".join(f"{kind:>17}" for kind in KINDS)
          + f" {'charging':>9} {'paused':>7}")  # fmt: skip
    for n, runs in sizes:
        cells: list[str] = []
        charging = paused = 0
        for kind in KINDS:
            median, p99, charging, paused = measure(n, runs, kind)
            cells.append(f"{median * 1e3:>8.3f} {p99 * 1e3:>8.3f}")
        print(f"{n:>7} {runs:>5} " + " ".join(cells) + f" {charging:>9} {paused:>7}")


if __name__ == "__main__":
    main()
