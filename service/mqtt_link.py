"""Binds the service state to the bus: announces configuration, params and device info as
retained topics, and feeds device states and `set` requests from the bus into the state.

Commands come first. Device info and params are for display: what changed is collected and
published a moment later, in slices, and never while the control loop has a run to do (a
meter reading waiting, or a run busy), so that the info a burst of EVSE reports causes never
stands between a meter reading and the commands that answer it, neither on the event loop
nor in the socket's queue ahead of them.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable
from typing import Any, Protocol

from service.bus import MqttBus, Subscription
from service.control_lane import LANE, MAIN, ControlLane
from service.core.config_edit import EditError
from service.core.dev_info import redact_device
from service.state import RejectedMessage, ServiceState
from service.topics import Topics

log = logging.getLogger(__name__)


def encode(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


# Device info is for display: batching it a moment keeps a burst of states (or one run that
# changes a thousand EVSEs) from delaying the commands, which go out first.
INFO_DELAY_S = 0.05
# Infos published between two looks at the control loop (about a millisecond of work), and
# how long they wait at most for a control loop that stays busy.
INFO_SLICE = 50
INFO_MAX_WAIT_S = 2.0
INFO_POLL_S = 0.002
# After a burst of commands display work waits while the broker passes them on (about this
# long per command for mosquitto on a small machine): infos published meanwhile, and the
# CPU their making takes, would delay the commands on their way to the wallboxes. 60 us: a
# bare echo of 1,000 commands through mosquitto on this project's 2-core machine takes
# 55-69 ms to reach a subscriber (bench_reaction's floor); at 20 us the info of a thousand
# EVSEs went out while the last commands were still on their way (the reaction right after
# the reports: 2.02x the echo at the median of five runs, 1.75-1.80x in three at 60 us).
BROKER_S_PER_COMMAND = 60e-6


def _never_busy() -> bool:
    return False


class InfoObserver(Protocol):
    """Sees every params and info payload as it is published (the dashboard's feed)."""

    def params(self, payload: bytes) -> None: ...
    def info(self, dev_id: str, payload: bytes, decoded: dict[str, Any] | None = None) -> None:
        """`decoded`: the object `payload` encodes (json.loads(payload)), when at hand."""
    def removed(self, dev_id: str) -> None: ...


class MqttLink:
    def __init__(self, state: ServiceState, topics: Topics) -> None:
        self.state = state
        self.topics = topics
        self.bus: MqttBus | None = None
        # Meter readings in and commands out on a connection of their own (the wiring sets it).
        self.lane: ControlLane | None = None
        self._pending: set[asyncio.Task[None]] = set()
        self._dirty_info: set[str] = set()
        self._params_dirty = False
        self._flush: asyncio.Task[None] | None = None
        self._last_info: dict[str, bytes] = {}
        self._last_params = b""
        # True while the control loop has a run to do or is in one (ControlLoop.busy); the
        # wiring sets it.
        self.control_busy: Callable[[], bool] = _never_busy
        self.observers: list[InfoObserver] = []
        # Told every command as it is published (the HTTP-input bridge in this process).
        self.command_listeners: list[Callable[[str, bytes], None]] = []
        self._unflushed_commands = 0
        self._commands_pass_until = 0.0  # monotonic

    def subscriptions(self) -> list[Subscription]:
        return [
            # QoS 0: at QoS 1 the broker hands a client at most 20 unacknowledged messages at
            # a time, so a meter reading would wait behind a burst of EVSE reports for their
            # acknowledgements. QoS 1 would buy nothing here: the session is clean, so what
            # is in flight is lost with the connection anyway, and the next state replaces it.
            (self.topics.all_devices("state"), 0),
            self.topics.all_devices("set"),
            # Retained configs of devices deleted while we were away are cleared on sight.
            self.topics.all_devices("config"),
        ]

    def attach(self, bus: MqttBus) -> None:
        self.bus = bus
        self.state.listeners.append(self)
        self.publish_all()

    def observe(self, observer: InfoObserver) -> None:
        """Adds an observer, first handing it what was published so far."""
        observer.params(self._last_params or encode(self.state.params_info()))
        for dev_id, payload in self._last_info.items():
            observer.info(dev_id, payload)
        self.observers.append(observer)

    def publish_all(self) -> None:
        self.params_changed()
        for dev_id in self.state.installation.devices:
            self.device_changed(dev_id)

    # -- StateListener ---------------------------------------------------------------------

    def params_changed(self) -> None:
        if self.bus is not None:
            self._last_params = encode(self.state.params_info())
            self.bus.hold_retained(self.topics.params, self._last_params)
            for observer in self.observers:
                observer.params(self._last_params)

    def device_changed(self, dev_id: str) -> None:
        if self.bus is None or dev_id not in self.state.installation.devices:
            return
        config = redact_device(self.state.installation.devices[dev_id].model_dump())
        self.bus.hold_retained(self.topics.config(dev_id), encode(config))
        # A configuration change shows at once: clients read it back right after set_params.
        info = self.state.device_info(dev_id)
        payload = encode(info)
        self._last_info[dev_id] = payload
        self.bus.hold_retained(self.topics.info(dev_id), payload, qos=0)
        for observer in self.observers:
            observer.info(dev_id, payload, info)

    def device_removed(self, dev_id: str) -> None:
        self._last_info.pop(dev_id, None)
        self._dirty_info.discard(dev_id)
        for observer in self.observers:
            observer.removed(dev_id)
        if self.bus is None:
            return
        for leaf in ("config", "info"):
            self.bus.hold_retained(self.topics.device(dev_id, leaf), None)
        # Cleared where it is held, or a reconnect of that connection would bring it back.
        command_bus = self._command_bus()
        if command_bus is not None:
            command_bus.hold_retained(self.topics.command(dev_id), None)

    def device_state_changed(self, dev_id: str) -> None:
        self._dirty_info.add(dev_id)
        # Virtual meters follow the others (identical payloads are not sent again).
        self._dirty_info.update(self.state.virtual_meters())
        self._schedule_flush()

    # -- ControlLoop's sink ----------------------------------------------------------------

    def _command_bus(self) -> MqttBus | None:
        return self.lane.bus if self.lane is not None and self.lane.bus is not None else self.bus

    def publish_command(self, dev_id: str, payload: bytes) -> None:
        # QoS 0: a QoS 1 burst of a thousand commands costs twice the CPU, and the broker then
        # delivers at QoS 1 to each bridge in windows of 20 unacknowledged messages. Nothing
        # is lost by it: commands are retained, held across reconnects and repeated each cycle,
        # and a bridge that hears none applies its fail-safe.
        bus = self._command_bus()
        if bus is not None:
            bus.hold_retained(self.topics.command(dev_id), payload, qos=0)
            self._unflushed_commands += 1
        self.preview_command(dev_id, payload)

    def preview_command(self, dev_id: str, payload: bytes) -> None:
        """A command that goes on the bus a moment later (an answers-only one): the
        in-process listeners hear it now."""
        for listener in self.command_listeners:
            listener(dev_id, payload)

    def flush_commands(self) -> None:
        """The commands of a run leave now, ahead of whatever the loop does next."""
        bus = self._command_bus()
        if bus is not None:
            bus.flush()
        self._commands_pass_until = max(
            self._commands_pass_until,
            time.monotonic() + self._unflushed_commands * BROKER_S_PER_COMMAND,
        )
        self._unflushed_commands = 0

    def results_changed(self, dev_ids: set[str], params: bool) -> None:
        self._dirty_info |= dev_ids
        self._dirty_info.update(self.state.virtual_meters())
        self._params_dirty = self._params_dirty or params
        self._schedule_flush()

    def _schedule_flush(self) -> None:
        if self._flush is None:
            self._flush = asyncio.get_running_loop().create_task(
                self._flush_later(), name="info-flush"
            )

    async def _flush_later(self) -> None:
        try:
            await asyncio.sleep(INFO_DELAY_S)
            while self._dirty_info or self._params_dirty:
                await self._control_idle()
                self.flush_info(INFO_SLICE)
                # Let the bus dispatch what came meanwhile (a meter reading) before the next
                # slice.
                await asyncio.sleep(0)
        finally:
            self._flush = None

    async def _control_idle(self) -> None:
        """Returns once the control loop has nothing to do and the last burst of commands
        has had its time to pass the broker (or after INFO_MAX_WAIT_S)."""
        deadline = time.monotonic() + INFO_MAX_WAIT_S
        # Polled: "busy" is a wake-up flag and a lock of the control loop together.
        while (now := time.monotonic()) < deadline and (  # noqa: ASYNC110
            self.control_busy() or now < self._commands_pass_until
        ):
            await asyncio.sleep(INFO_POLL_S)

    def flush_info(self, limit: int | None = None) -> None:
        """Publishes what changed since the last flush (at most `limit` devices' infos; the
        rest stays due), skipping identical payloads."""
        if self.bus is None:
            self._dirty_info.clear()
            self._params_dirty = False
            return
        if self._params_dirty:
            self._params_dirty = False
            payload = encode(self.state.params_info())
            if payload != self._last_params:
                self._last_params = payload
                self.bus.hold_retained(self.topics.params, payload)
                for observer in self.observers:
                    observer.params(payload)
        dirty = self._dirty_info
        count = len(dirty) if limit is None else min(limit, len(dirty))
        for _ in range(count):
            dev_id = dirty.pop()
            if dev_id not in self.state.installation.devices:
                continue
            info = self.state.device_info(dev_id)
            payload = encode(info)
            if payload != self._last_info.get(dev_id):
                self._last_info[dev_id] = payload
                # QoS 0, like the commands: display data, retained and held across
                # reconnects; at QoS 1 a burst of infos brings as many PUBACKs to read.
                self.bus.hold_retained(self.topics.info(dev_id), payload, qos=0)
                for observer in self.observers:
                    observer.info(dev_id, payload, info)

    def close(self) -> None:
        if self._flush is not None:
            self._flush.cancel()
            self._flush = None

    # -- incoming ----------------------------------------------------------------------------

    def on_message(self, topic: str, payload: bytes, retained: bool) -> None:
        parsed = self.topics.parse_device_topic(topic)
        if parsed is None:
            return
        dev_id, leaf = parsed
        if leaf == "state":
            if self.lane is not None and not self.lane.hand_on(MAIN, dev_id, payload):
                return  # the control lane's copy came first
            self._on_state(dev_id, payload)
        elif leaf == "set" and retained:
            # A retained set would be applied again at every start, over any later change
            # by the admin: a set counts only when it is sent (docs/mqtt.md).
            self._reject("set", f"set for {dev_id}: retained, ignored (publish it unretained)")
        elif leaf == "set":
            self._on_set(dev_id, payload)
        elif leaf == "config" and payload and dev_id not in self.state.installation.devices:
            log.info("clearing retained topics of unknown device %s", dev_id)
            self.device_removed(dev_id)

    def on_lane_message(self, topic: str, payload: bytes, retained: bool) -> None:
        """A message on the control lane: a meter's state, unless its twin on the main
        connection came first."""
        parsed = self.topics.parse_device_topic(topic)
        if parsed is None or parsed[1] != "state" or self.lane is None:
            return
        if self.lane.hand_on(LANE, parsed[0], payload):
            self._on_state(parsed[0], payload)

    def _reject(self, reason: str, detail: str) -> None:
        log.warning("rejected MQTT message: %s", detail)
        if self.bus is not None:
            self.bus.stats.reject(reason, detail)

    def _on_state(self, dev_id: str, payload: bytes) -> None:
        try:
            self.state.record_state(dev_id, payload)
        except RejectedMessage as exc:
            self._reject("state", str(exc))

    def _on_set(self, dev_id: str, payload: bytes) -> None:
        try:
            patch = json.loads(payload)
        except (ValueError, UnicodeDecodeError, RecursionError) as exc:
            self._reject("set", f"set for {dev_id}: not JSON ({exc})")
            return
        task = asyncio.get_running_loop().create_task(self._apply_set(dev_id, patch))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def _apply_set(self, dev_id: str, patch: Any) -> None:
        try:
            await self.state.set_device(dev_id, patch)
        except EditError as exc:
            self._reject("set", f"set for {dev_id}: {exc}")
