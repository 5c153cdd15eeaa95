"""The load balancer's control loop: when to run the allocation and what to send.

A run starts as soon as a state message arrives (bursts coalesce: while a run is busy, any
number of new messages make exactly one follow-up run) and at least every `cycle_time` for
time rules and staleness. After each run the EVSE commands go out on
`devices/{id}/command`, retained:

* at once when they changed, decreases before increases, so that a reduction never waits
  behind a raise;
* for every EVSE whose new state the run used, with `state_ts` = that state's `ts`, so a
  bridge (set_ajax_evse) can wait for the answer to the very state it posted. A command that
  only answers (nothing but its `state_ts` is new) is handed to the in-process listeners at
  once and goes on the bus once no state has come for ANSWER_QUIET_S and no run is due, at
  the latest ANSWER_MAX_DELAY_S later: the answers to a burst of a thousand EVSE reports
  never stand between a meter reading and the commands it causes, and a run meanwhile sends
  its newer commands instead;
* all of them on the cycle, because the bridges' watchdogs expect to hear from the core.

Device info and params follow a moment later (see MqttLink), so they never delay a command.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import math
import time
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import NamedTuple, Protocol

from service.core.allocation import (
    R_DISABLED,
    Allocation,
    AllocationCache,
    AllocationInput,
    EvseResult,
    Memory,
    allocate,
)
from service.core.authorization import RfidResult
from service.core.contract import effective_current
from service.core.control_law import ControlMemory, ControlSettings, all_paused, govern
from service.core.models import EvseConfig, EvseState
from service.state import ServiceState

log = logging.getLogger(__name__)

# Above this many EVSEs a run takes milliseconds: it goes to a worker thread so that the
# event loop keeps serving the bus and HTTP meanwhile.
THREAD_THRESHOLD = 3000
ENERGY_SAVE_INTERVAL_S = 60.0
# In a burst of EVSE reports, a report-triggered run starts at least this long (or
# REPORT_RUN_SHARE times as long as the last run took) after the end of the previous run
# (see device_state_changed); a meter reading or a configuration change runs at once.
REPORT_RUN_SPACING_S = 0.02
REPORT_RUN_SHARE = 3
# Answers-only commands (see the module's docstring): how long they wait at least, how many go
# out between two looks at the loop, and how long they wait at most for a loop that stays busy.
# A burst of reports is over when no state came for ANSWER_QUIET_S; on a site where reports
# never pause the answers go out every ANSWER_MAX_DELAY_S (a bridge on another host waits
# that long at most for the answer to a set_ajax_evse). 0: with their run (answer_delay_s).
ANSWER_QUIET_S = 0.02
ANSWER_MAX_DELAY_S = 0.25
ANSWER_SLICE = 100
BUSY_POLL_S = 0.002


@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
    """The cyclic garbage collector paused. A run makes tens of thousands of short-lived
    objects that form no cycles (tuples; per command published, paho's message info with its
    lock): the young-generation collections they would trigger find nothing and cost a tenth
    of a run at 10,000 EVSEs, a few milliseconds of a thousand commands."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def allocate_paused_gc(
    inp: AllocationInput, memory: Memory, cache: AllocationCache | None = None
) -> Allocation:
    """allocate() with the cyclic garbage collector paused (gc_paused)."""
    with gc_paused():
        return allocate(inp, memory, cache)


# Called after each run with its input, the allocation's result, the commands as the control
# law made them (service.decisions), and the run's duration.
ResultHook = Callable[[AllocationInput, Allocation, Allocation, float], None]


class CommandSink(Protocol):
    def publish_command(self, dev_id: str, payload: bytes) -> None: ...
    def preview_command(self, dev_id: str, payload: bytes) -> None: ...
    def flush_commands(self) -> None: ...
    def results_changed(self, dev_ids: set[str], params: bool) -> None: ...


class Sent(NamedTuple):
    """What was last sent to one EVSE. A tuple: a run makes a thousand and compares each
    with the last (a frozen dataclass takes three times as long to make)."""

    device_enabled: bool
    charging_enabled: bool
    paused: bool
    charging_current: int
    state_ts: float | None


class Outgoing(NamedTuple):
    """One command to send. A tuple, as Sent."""

    dev_id: str
    sent: Sent
    payload: bytes


def commands_to_send(
    results: Mapping[str, EvseResult],
    state_ts: Mapping[str, float | None],
    previous: Mapping[str, Sent],
    now: float,
    *,
    refresh: bool,
) -> list[Outgoing]:
    """The commands of one run that must go out, decreases first. Pure."""
    cuts: list[Outgoing] = []
    rest: list[Outgoing] = []
    for dev_id, r in results.items():
        sent = Sent(
            _commanded_enabled(r),
            r.charging_enabled,
            r.paused,
            r.charging_current,
            state_ts.get(dev_id),
        )
        before = previous.get(dev_id)
        if not refresh and sent == before:
            continue
        payload = _command_json(sent, now)
        out = Outgoing(dev_id, sent, payload)
        (cuts if before is not None and _is_cut(before, sent) else rest).append(out)
    return cuts + rest


def _commanded_enabled(r: EvseResult) -> bool:
    """The command's device_enabled. A disabled device under disable_policy 1 (its minimum) or
    -1 (no limit) charges as the policy says; only policy 0 (reason "disabled") switches it
    off. The result's device_enabled is the configuration's, for display: sent as it is, a
    bridge would write 0 A and switch the wallbox off whatever the policy."""
    return r.device_enabled or r.reason != R_DISABLED


def fail_safe_commands(
    dev_ids: Iterable[str],
    state_ts: Mapping[str, float | None],
    previous: Mapping[str, Sent],
    now: float,
) -> list[Outgoing]:
    """What every EVSE is told after a run that failed: paused at 0 A. Pure.

    A failed run knows nothing about the budgets, so no current is known to fit: the sum of
    every EVSE's minimum may exceed the fuse, and the old commands were made for readings
    that have since changed (a run failing on a new state is what made them stale). 0 A
    cannot overload anything; a car resumes with the next run that succeeds. Sent only where
    it changes what the EVSE was told or answers a new state (so that set_ajax_evse gets an
    answer, not a timeout); a device that policy 0 switched off stays off."""
    out: list[Outgoing] = []
    for dev_id in dev_ids:
        before = previous.get(dev_id)
        sent = Sent(
            before.device_enabled if before is not None else True,
            True,
            True,
            0,
            state_ts.get(dev_id),
        )
        if sent != before:
            out.append(Outgoing(dev_id, sent, _command_json(sent, now)))
    return out


_JSON_BOOL = ("false", "true")


def _command_json(sent: Sent, now: float) -> bytes:
    # Formatted by hand: a run may send a thousand of these, and json.dumps costs five times
    # as much. repr() of a float is valid JSON (the values are finite).
    state_ts = "null" if sent.state_ts is None else repr(float(sent.state_ts))
    return (
        f'{{"device_enabled":{_JSON_BOOL[sent.device_enabled]},'
        f'"charging_enabled":{_JSON_BOOL[sent.charging_enabled]},'
        f'"paused":{_JSON_BOOL[sent.paused]},'
        f'"charging_current":{int(sent.charging_current)},'
        f'"ts":{float(now)!r},"state_ts":{state_ts}}}'
    ).encode()


def _is_cut(before: Sent, after: Sent) -> bool:
    return effective_current(after) < effective_current(before)


def answers_only(before: Sent | None, after: Sent) -> bool:
    """`after` tells the EVSE nothing new: it only answers a newer state (state_ts)."""
    return before is not None and before[:4] == after[:4] and before[4] != after[4]


@dataclass
class LoopStats:
    runs: int = 0
    failures: int = 0
    last_run_s: float = 0.0
    commands_sent: int = 0
    # Paused-at-0-A commands sent because a run failed (see fail_safe_commands).
    failsafe_commands: int = 0
    # Report or cycle runs given up for a meter reading that came meanwhile (run_once).
    given_way: int = 0


class ControlLoop:
    def __init__(
        self,
        state: ServiceState,
        sink: CommandSink,
        *,
        clock: Callable[[], float] = time.time,
        thread_threshold: int = THREAD_THRESHOLD,
        on_run: Callable[[float], None] | None = None,
        on_result: ResultHook | None = None,
        answer_delay_s: float = ANSWER_MAX_DELAY_S,
    ) -> None:
        self.state = state
        self.sink = sink
        self.clock = clock
        self.thread_threshold = thread_threshold
        self.stats = LoopStats()
        self._on_run = on_run
        self._on_result = on_result
        self._wake = asyncio.Event()
        self._lock = asyncio.Lock()
        self._sent: dict[str, Sent] = {}
        self._next_refresh = 0.0
        self._last_energy_save = time.monotonic()
        self._run_ended = -math.inf  # monotonic
        self._report_timer: asyncio.TimerHandle | None = None
        self._stopping = False
        # 0: answers go out with the run's other commands (the plant simulator's clock).
        self._answer_delay_s = answer_delay_s
        self._answers: dict[str, Outgoing] = {}
        self._answering: asyncio.Task[None] | None = None
        # A meter reading arrived since the present run began.
        self._meter_reading = False
        self._last_state_at = -math.inf  # monotonic, of the last state of any device

    # -- StateListener: every change may change the result -----------------------------------

    def params_changed(self) -> None:
        # A shorter cycle_time applies now, not after the old, longer cycle ran out.
        cycle_s = self.state.installation.params.cycle_time / 1000
        self._next_refresh = min(self._next_refresh, time.monotonic() + cycle_s)
        self.trigger()

    def device_changed(self, dev_id: str) -> None:
        self.trigger()

    def device_removed(self, dev_id: str) -> None:
        self._sent.pop(dev_id, None)
        self.trigger()

    def device_state_changed(self, dev_id: str) -> None:
        self._last_state_at = time.monotonic()
        # A meter reading may call for a cut: it runs at once. So does an EVSE report that
        # comes alone; but in a burst of reports (every wallbox reports each second, a broker
        # reconnect brings all at once), runs start at most every REPORT_RUN_SPACING_S:
        # a thousand reports make a few runs instead of hundreds, and a meter reading among
        # them finds the loop free.
        if not isinstance(self.state.installation.devices.get(dev_id), EvseConfig):
            # A report-triggered run under way gives way to it (see run_once).
            self._meter_reading = True
            self.trigger()
            return
        # At least three times as long as the last run took: report runs fill at most a
        # quarter of the time, leaving the machine to the broker (a burst of reports takes it
        # a while) and the loop mostly free for a meter reading (a run that is under way
        # gives way to it, see _compute).
        spacing = max(REPORT_RUN_SPACING_S, REPORT_RUN_SHARE * self.stats.last_run_s)
        wait = self._run_ended + spacing - time.monotonic()
        if wait <= 0:
            self.trigger()
        elif self._report_timer is None:
            self._report_timer = asyncio.get_running_loop().call_later(wait, self._reports_due)

    def _reports_due(self) -> None:
        self._report_timer = None
        self.trigger()

    def busy(self) -> bool:
        """A run is due or under way: display work (device info) waits (see MqttLink)."""
        return self._wake.is_set() or self._lock.locked()

    def trigger(self) -> None:
        self._wake.set()

    # -- events that act on the allocation's memory ------------------------------------------

    async def enter_rfid(self, rfid: str, dev_id: str | None) -> RfidResult:
        async with self._lock:
            outcome = self.state.enter_rfid(rfid, dev_id, self.clock())
        self.trigger()
        return outcome

    async def override(self, dev_id: str, flags: str, mamps: int | None) -> None:
        async with self._lock:
            self.state.override(dev_id, flags, mamps)
        self.trigger()

    async def reset_device(self, dev_id: str) -> None:
        """reset_device: between runs, so that no run in flight writes the session back."""
        async with self._lock:
            await self.state.reset_device(dev_id)
        self.trigger()

    # -- running --------------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[ControlLoop]:
        self.state.listeners.append(self)
        self._stopping = False
        task = asyncio.create_task(self._run(), name="control-loop")
        try:
            yield self
        finally:
            # Also a flag: on Python 3.11 asyncio.wait_for returns the result instead of
            # raising when the cancellation meets a wake-up (a state arriving as the service
            # stops), and the loop would go on for ever.
            self._stopping = True
            task.cancel()
            if self._report_timer is not None:
                self._report_timer.cancel()
            if self._answering is not None:
                self._answering.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            self.state.listeners.remove(self)
            await self.state.save_energy()

    async def _run(self) -> None:
        while not self._stopping:
            timeout = self._next_refresh - time.monotonic()
            if timeout > 0 and not self._wake.is_set():
                # asyncio.timeout, not wait_for: on Python 3.11 a cancel that meets the
                # wake-up in wait_for can be lost, and the service's stop then hangs.
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(timeout):
                        await self._wake.wait()
            self._wake.clear()
            refresh = time.monotonic() >= self._next_refresh
            if refresh:
                self._next_refresh = (
                    time.monotonic() + self.state.installation.params.cycle_time / 1000
                )
            try:
                await self.run_once(refresh=refresh)
            except Exception:
                # The loop must outlive any bad input: log it and try again next time.
                self.stats.failures += 1
                log.exception("load-balancing run failed")
                self._send_fail_safe()
                await asyncio.sleep(0.1)

    async def run_once(self, *, refresh: bool) -> Allocation:
        async with self._lock:
            started = time.perf_counter()
            # One pause from the input to the commands written: the collections it defers
            # come after them. Paused stage by stage, the deferred young-generation
            # collection ran as each stage ended, before the commands (2 ms after the
            # allocation alone, at a thousand EVSEs).
            with gc_paused():
                while True:
                    computed = await self._compute()
                    if computed is not None:
                        break
                    self.stats.given_way += 1
                    log.debug("a report run gave way to a meter reading")
                inp, allocated, result, control = computed
                now = inp.now
                self.state.control = control
                changed = self.state.apply_allocation(result, now)
                self._send(result, inp, now, refresh=refresh)
            elapsed = time.perf_counter() - started
            self._run_ended = time.monotonic()
        self.stats.runs += 1
        self.stats.last_run_s = elapsed
        if self._on_run is not None:
            self._on_run(elapsed)
        if self._on_result is not None:
            # After the commands went out: explaining a run must not delay it.
            self._on_result(inp, allocated, result, elapsed)
        self.sink.results_changed(changed, params=True)
        await self._write_back(result)
        return result

    async def _compute(
        self,
    ) -> tuple[AllocationInput, Allocation, Allocation, ControlMemory] | None:
        """One run's input, allocation and commands, committing nothing; None when a run
        that no meter reading asked for gave way to one that arrived meanwhile. Called with
        the collector paused (run_once).

        Such a run (EVSE reports, the cycle) looks at the bus between its stages: at a
        thousand EVSEs a run takes milliseconds, and a meter reading that arrives meanwhile
        must not wait for the end of a run it will make stale anyway. Giving up is safe: the
        stages are pure, and the allocation's cache never changes a result. A run for a
        meter reading does not give way."""
        yields = not self._meter_reading
        self._meter_reading = False
        # This run takes every report recorded so far; later ones schedule their own.
        if self._report_timer is not None:
            self._report_timer.cancel()
            self._report_timer = None
        self._wake.clear()
        inp = self.state.allocation_input(self.clock())
        if yields and await self._meter_reading_came():
            return None
        if len(inp.evses) >= self.thread_threshold:
            result = await asyncio.to_thread(
                allocate_paused_gc, inp, self.state.memory, self.state.allocation_cache
            )
        else:
            result = allocate_paused_gc(inp, self.state.memory, self.state.allocation_cache)
        if yields and await self._meter_reading_came():
            return None
        # What the plant can follow: cuts at once, raises once they held (control_law).
        commanded, control = govern(
            result, inp, self.state.control, ControlSettings.from_params(inp.params)
        )
        return inp, result, commanded, control

    async def _meter_reading_came(self) -> bool:
        await asyncio.sleep(0)  # the bus reads what is waiting
        return self._meter_reading

    def _send(
        self, result: Allocation, inp: AllocationInput, now: float, *, refresh: bool
    ) -> None:
        state_ts = {
            dev_id: (ev.state.ts if ev.state is not None else None)
            for dev_id, ev in inp.evses.items()
        }
        outgoing = commands_to_send(result.evses, state_ts, self._sent, now, refresh=refresh)
        sent = 0
        for out in outgoing:
            if self._answer_delay_s > 0 and answers_only(self._sent.get(out.dev_id), out.sent):
                self._answers[out.dev_id] = out
                self.sink.preview_command(out.dev_id, out.payload)
                continue
            self._answers.pop(out.dev_id, None)
            self.sink.publish_command(out.dev_id, out.payload)
            self._note_sent(out)
            sent += 1
        if sent:
            # Written now: the run's hooks and the display work come after.
            self.sink.flush_commands()
        self.stats.commands_sent += sent
        for gone in set(self._sent) - set(result.evses):
            del self._sent[gone]
            self._answers.pop(gone, None)
        if self._answers and (self._answering is None or self._answering.done()):
            self._answering = asyncio.get_running_loop().create_task(
                self._send_answers(), name="control-answers"
            )

    async def _send_answers(self) -> None:
        """The answers-only commands, in slices, once the reports paused and no run is due
        (at the latest after answer_delay_s); a run in between takes over those it sends."""
        deadline = time.monotonic() + self._answer_delay_s
        while self._answers:
            while (now := time.monotonic()) < deadline:
                quiet_at = self._last_state_at + ANSWER_QUIET_S
                if now >= quiet_at and not self.busy():
                    break
                await asyncio.sleep(min(max(quiet_at - now, BUSY_POLL_S), deadline - now))
            batch = [self._answers.pop(d) for d in list(self._answers)[:ANSWER_SLICE]]
            for out in batch:
                self.sink.publish_command(out.dev_id, out.payload)
                self._note_sent(out)
            self.sink.flush_commands()
            self.stats.commands_sent += len(batch)
            log.debug("sent %d answers-only commands, %d wait", len(batch), len(self._answers))
            await asyncio.sleep(0)
            deadline = max(deadline, time.monotonic() + BUSY_POLL_S)

    def _note_sent(self, out: Outgoing) -> None:
        self._sent[out.dev_id] = out.sent
        runtime = self.state.runtime.get(out.dev_id)
        if runtime is not None:
            # get_dev_info's last_set_charging_cur: the current the wallbox was told to use.
            runtime.commanded = effective_current(out.sent)

    def _send_fail_safe(self) -> None:
        """After a failed run no EVSE keeps a command made for older readings: each is paused
        at 0 A (fail_safe_commands), counted and logged."""
        try:
            runtime = self.state.runtime
            state_ts: dict[str, float | None] = {}
            for dev_id, config in self.state.installation.devices.items():
                if isinstance(config, EvseConfig):
                    rt = runtime.get(dev_id)
                    st = rt.state if rt is not None else None
                    state_ts[dev_id] = st.ts if isinstance(st, EvseState) else None
            # They answer every state: no answer waiting may follow them.
            self._answers.clear()
            outgoing = fail_safe_commands(state_ts, state_ts, self._sent, self.clock())
            for out in outgoing:
                self.sink.publish_command(out.dev_id, out.payload)
                self._note_sent(out)
            self.sink.flush_commands()
        except Exception:
            log.exception("fail-safe commands after a failed run could not be sent")
            return
        # The control law starts them again as it starts any car (settle, steps).
        self.state.control = all_paused(self.state.control, self.clock())
        self.stats.failsafe_commands += len(outgoing)
        self.stats.commands_sent += len(outgoing)
        if outgoing:
            log.warning(
                "run failed: %d EVSE(s) paused at 0 A until a run succeeds", len(outgoing)
            )

    async def _write_back(self, result: Allocation) -> None:
        if result.overdraft_cur != self.state.installation.params.overdraft_cur:
            await self.state.write_back_overdraft(result.overdraft_cur)
        if (
            self.state.energy_dirty
            and time.monotonic() - self._last_energy_save >= ENERGY_SAVE_INTERVAL_S
        ):
            self._last_energy_save = time.monotonic()
            await self.state.save_energy()

