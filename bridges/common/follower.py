"""Following the core's commands, and the fail-safe that a bridge applies on its own.

The rule (docs/architecture.md, "Fail-safe in the bridge"): an EVSE gets its configured
`failsafe_current` when the core's `status` is not `online` (its last will, or a goodbye),
or when its bridge has heard no fresh command for the staleness age (`stale_time`, or 3
cycles). A retained command is not fresh: after a reconnect the broker hands out the last
one, however old. Until the core's first status arrives, nothing is applied (a start must not
stop every wallbox), and the staleness grace covers that time.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from service.core.contract import (
    Command,
    ParamsView,
    charging_allowed,
    effective_current,
    is_online,
    parse_command,
)

log = logging.getLogger(__name__)

# Until the core's params arrive: 3 cycles of the default cycle time.
DEFAULT_STALE_S = ParamsView().stale_after_s
# Shorter than this, one late command would already stop a wallbox.
MIN_STALE_S = 0.5


@dataclass(frozen=True, slots=True)
class Control:
    """What the core asks of an EVSE (the command topic's control fields)."""

    device_enabled: bool
    charging_enabled: bool
    paused: bool
    charging_current: int  # mA

    @classmethod
    def from_command(cls, command: Command) -> Control:
        return cls(
            command.device_enabled,
            command.charging_enabled,
            command.paused,
            command.charging_current,
        )

    @property
    def charging_allowed(self) -> bool:
        return charging_allowed(self)

    @property
    def effective_current(self) -> int:
        """mA the wallbox may draw: 0 unless charging is allowed."""
        return effective_current(self)


def failsafe_control(failsafe_current: int) -> Control:
    return Control(True, failsafe_current > 0, False, failsafe_current)


def parse_control(payload: bytes) -> Control | None:
    """A command message as a Control; None for one that is not a command."""
    command = parse_command(payload)
    return None if command is None else Control.from_command(command)


@dataclass
class Followed:
    """One EVSE's side of the conversation with the core."""

    failsafe_current: int
    command: Control | None = None
    # clock time of the last fresh command (a retained one at subscribe time isn't).
    heard_at: float = 0.0
    # The fail-safe is what the EVSE should have now (as of the last `wanted`).
    failsafe: bool = False


class CommandFollower:
    """The commands of a bridge's EVSEs and the core's status; says what each should have."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.devices: dict[str, Followed] = {}
        # None until the core's retained status arrives.
        self.core_online: bool | None = None
        self.stale_s = DEFAULT_STALE_S

    def follow(self, dev_id: str, failsafe_current: int) -> Followed:
        """Starts (or restarts, after a configuration change) following an EVSE; the
        staleness grace starts now."""
        old = self.devices.get(dev_id)
        followed = Followed(failsafe_current, heard_at=self.clock())
        if old is not None:
            followed.command = old.command
        self.devices[dev_id] = followed
        return followed

    def forget(self, dev_id: str) -> None:
        self.devices.pop(dev_id, None)

    def restart_grace(self) -> None:
        """A bridge (re)starting its connection gives every EVSE a fresh staleness grace."""
        now = self.clock()
        for followed in self.devices.values():
            followed.heard_at = now

    def on_core_status(self, payload: bytes) -> bool:
        """The core's status; True when it changed (every EVSE should be looked at)."""
        online = is_online(payload)
        if online is self.core_online:
            return False
        log.info("core is %s", "online" if online else "offline")
        self.core_online = online
        return True

    def on_params(self, params: ParamsView) -> None:
        self.stale_s = max(MIN_STALE_S, params.stale_after_s)

    def on_command(self, dev_id: str, control: Control, retained: bool) -> None:
        followed = self.devices.get(dev_id)
        if followed is None:
            return
        followed.command = control
        if not retained:
            followed.heard_at = self.clock()

    def wanted(self, dev_id: str) -> tuple[Control | None, bool]:
        """The control an EVSE should have now, and whether it is the fail-safe."""
        followed = self.devices[dev_id]
        fresh = self.clock() - followed.heard_at <= self.stale_s
        if self.core_online is False or not fresh:
            return failsafe_control(followed.failsafe_current), True
        if followed.command is not None and self.core_online:
            return followed.command, False
        return None, False

    def note_failsafe(self, dev_id: str, failsafe: bool) -> bool:
        """Records whether the EVSE is on its fail-safe now; True (and a warning) when that
        changed."""
        followed = self.devices[dev_id]
        if failsafe == followed.failsafe:
            return False
        log.warning(
            "%s: %s",
            dev_id,
            "no command from the core: applying the fail-safe current"
            if failsafe
            else "commands again: fail-safe ends",
        )
        followed.failsafe = failsafe
        return True
