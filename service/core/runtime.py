"""What the core knows of a device at run time, beyond its configuration."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from functools import cache

from service.core.allocation import EvseResult
from service.core.models import EvseState, MeterState
from service.core.pairing import Sample

# An EVSE's recent samples, to pair with a grid reading taken up to a few seconds earlier
# (about a staleness period of 1 s reports).
SAMPLES_KEPT = 16
CLOCK_RESET_S = 60.0


# What a partial state never takes over from the one before: when it was measured, an error
# it does not report, and a card shown (an event, acted upon once; not a lasting reading).
_NOT_CARRIED = frozenset({"ts", "com_err", "last_error", "rfid"})


@cache
def _carried(model: type[EvseState | MeterState]) -> frozenset[str]:
    # Per class once: model_fields is a slow property, and a thousand pushes come each second.
    return frozenset(model.model_fields) - _NOT_CARRIED


def carry_over(
    previous: EvseState | MeterState | None, new: EvseState | MeterState
) -> EvseState | MeterState:
    """`new` with the fields its message did not have taken from `previous`: an HTTP-input
    device pushes what it has (`current` alone, `power_w` alone), and a field it leaves out
    keeps its last value rather than falling back to the model's default (state 1, no
    current), which would end a session or zero a meter.

    One exception for the load balancing, not for the display: a meter push with `power_w`
    and without `current` stays a power-only reading (service/core/meter_power.py), its
    fresh power counted on every phase, however it was before; the currents of an earlier
    push are shown but not taken for the present load."""
    if previous is None or type(previous) is not type(new):
        return new
    given = new.model_fields_set
    missing = _carried(type(new)) - given
    if not missing or not missing & previous.model_fields_set:
        # Nothing to take over: what `new` leaves out, `previous` had at its default too (a
        # wallbox that pushes the same fields each time; a thousand of them each second).
        return new
    values = {name: getattr(previous if name in missing else new, name)
              for name in type(new).model_fields}  # fmt: skip
    fields_set = set(given) | (missing & previous.model_fields_set)
    if isinstance(new, MeterState) and "power_w" in given and "current" not in given:
        fields_set.discard("current")
    return type(new).model_construct(_fields_set=fields_set, **values)


@dataclass(slots=True)
class DeviceRuntime:
    state: EvseState | MeterState | None = None
    received_at: float | None = None
    com_err: bool = False
    com_errors: int = 0
    last_error: str = ""
    # When the present communication error began (unix s); None while there is none.
    last_com_err_at: float | None = None
    # When the last communication error ended (unix s); None before the first one ended.
    com_err_ended_at: float | None = None
    # The charging current (mA) of the last command sent to an EVSE; None before the first.
    commanded: int | None = None
    # The last allocation's verdict for an EVSE (None for meters and before the first run).
    result: EvseResult | None = None
    # When the core first looked for this device's data (set on the first run).
    watched_since: float | None = None

    # EVSEs only: (ts, currents) of the recent states, oldest first (see pairing).
    samples: deque[Sample] = field(default_factory=lambda: deque(maxlen=SAMPLES_KEPT))

    def record_state(self, state: EvseState | MeterState, now: float) -> bool:
        """Takes a new state; False for one measured before the state held (it arrived out
        of order): it then only joins the samples, the newer state stays."""
        if isinstance(state, EvseState):
            self._add_sample(state)
        held = self.state
        # Far older: the device's clock was set back (a restart), not a late message.
        if held is not None and held.ts - CLOCK_RESET_S < state.ts < held.ts:
            return False
        self.state = state
        self.received_at = now
        self.set_com_err(state.com_err, now, state.last_error)
        return True

    def _add_sample(self, state: EvseState) -> None:
        c = state.current
        sample: Sample = (state.ts, (c[0], c[1], c[2]))
        samples = self.samples
        if samples and samples[-1][0] - CLOCK_RESET_S > state.ts:
            samples.clear()
        if not samples or samples[-1][0] <= state.ts:
            samples.append(sample)
            return
        ordered = sorted([*samples, sample], key=lambda s: s[0])
        samples.clear()
        samples.extend(ordered[-SAMPLES_KEPT:])

    def set_com_err(self, failing: bool, now: float, error: str = "") -> None:
        """A device fails when its bridge says so or its data goes stale; com_errors counts
        the transitions into failure, last_error keeps the last reason after recovery."""
        if failing and not self.com_err:
            self.com_errors += 1
            self.last_com_err_at = now
        if failing and error:
            self.last_error = error
        if not failing:
            if self.com_err:
                self.com_err_ended_at = now
            self.last_com_err_at = None
        self.com_err = failing

    def com_err_secs(self, now: float) -> int:
        """Seconds since the last communication error, as the product counts them: while
        one lasts, how long it has lasted; after it, how long ago it ended; for a device that
        never had one, how long it has been watched (0 before the first run)."""
        if self.com_err and self.last_com_err_at is not None:
            since = self.last_com_err_at
        elif self.com_err_ended_at is not None:
            since = self.com_err_ended_at
        elif self.watched_since is not None:
            since = self.watched_since
        else:
            return 0
        return max(0, int(now - since))
