"""`DeviceBridge`: what every device bridge hears from the core, routed to its directory,
its command follower and its hooks.

A bridge subclasses it and writes only its device protocol:

- `serves(config)`: whether a configured device is this bridge's (by `dev_type`);
- `device_changed(change)`: a device came, changed or went (start or stop talking to it);
- `command_changed(dev_id)`: a command arrived, or the core's status changed (look at
  `follower.wanted(dev_id)` and apply it);
- optionally `other_message(topic, payload)` for topics of its own (`extra_subscriptions`).

Subscriptions (docs/mqtt.md): `devices/+/config`, `{base}/status`, `{base}/params`, and the
`devices/{id}/command` of each device it serves, followed as devices come and go (the runner
sets `subscriptions_changed`): a bridge with ten wallboxes on a site of a thousand does not
hear the other 990 commands of every run. Publishing goes through `publisher` (states, the
bridge's status).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from bridges.common.directory import Change, Config, DeviceDirectory
from bridges.common.follower import CommandFollower, parse_control
from bridges.common.publisher import StatePublisher
from service.core.contract import EvseConfig, ParamsView, parse_params
from service.topics import Topics

log = logging.getLogger(__name__)


class DeviceBridge:
    def __init__(
        self,
        topics: Topics,
        name: str,
        *,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.topics = topics
        self.name = name
        self.follower = CommandFollower(clock)
        self.directory = DeviceDirectory(self.serves)
        self.publisher = StatePublisher(topics, name, clock=wall_clock)
        # The core's params as far as bridges read them (cycle and staleness).
        self.params = ParamsView()
        self.rejected = 0
        # Set by the runner (MqttBus.replace_subscriptions): told when the subscriptions change.
        self.subscriptions_changed: Callable[[list[str]], None] | None = None
        self._commands_followed: frozenset[str] = frozenset()
        self._update_due = False

    # -- what a bridge writes ----------------------------------------------------------------

    def serves(self, config: Config) -> bool:
        raise NotImplementedError

    def device_changed(self, change: Change) -> None:
        raise NotImplementedError

    def command_changed(self, dev_id: str) -> None:
        raise NotImplementedError

    def extra_subscriptions(self) -> list[str]:
        return []

    def other_message(self, topic: str, payload: bytes, retained: bool) -> None:
        """A message on one of `extra_subscriptions`."""

    # -- topics ------------------------------------------------------------------------------

    @property
    def status_topic(self) -> str:
        return self.publisher.status_topic

    def subscriptions(self) -> list[str]:
        self._commands_followed = frozenset(self.follower.devices)
        return [
            self.topics.all_devices("config"),
            *(self.topics.command(dev_id) for dev_id in sorted(self._commands_followed)),
            self.topics.status,
            self.topics.params,
            *self.extra_subscriptions(),
        ]

    def _follow_commands(self) -> None:
        """The command topics follow the devices served: once per burst of configs (a
        set_params of a thousand devices), on the loop's next turn."""
        if self.subscriptions_changed is None or self._update_due:
            return
        if frozenset(self.follower.devices) == self._commands_followed:
            return
        self._update_due = True
        asyncio.get_running_loop().call_soon(self._update_subscriptions)

    def _update_subscriptions(self) -> None:
        self._update_due = False
        if self.subscriptions_changed is not None:
            self.subscriptions_changed(self.subscriptions())

    def on_message(self, topic: str, payload: bytes, retained: bool) -> None:
        if topic == self.topics.status:
            if self.follower.on_core_status(payload):
                for dev_id in list(self.follower.devices):
                    self.command_changed(dev_id)
            return
        if topic == self.topics.params:
            params = parse_params(payload)
            if params is None:
                self.reject("params: not a JSON object with valid cycle_time/stale_time")
            else:
                self.params = params
                self.follower.on_params(params)
            return
        parsed = self.topics.parse_device_topic(topic)
        if parsed is None:
            self.other_message(topic, payload, retained)
            return
        dev_id, leaf = parsed
        if leaf == "config":
            self._on_config(dev_id, payload)
        elif leaf == "command":
            self._on_command(dev_id, payload, retained)

    def reject(self, detail: str) -> None:
        """A message that breaks the contract: logged and counted, it changes nothing."""
        self.rejected += 1
        log.warning("%s bridge rejected: %s", self.name, detail)

    def _on_config(self, dev_id: str, payload: bytes) -> None:
        change = self.directory.on_config(dev_id, payload)
        if change is None:
            return
        if change.error:
            self.reject(f"config of {dev_id}: {change.error}")
            if change.old is None:
                return
        if change.new is None:
            self.follower.forget(dev_id)
        elif isinstance(change.new, EvseConfig):
            self.follower.follow(dev_id, change.new.failsafe_current)
        self.device_changed(change)
        self._follow_commands()

    def _on_command(self, dev_id: str, payload: bytes, retained: bool) -> None:
        if dev_id not in self.follower.devices or not payload:
            return
        control = parse_control(payload)
        if control is None:
            self.reject(f"command for {dev_id}: not a command object")
            return
        self.follower.on_command(dev_id, control, retained)
        self.command_changed(dev_id)
