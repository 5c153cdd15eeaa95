"""Property: a params patch is applied whole when every value is in range, else refused whole."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from service.core.config_edit import EditError, apply_set_params
from service.core.device_types import builtin_registry
from service.core.models import Installation, Params

REGISTRY = builtin_registry()

# field → (accepted range, names it may be sent under)
RANGES: dict[str, tuple[int, int, tuple[str, ...]]] = {
    "max_total_current": (0, 2_000_000, ("max_total_current", "max_total_power")),
    "reserve_current": (0, 2_000_000, ("reserve_current", "power_reserve")),
    "overdraft_cur": (0, 2_000_000, ("overdraft_cur", "overdraft")),
    "max_total_evse_current": (
        0,
        2_000_000,
        ("max_total_evse_current", "max_total_evse_power"),
    ),
    "max_imbalance": (0, 2_000_000, ("max_imbalance",)),
    "grid_fail_current": (0, 2_000_000, ("grid_fail_current",)),
    "cycle_time": (100, 60_000, ("cycle_time",)),
    "min_pause_time": (0, 86_400, ("min_pause_time",)),
    "stale_time": (0, 3_600_000, ("stale_time",)),
    "disable_policy": (-1, 1, ("disable_policy",)),
}


def value_for(low: int, high: int) -> st.SearchStrategy[int]:
    span = high - low
    return st.one_of(
        st.integers(low, high),
        st.sampled_from([low - 1, high + 1, low, high]),
        st.integers(low - span - 10, high + span + 10),
    )


@st.composite
def patches(draw: st.DrawFn) -> tuple[dict[str, Any], dict[str, int]]:
    """A set_params body and the canonical field values it carries."""
    fields = draw(st.lists(st.sampled_from(sorted(RANGES)), min_size=1, unique=True))
    body: dict[str, Any] = {}
    expected: dict[str, int] = {}
    for field in fields:
        low, high, names = RANGES[field]
        value = draw(value_for(low, high))
        name = draw(st.sampled_from(names))
        if draw(st.booleans()):
            body.setdefault("params", {})[name] = value
        else:
            body[name] = value
        expected[field] = value
    return body, expected


def in_range(expected: dict[str, int]) -> bool:
    return all(RANGES[f][0] <= v <= RANGES[f][1] for f, v in expected.items())


@settings(max_examples=300, deadline=None, database=None)
@given(patches(), st.integers(0, 2_000_000))
def test_params_patch_applied_whole_or_refused_whole(
    patch: tuple[dict[str, Any], dict[str, int]], start_max: int
) -> None:
    body, expected = patch
    inst = Installation.model_validate({"params": {"max_total_current": start_max}})
    before = inst.model_dump()
    try:
        edit = apply_set_params(inst, body, REGISTRY, set())
    except EditError as exc:
        assert not in_range(expected), f"refused a valid patch {body}: {exc}"
        bad = [f for f, v in expected.items() if not RANGES[f][0] <= v <= RANGES[f][1]]
        assert any(f in str(exc) for f in bad), str(exc)
        assert inst.model_dump() == before
        return
    assert in_range(expected), f"accepted an out-of-range patch {body}"
    params = edit.installation.params
    assert Params.model_validate(params.model_dump()) == params
    for field, value in expected.items():
        assert getattr(params, field) == value
    untouched = set(Params.model_fields) - set(expected)
    for field in untouched:
        assert getattr(params, field) == getattr(inst.params, field)
    assert edit.params_changed == any(
        getattr(inst.params, f) != v for f, v in expected.items()
    )
    assert inst.model_dump() == before
