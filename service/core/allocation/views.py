"""Plain-tuple views of an EVSE's configuration and state, made once per object.

Reading a pydantic model's attribute costs several type lookups (its __getattr__ hook); a
verdict reads dozens. The cache keeps each view while its EVSE's configuration or state is
the same object.
"""

from __future__ import annotations

from math import isfinite
from operator import itemgetter
from typing import Final, NamedTuple

from service.core.allocation.model import STATE_OFFLINE
from service.core.models import EvseConfig, EvseState
from service.core.phases import LEARN_THRESHOLD_MA, ROTATION

# NamedTuple() runs a Python-level __new__; tuple.__new__ builds the same object in C.
new = tuple.__new__


class ConfigView(NamedTuple):
    config: EvseConfig  # the object viewed: the view is valid while it is the same object
    enabled: bool
    group: int
    rotation: int
    used_phases: int
    minimum: int  # min_charging_cur raised to battery_save_threshold, at least 1 mA
    static_max: int | None  # max_charging_cur when it is a number (not an expression)


def config_view(cfg: EvseConfig) -> ConfigView:
    minimum = max(cfg.min_charging_cur, cfg.battery_save_threshold, 1)
    static_max = cfg.max_charging_cur if isinstance(cfg.max_charging_cur, int) else None
    return new(
        ConfigView,
        (cfg, cfg.device_enabled, cfg.group, cfg.phase_rotation, cfg.used_phases, minimum,
         static_max),
    )  # fmt: skip


class StateView(NamedTuple):
    state: EvseState
    s: int
    c0: int
    c1: int
    c2: int
    bad: bool  # com_err or offline
    rfid: str
    power: float  # W: reported, else from currents and voltages
    metered: bool  # reports its own energy (total_energy)
    reported_max: int | None  # a max_charging_current of its own (0 counts as none)
    measured: int  # bit mask of the phases drawing at least LEARN_THRESHOLD_MA
    drawn: tuple[int, int, int]  # the positive currents (EVSE-local phases), for grid_draw


def state_view(st: EvseState) -> StateView:
    # The model's fields from its __dict__, where pydantic keeps them: a read by attribute
    # looks the name up on the class first, and a busy site makes a view of every state.
    fields = st.__dict__
    c0, c1, c2 = fields["current"]
    power = fields["power_w"]
    # The state model lets NaN and inf through; then the currents tell the power.
    if power is None or not isfinite(power):
        vol = fields["voltage"]
        power = (
            (c0 * vol[0] if c0 > 0 else 0.0)
            + (c1 * vol[1] if c1 > 0 else 0.0)
            + (c2 * vol[2] if c2 > 0 else 0.0)
        ) / 1000
    at = LEARN_THRESHOLD_MA
    measured = (1 if c0 >= at else 0) | (2 if c1 >= at else 0) | (4 if c2 >= at else 0)
    s = fields["state"]
    return new(
        StateView,
        (st, s, c0, c1, c2, fields["com_err"] or s == STATE_OFFLINE, fields["rfid"], power,
         fields["total_energy"] is not None, fields["max_charging_current"] or None, measured,
         (c0 if c0 > 0 else 0, c1 if c1 > 0 else 0, c2 if c2 > 0 else 0)),
    )  # fmt: skip


def soft_power(power: float, metered: bool) -> float:
    """W the soft meter counts for an EVSE: its power when it reports no energy itself."""
    return power if power > 0 and not metered else 0.0


def _gathers() -> tuple[itemgetter[tuple[int, ...]], ...]:
    gathers = []
    for r in ROTATION:
        # Each rotation puts each EVSE phase on a grid phase of its own: grid phase j takes
        # the EVSE phase that rotates onto it.
        assert sorted(r) == [0, 1, 2]
        gathers.append(itemgetter(*(r.index(j) for j in range(3))))
    return tuple(gathers)


# GATHER[rotation](currents on the EVSE's phases) → the same currents on the grid phases.
GATHER: Final = _gathers()


def grid_draw(rotation: int, c0: int, c1: int, c2: int) -> tuple[int, int, int]:
    """An EVSE's positive currents moved onto the grid phases."""
    d0, d1, d2 = GATHER[rotation]((c0 if c0 > 0 else 0, c1 if c1 > 0 else 0, c2 if c2 > 0 else 0))
    return d0, d1, d2
