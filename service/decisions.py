"""Why the load balancer decided what it did: DEBUG lines per run, and scenario recordings.

`DecisionLog` writes, per run and only while the logger `service.decisions` is at DEBUG, the
run's duration, the budgets per group and phase, and each EVSE's verdict and reason when they
changed since the EVSE's last line (unchanged ones stay silent). With DEBUG off a run costs
one level check.

`ScenarioRecorder` writes each run, while diagnostic logging is on (`set_diag_logging`), as
a step of a JSON scenario in the format of tests/scenarios (see the docstring of
tests/allocation/test_scenarios.py): the installation first, then per run the inputs the
allocation saw (time, params when they changed, every device's state, its age and the draw
counted for it) and the allocation's results as `expect`, so that the scenario runner can
replay the recording and check that it decides the same. The file is valid JSON after every
step (the closing brackets are rewritten), bounded in size, and a new file begins when the
set of devices, the users or the staleness age change.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

from service.core.allocation import Allocation, AllocationInput, EvseResult

log = logging.getLogger("service.decisions")

PHASES = ("L1", "L2", "L3")
# One recording (all its files together) stops growing here.
MAX_RECORDING_BYTES = 20_000_000
_TAIL = b"\n]}\n"


def _verdict(r: EvseResult) -> tuple[Any, ...]:
    return (r.device_enabled, r.charging_enabled, r.paused, r.charging_current, r.reason)


def _describe(r: EvseResult) -> str:
    if not r.device_enabled:
        what = "off"
    elif r.paused:
        what = "paused"
    elif not r.charging_enabled:
        what = "not charging"
    else:
        what = f"{r.charging_current} mA"
    extra = f", allocated {r.current} mA" if r.current != r.charging_current else ""
    return f"{what} ({r.reason}; target {r.target} mA{extra})"


class DecisionLog:
    """DEBUG lines that explain each run; silent and nearly free at INFO."""

    def __init__(self, logger: logging.Logger = log) -> None:
        self.log = logger
        self._said: dict[str, tuple[Any, ...]] = {}

    def run(self, inp: AllocationInput, result: Allocation, elapsed_s: float) -> None:
        if not self.log.isEnabledFor(logging.DEBUG):
            # What was said is forgotten, so that turning DEBUG on shows every EVSE once.
            self._said.clear()
            return
        budgets = "; ".join(
            f"group {group}: "
            + " ".join(f"{p} {mA / 1000:.1f} A" for p, mA in zip(PHASES, per_phase, strict=True))
            for group, per_phase in sorted(result.budget_per_phase.items())
        )
        self.log.debug(
            "run at %.3f took %.2f ms: %d EVSEs, %d meters; budgets %s%s%s",
            inp.now,
            elapsed_s * 1000,
            len(inp.evses),
            len(inp.meters),
            budgets or "none",
            "; grid meter lost" if result.grid_meter_lost else "",
            f"; overdraft {result.overdraft_active} mA" if result.overdraft_active else "",
        )
        for dev_id, r in result.evses.items():
            verdict = _verdict(r)
            if self._said.get(dev_id) == verdict:
                continue
            self._said[dev_id] = verdict
            self.log.debug("%s: %s", dev_id, _describe(r))
        for gone in self._said.keys() - result.evses.keys():
            del self._said[gone]


def _state(state: Any) -> Any:
    return None if state is None else state.model_dump(mode="json")


class ScenarioRecorder:
    """Appends each run to a scenario file while `active()` says so."""

    def __init__(
        self,
        directory: Path,
        active: Callable[[], bool],
        *,
        max_bytes: int = MAX_RECORDING_BYTES,
    ) -> None:
        self.directory = directory
        self.active = active
        self.max_bytes = max_bytes
        self.path: Path | None = None
        self._file: IO[bytes] | None = None
        self._shape: tuple[Any, ...] | None = None
        self._params: dict[str, Any] | None = None
        self._configs: dict[str, dict[str, Any]] = {}
        self._written = 0  # bytes of this recording, every file
        self._full = False
        self._steps = 0

    def run(self, inp: AllocationInput, result: Allocation) -> None:
        if not self.active():
            self.close()
            self._written = 0
            self._full = False
            return
        if self._full:
            return
        try:
            self._record(inp, result)
        except OSError:
            log.exception("writing the diagnostic scenario failed; recording stops")
            self.close()
            self._full = True

    def _record(self, inp: AllocationInput, result: Allocation) -> None:
        shape = (
            tuple(inp.evses),
            tuple(inp.meters),
            tuple(sorted(inp.users)),
            tuple(u.model_dump_json() for _, u in sorted(inp.users.items())),
            inp.stale_after_s,
            inp.utc_offset_s,
        )
        if self._file is None or shape != self._shape:
            self._begin(inp, shape)
        params = inp.params.model_dump(mode="json")
        step: dict[str, Any] = {"now": inp.now}
        if params != self._params:
            step["params"] = params
            self._params = params
        step["evses"] = {
            dev_id: self._device(dev_id, ev.config.model_dump(mode="json"), {
                "state": _state(ev.state),
                "age": ev.state_age_s,
                "counted_current": (
                    None if ev.counted_current is None else list(ev.counted_current)
                ),
                "ramp_credit": ev.ramp_credit,
                # What else the control loop tells the allocation of the EVSE's transitions:
                # a replay without them budgets differently while cars ramp.
                "draw_spread": list(ev.draw_spread),
                "commanded_above_max": ev.commanded_above_max,
                "car_limit": ev.car_limit,
                "own_ramp": ev.own_ramp,
            })
            for dev_id, ev in inp.evses.items()
        }  # fmt: skip
        step["meters"] = {
            dev_id: self._device(
                dev_id,
                m.config.model_dump(mode="json"),
                {"state": _state(m.state), "age": m.state_age_s},
            )
            for dev_id, m in inp.meters.items()
        }
        step["expect"] = {
            **{dev_id: r._asdict() for dev_id, r in result.evses.items()},
            "allocation": {
                "grid_meter_lost": result.grid_meter_lost,
                "overdraft_cur": result.overdraft_cur,
                "cons_evse_power": result.cons_evse_power,
                "avail_evse_power": result.avail_evse_power,
                "budget_per_phase": {
                    str(g): list(b) for g, b in result.budget_per_phase.items()
                },
            },
        }
        self._append(step)

    def _device(self, dev_id: str, config: dict[str, Any], spec: dict[str, Any]) -> Any:
        # The configuration goes into a step only when it changed (the runner merges it).
        if self._configs.get(dev_id) != config:
            self._configs[dev_id] = config
            spec = {"config": config, **spec}
        return spec

    def _begin(self, inp: AllocationInput, shape: tuple[Any, ...]) -> None:
        self.close()
        self.directory.mkdir(parents=True, exist_ok=True)
        stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(inp.now))
        path = self.directory / f"{stamp}.json"
        number = 1
        while path.exists():
            number += 1
            path = self.directory / f"{stamp}-{number}.json"
        header = {
            "description": (
                f"Recorded by chargebus while diagnostic logging was on, from {stamp}: "
                "each step is one run, its inputs and what the allocation decided."
            ),
            "stale_after_s": inp.stale_after_s,
            "utc_offset_s": inp.utc_offset_s,
            "groups": [g.model_dump(mode="json") for g in inp.groups],
            "users": [u.model_dump(mode="json") for _, u in sorted(inp.users.items())],
        }
        self._file = path.open("wb")
        self.path = path
        self._shape = shape
        self._params = None
        self._configs = {}
        self._steps = 0
        head = json.dumps(header, separators=(",", ":")).encode()[:-1] + b',"steps":['
        self._file.write(head + _TAIL)
        self._written += len(head) + len(_TAIL)
        log.info("recording the load balancer's runs as a scenario in %s", path)

    def _append(self, step: dict[str, Any]) -> None:
        assert self._file is not None
        body = json.dumps(step, separators=(",", ":")).encode()
        if self._written + len(body) > self.max_bytes:
            log.warning(
                "diagnostic scenario recording stops at %d bytes (%s)", self._written, self.path
            )
            self.close()
            self._full = True
            return
        # Over the closing brackets, which follow again: the file is valid after each step.
        self._file.seek(-len(_TAIL), 2)
        self._file.write((b"\n," if self._steps else b"\n") + body + _TAIL)
        self._file.flush()
        self._written += len(body) + 2
        self._steps += 1

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
            self._shape = None

