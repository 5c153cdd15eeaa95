"""What the dashboard hub reads from the live state besides the published info: the group
tree and the chart's samples (service/core/site_figures.py computes them)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from service.core.site_figures import chart_sample, site_currents
from service.state import ServiceState


def group_tree(state: ServiceState) -> Callable[[], list[dict[str, Any]]]:
    """The configured groups as get_params answers them (open there too)."""

    def groups() -> list[dict[str, Any]]:
        return [g.model_dump() for g in state.installation.groups]

    return groups


def chart_sampler(state: ServiceState) -> Callable[[], list[float | None]]:
    def sample() -> list[float | None]:
        states = {dev_id: runtime.state for dev_id, runtime in state.runtime.items()}
        grid, evses = site_currents(state.installation, states)
        return chart_sample(state.clock(), grid, evses)

    return sample
