"""What the core knows of a device at run time, beyond its configuration."""

from __future__ import annotations

from dataclasses import dataclass

from service.core.models import EvseCommand, EvseState, MeterState


@dataclass(slots=True)
class DeviceRuntime:
    state: EvseState | MeterState | None = None
    received_at: float | None = None
    com_err: bool = False
    com_errors: int = 0
    last_error: str = ""
    # When the last communication error began (unix s); com_err_secs counts from it.
    last_com_err_at: float | None = None
    command: EvseCommand | None = None

    def record_state(self, state: EvseState | MeterState, now: float) -> None:
        if state.com_err and not self.com_err:
            self.com_errors += 1
            self.last_com_err_at = now
        if state.com_err and state.last_error:
            self.last_error = state.last_error
        self.com_err = state.com_err
        self.state = state
        self.received_at = now
