"""What the core knows of a device at run time, beyond its configuration."""

from __future__ import annotations

from dataclasses import dataclass

from service.core.allocation import EvseResult
from service.core.models import EvseState, MeterState


@dataclass(slots=True)
class DeviceRuntime:
    state: EvseState | MeterState | None = None
    received_at: float | None = None
    com_err: bool = False
    com_errors: int = 0
    last_error: str = ""
    # When the present communication error began (unix s); None while there is none.
    last_com_err_at: float | None = None
    # The last allocation's verdict for an EVSE (None for meters and before the first run).
    result: EvseResult | None = None
    # When the core first looked for this device's data (set on the first run).
    watched_since: float | None = None

    def record_state(self, state: EvseState | MeterState, now: float) -> None:
        self.state = state
        self.received_at = now
        self.set_com_err(state.com_err, now, state.last_error)

    def set_com_err(self, failing: bool, now: float, error: str = "") -> None:
        """A device fails when its bridge says so or its data goes stale; com_errors counts
        the transitions into failure, last_error keeps the last reason after recovery."""
        if failing and not self.com_err:
            self.com_errors += 1
            self.last_com_err_at = now
        if failing and error:
            self.last_error = error
        if not failing:
            self.last_com_err_at = None
        self.com_err = failing

    def com_err_secs(self, now: float) -> int:
        if not self.com_err or self.last_com_err_at is None:
            return 0
        return max(0, int(now - self.last_com_err_at))
