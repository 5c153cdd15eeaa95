"""The Modbus bridge: polls devices, publishes their states, applies the core's commands.

It learns its devices from the retained `devices/{id}/config` topics (every device whose
`dev_type` has a profile), so it needs no configuration of its own and may run on any host
that reaches the broker and the devices. Each device has its own task and period; devices at
one address share a connection (bridges/modbus/connection.py).

Fail-safe: an EVSE whose bridge has heard no fresh command for the staleness age, or while
the core's `status` is `offline`, gets its configured `failsafe_current` from the bridge
itself, and its state says `failsafe: true` until a command arrives from a core that is online.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import time
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from bridges.common.bridge import DeviceBridge
from bridges.common.directory import Change, Config
from bridges.common.follower import Control, Followed, parse_control
from bridges.modbus.connection import ConnectionPool, ModbusError
from bridges.modbus.profiles import PROFILES, Profile, load_profiles, profile_for
from bridges.modbus.rpc import execute
from service.bus import MqttBus
from service.core.dev_info import EVSE_STATE_OFFLINE
from service.topics import Topics

log = logging.getLogger(__name__)

MAX_ERROR_BACKOFF_S = 30.0
READBACK_S = 0.3
STOP_TIMEOUT_S = 3.0


def parse_command(payload: bytes) -> Control | None:
    return parse_control(payload)


@dataclass
class DeviceWorker:
    profile: Profile
    # The EVSE's side of the conversation with the core (bridges/common/follower.py); None
    # for a meter.
    follow: Followed | None = None
    task: asyncio.Task[None] | None = None
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    applied: Control | None = None
    errors_in_row: int = 0
    polls: int = 0
    poll_errors: int = 0

    @property
    def command(self) -> Control | None:
        return self.follow.command if self.follow is not None else None

    @property
    def failsafe(self) -> bool:
        return self.follow.failsafe if self.follow is not None else False


@dataclass
class BridgeStats:
    polls: int = 0
    poll_errors: int = 0
    rejected: int = 0
    latencies: list[float] = field(default_factory=list)


class ModbusBridge(DeviceBridge):
    def __init__(
        self,
        topics: Topics,
        name: str = "modbus",
        *,
        only: frozenset[str] | None = None,
        timeout: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
        keep_latencies: bool = False,
    ) -> None:
        super().__init__(topics, name, clock=clock)
        self.only = only
        self.pool = ConnectionPool(timeout=timeout)
        self.clock = clock
        self.workers: dict[str, DeviceWorker] = {}
        self.stats = BridgeStats()
        self._keep_latencies = keep_latencies
        self._bus: MqttBus | None = None
        self._rpc_tasks: set[asyncio.Task[None]] = set()

    # -- topics ------------------------------------------------------------------------------

    @property
    def rpc_topic(self) -> str:
        return f"{self.topics.base}/rpc/{self.name}/request"

    def extra_subscriptions(self) -> list[str]:
        return [self.rpc_topic]

    # -- incoming ------------------------------------------------------------------------------

    def serves(self, config: Config) -> bool:
        return (self.only is None or config.dev_id in self.only) and (
            config.dev_type in (PROFILES or load_profiles())
        )

    def reject(self, detail: str) -> None:
        self.stats.rejected += 1
        super().reject(detail)

    def other_message(self, topic: str, payload: bytes, retained: bool) -> None:
        if topic == self.rpc_topic:
            task = asyncio.get_running_loop().create_task(self._on_rpc(payload))
            self._rpc_tasks.add(task)
            task.add_done_callback(self._rpc_tasks.discard)

    def device_changed(self, change: Change) -> None:
        profile: Profile | None = None
        if change.new is not None:
            try:
                profile = profile_for(change.new.model_dump())
            except (ValueError, KeyError, TypeError) as exc:
                self.reject(f"config of {change.dev_id}: {exc}")
                self.follower.forget(change.dev_id)
        worker = self.workers.get(change.dev_id)
        if worker is not None and profile is not None and _same_polling(worker.profile, profile):
            # Nothing the poller uses changed (a name, a maximum, a rule; the fail-safe
            # current is the follower's): it goes on as it is, no reconnect, no gap.
            worker.profile.spec = profile.spec
            worker.follow = self.follower.devices.get(change.dev_id)
            log.debug("%s: configuration changed, polling goes on unchanged", change.dev_id)
            return
        if worker is not None:
            self._stop_worker(change.dev_id)
        if profile is not None:
            self._start_worker(DeviceWorker(profile, self.follower.devices.get(change.dev_id)))

    def command_changed(self, dev_id: str) -> None:
        worker = self.workers.get(dev_id)
        if worker is not None:
            worker.wake.set()

    async def _on_rpc(self, payload: bytes) -> None:
        try:
            request = json.loads(payload)
            request_id, reply_to = request["id"], str(request["reply_to"])
            dev_id, unit, query = str(request["dev_id"]), int(request["unit"]), request["query"]
        except (ValueError, KeyError, TypeError):
            self.reject("rpc request: not {id, reply_to, dev_id, unit, query}")
            return
        if not reply_to.startswith(f"{self.topics.base}/rpc/reply/"):
            self.reject(f"rpc request: reply topic {reply_to!r} outside the base topic")
            return
        worker = self.workers.get(dev_id)
        if worker is None:
            # Another bridge may own the device; it answers.
            return
        profile = worker.profile
        answer = await execute(
            self.pool.get(profile.spec.endpoint),
            unit,
            profile.register_map(unit),
            profile.rpc_function,
            query if isinstance(query, Mapping) else {},
        )
        self._publish(reply_to, {"id": request_id, "status": answer.status, "body": answer.body})

    # -- workers ------------------------------------------------------------------------------

    def _start_worker(self, worker: DeviceWorker) -> None:
        dev_id = worker.profile.spec.dev_id
        self.workers[dev_id] = worker
        if self._bus is not None:
            worker.task = asyncio.get_running_loop().create_task(
                self._run_device(worker), name=f"modbus-{dev_id}"
            )
        log.info(
            "polling %s (%s) at %s id %d every %.1f s",
            dev_id,
            worker.profile.spec.dev_type,
            worker.profile.spec.endpoint,
            worker.profile.spec.unit,
            worker.profile.spec.poll_s,
        )

    def _stop_worker(self, dev_id: str) -> None:
        worker = self.workers.pop(dev_id, None)
        if worker is not None and worker.task is not None:
            worker.task.cancel()

    async def _run_device(self, worker: DeviceWorker) -> None:
        spec = worker.profile.spec
        while True:
            await self._poll(worker)
            period = spec.poll_s
            if worker.errors_in_row:
                # A dead device is asked less often, so that it costs its line little time.
                period = min(MAX_ERROR_BACKOFF_S, spec.poll_s * 2 ** min(worker.errors_in_row, 6))
            deadline = self.clock() + period
            while (remaining := deadline - self.clock()) > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(worker.wake.wait(), remaining)
                if worker.wake.is_set():
                    worker.wake.clear()
                    if await self._apply(worker):
                        # Read the new draw back soon: until then the core counts the car's
                        # ramp, seen by the grid meter, as other load.
                        deadline = min(deadline, self.clock() + READBACK_S)

    def wanted(self, worker: DeviceWorker) -> tuple[Control | None, bool]:
        """The control an EVSE should have now, and whether it is the fail-safe."""
        return self.follower.wanted(worker.profile.spec.dev_id)

    async def _apply(self, worker: DeviceWorker) -> bool:
        """Writes what the EVSE should have now, if it changed; True when it wrote."""
        if worker.profile.kind != "evse" or worker.follow is None:
            return False
        control, failsafe = self.wanted(worker)
        self.follower.note_failsafe(worker.profile.spec.dev_id, failsafe)
        if control is None or control == worker.applied:
            return False
        try:
            await worker.profile.apply(self.pool.get(worker.profile.spec.endpoint), control)
        except ModbusError as exc:
            log.warning("%s: applying %s failed: %s", worker.profile.spec.dev_id, control, exc)
            worker.applied = None
            return False
        worker.applied = control
        return True

    async def _poll(self, worker: DeviceWorker) -> None:
        spec = worker.profile.spec
        # Each poll also checks the fail-safe, so it fires even when no message arrives.
        await self._apply(worker)
        started = time.perf_counter()
        conn = self.pool.get(spec.endpoint)
        state: dict[str, Any]
        try:
            state = await worker.profile.read_state(conn)
            worker.errors_in_row = 0
            readback = worker.profile.applied(state)
            if (
                worker.applied is not None
                and readback is not None
                and _effective(readback) != _effective(worker.applied)
            ):
                # The wallbox lost what we wrote (a restart): write it again at once.
                worker.applied = None
                worker.wake.set()
        except ModbusError as exc:
            worker.errors_in_row += 1
            worker.poll_errors += 1
            self.stats.poll_errors += 1
            state = {"com_err": True, "last_error": str(exc)[:500]}
            if worker.profile.kind == "evse":
                # Unreachable: offline (6), not "waiting for a vehicle" (1), which would end
                # the session of a car that is still plugged in.
                state["state"] = EVSE_STATE_OFFLINE
            if worker.errors_in_row == 1:
                log.warning("%s: %s", spec.dev_id, exc)
        elapsed = time.perf_counter() - started
        worker.polls += 1
        self.stats.polls += 1
        if self._keep_latencies:
            self.stats.latencies.append(elapsed)
        if worker.profile.kind == "evse":
            state["failsafe"] = worker.failsafe
        self.publisher.state(spec.dev_id, state)

    def _publish(self, topic: str, payload: Any, qos: int = 1) -> None:
        if self._bus is not None:
            data = json.dumps(payload, separators=(",", ":")).encode()
            self._bus.publish_nowait(topic, data, qos=qos)

    # -- lifetime ------------------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def running(self, bus: MqttBus) -> AsyncIterator[ModbusBridge]:
        self._bus = bus
        self.publisher.attach(bus)
        self.follower.restart_grace()
        for worker in self.workers.values():
            worker.task = asyncio.get_running_loop().create_task(self._run_device(worker))
        try:
            yield self
        finally:
            tasks = [w.task for w in self.workers.values() if w.task is not None]
            for task in tasks:
                task.cancel()
            if tasks:
                # Bounded: a device request stuck in a library must not hold up the stop.
                await asyncio.wait(tasks, timeout=STOP_TIMEOUT_S)
            for worker in self.workers.values():
                worker.task = None
            for task in list(self._rpc_tasks):
                task.cancel()
            self.pool.close()
            self.publisher.detach()
            self._bus = None


def _same_polling(old: Profile, new: Profile) -> bool:
    """Whether a poller of `old` reads `new`'s device the same way: same profile, endpoint,
    Modbus id, period and register map."""
    return type(old) is type(new) and dataclasses.replace(
        old.spec, failsafe_current=new.spec.failsafe_current
    ) == new.spec


def _effective(control: Control) -> int:
    return control.effective_current

