"""Plain-tuple views of an EVSE's configuration and state, made once per object.

Reading a pydantic model's attribute costs several type lookups (its __getattr__ hook); a
verdict reads dozens. The cache keeps each view while its EVSE's configuration or state is
the same object.
"""

from __future__ import annotations

from math import isfinite
from typing import NamedTuple

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


def state_view(st: EvseState) -> StateView:
    c0, c1, c2 = st.current
    power = st.power_w
    # The state model lets NaN and inf through; then the currents tell the power.
    if power is None or not isfinite(power):
        vol = st.voltage
        power = (
            (c0 * vol[0] if c0 > 0 else 0.0)
            + (c1 * vol[1] if c1 > 0 else 0.0)
            + (c2 * vol[2] if c2 > 0 else 0.0)
        ) / 1000
    at = LEARN_THRESHOLD_MA
    measured = (1 if c0 >= at else 0) | (2 if c1 >= at else 0) | (4 if c2 >= at else 0)
    return new(
        StateView,
        (st, st.state, c0, c1, c2, st.com_err or st.state == STATE_OFFLINE, st.rfid, power,
         st.total_energy is not None, st.max_charging_current or None, measured),
    )  # fmt: skip


def soft_power(power: float, metered: bool) -> float:
    """W the soft meter counts for an EVSE: its power when it reports no energy itself."""
    return power if power > 0 and not metered else 0.0


def grid_draw(rotation: int, c0: int, c1: int, c2: int) -> tuple[int, int, int]:
    """An EVSE's positive currents moved onto the grid phases."""
    out = [0, 0, 0]
    r = ROTATION[rotation]
    if c0 > 0:
        out[r[0]] += c0
    if c1 > 0:
        out[r[1]] += c1
    if c2 > 0:
        out[r[2]] += c2
    return out[0], out[1], out[2]
