"""The dashboard's site figures: grid and EVSE current per grid phase, and charging sessions."""

from __future__ import annotations

from service.core.models import (
    EvseConfig,
    EvseState,
    GroupConfig,
    Installation,
    MeterConfig,
    MeterState,
)
from service.core.site_figures import chart_sample, session_start, site_currents


def installation() -> Installation:
    return Installation(
        devices={
            "M1": MeterConfig(dev_type="meter_ajax", dev_id="M1", role=3),
            "M2": MeterConfig(dev_type="meter_ajax", dev_id="M2", role=2),
            "M3": MeterConfig(dev_type="meter_ajax", dev_id="M3", role=3, group=1),
            "E1": EvseConfig(dev_type="evse_ajax", dev_id="E1", phase_rotation=1),
            "E2": EvseConfig(dev_type="evse_ajax", dev_id="E2"),
        },
        groups=[GroupConfig(id=1, max_current=16000)],
    )


def test_grid_is_the_main_groups_grid_meter_and_evses_are_on_grid_phases() -> None:
    states: dict[str, EvseState | MeterState | None] = {
        "M1": MeterState(ts=1, current=[10000, 5000, 2000]),
        "M2": MeterState(ts=1, current=[9000, 9000, 9000]),
        "M3": MeterState(ts=1, current=[1000, 1000, 1000]),
        # Its own L1 is on grid L2 (rotation 1); a negative reading counts as nothing.
        "E1": EvseState(ts=1, current=[6000, 0, -500]),
        "E2": EvseState(ts=1, current=[7000, 7000, 7000]),
    }
    grid, evses = site_currents(installation(), states)
    assert grid == [10000, 5000, 2000]
    assert evses == [7000, 13000, 7000]
    assert chart_sample(100.04, grid, evses) == [100.0, 10.0, 5.0, 2.0, 7.0, 13.0, 7.0]


def test_without_a_grid_reading_the_chart_has_no_grid_line() -> None:
    grid, evses = site_currents(installation(), {"E2": EvseState(ts=1, current=[1000, 0, 0])})
    assert grid is None
    assert chart_sample(5, grid, evses)[1:4] == [None, None, None]


def test_a_session_begins_with_a_vehicle_and_ends_when_it_leaves() -> None:
    held = session_start(None, {"state": 1, "total_energy": 500}, 10)
    assert held is None
    held = session_start(held, {"state": 2, "total_energy": 500}, 20)
    assert held == (500.0, 20)
    # Charging, an error or offline on the way: the same session.
    for state in (3, 5, 6, 3):
        held = session_start(held, {"state": state, "total_energy": 900}, 30)
        assert held == (500.0, 20)
    assert session_start(held, {"state": 1, "total_energy": 900}, 40) is None


def test_a_grid_meter_that_reports_only_power_shows_its_current() -> None:
    """As the allocation counts it (meter_power): the current of its whole power on each
    phase with a voltage (where it flows is not known), not 0 A."""
    reading = MeterState.model_validate({"ts": 1, "power_w": 6900, "voltage": [230, 230, 230]})
    grid, _ = site_currents(installation(), {"M1": reading})
    assert grid == [30000, 30000, 30000]
