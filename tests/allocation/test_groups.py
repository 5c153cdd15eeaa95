"""The group tree and share(): minimums by priority, water-filling, phase balance."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from service.core.groups import Demand, build_group_tree, share, sum_subtrees
from service.core.models import GroupConfig
from service.core.phases import PHASES_OF


def test_tree_chains_and_order() -> None:
    tree = build_group_tree(
        [
            GroupConfig(id=5, parent=0, max_current=20_000),
            GroupConfig(id=7, parent=5, max_current=10_000),
            GroupConfig(id=9, parent=7, max_current=8000),
        ],
        main_limit=63_000,
    )
    assert tree.ids == (0, 5, 7, 9)
    assert tree.limits == (63_000, 20_000, 10_000, 8000)
    assert tree.chains[tree.index[9]] == (3, 2, 1, 0)
    position = {g: k for k, g in enumerate(tree.bottom_up)}
    for g in range(1, 4):
        assert position[g] < position[tree.parent[g]]
    assert tree.locate(12345) == 0
    assert tree.notes == ()


def test_unknown_parents_loops_and_duplicates_are_reported_and_repaired() -> None:
    tree = build_group_tree(
        [
            GroupConfig(id=1, parent=42, max_current=1),
            GroupConfig(id=2, parent=3, max_current=1),
            GroupConfig(id=3, parent=2, max_current=1),
            GroupConfig(id=1, parent=0, max_current=99),
        ],
        main_limit=0,
    )
    assert tree.parent[tree.index[1]] == 0
    assert tree.limits[tree.index[1]] == 1  # the first definition counts
    # The loop 2 ↔ 3 is broken: both end at the main group.
    for g in (2, 3):
        assert tree.chains[tree.index[g]][-1] == 0
    text = " ".join(tree.notes)
    assert "parent group 42 does not exist" in text
    assert "parent loop" in text
    assert "defined twice" in text


def test_sum_subtrees() -> None:
    tree = build_group_tree(
        [GroupConfig(id=1, max_current=0), GroupConfig(id=2, parent=1, max_current=0)], 0
    )
    total = sum_subtrees(tree, [[1, 0, 0], [0, 2, 0], [0, 0, 4]])
    assert total == [[1, 2, 4], [0, 2, 4], [0, 0, 4]]


def _demand(
    mask: int, minimum: int, target: int, prio: int = 1, name: str = "", charging: bool = False
) -> Demand:
    # One constraint (the main group): slots are just the phases.
    return Demand(prio, (0 if charging else 1, 0.0, name), mask, PHASES_OF[mask], mask,
                  minimum, target)  # fmt: skip


def test_water_filling_is_fair_and_stops_at_targets() -> None:
    demands = [
        _demand(7, 6000, 8000, name="a"),
        _demand(7, 6000, 32_000, name="b"),
        _demand(7, 6000, 32_000, name="c"),
    ]
    # 40 A: a stops at its 8 A target, b and c share the rest equally.
    assert share([40_000, 40_000, 40_000], demands, 0) == [8000, 16_000, 16_000]


def test_each_phase_is_filled_on_its_own() -> None:
    demands = [_demand(1, 6000, 32_000), _demand(2, 6000, 32_000), _demand(7, 6000, 32_000)]
    # L1 and L2 each carry one single-phase car and the 3-phase one; L3 only the 3-phase one.
    assert share([20_000, 30_000, 50_000], demands, 0) == [10_000, 20_000, 10_000]


def test_minimums_go_by_priority_then_by_order() -> None:
    demands = [
        _demand(7, 6000, 16_000, prio=1, name="low"),
        _demand(7, 6000, 16_000, prio=5, name="high"),
        _demand(7, 6000, 16_000, prio=1, name="a-charging", charging=True),
    ]
    # Room for two minimums: the high priority first, then the one that was charging.
    assert share([13_000, 13_000, 13_000], demands, 0) == [0, 7000, 6000]


def test_a_higher_level_is_filled_before_a_lower_one_gets_more_than_its_minimum() -> None:
    demands = [_demand(7, 6000, 16_000, prio=1), _demand(7, 6000, 16_000, prio=2)]
    assert share([20_000] * 3, demands, 0) == [6000, 14_000]


def test_balance_limit_stops_single_phase_rise() -> None:
    demands = [_demand(1, 6000, 32_000), _demand(7, 6000, 16_000)]
    assert share([32_000] * 3, demands, 10_000) == [10_000, 16_000]


def test_balance_limit_drops_the_lowest_priority_unbalancing_one() -> None:
    demands = [
        _demand(1, 6000, 6000, prio=2, name="high"),
        _demand(1, 6000, 6000, prio=1, name="low"),
    ]
    # Both on L1 would be 12 A ahead of L2/L3; one alone 6 A, within the 8 A limit.
    assert share([100_000] * 3, demands, 8000) == [6000, 0]


def test_balanced_single_phase_cars_all_charge_under_a_tight_balance_limit() -> None:
    demands = [_demand(1, 6000, 16_000), _demand(2, 6000, 16_000), _demand(4, 6000, 16_000)]
    assert share([100_000] * 3, demands, 1000) == [16_000, 16_000, 16_000]


def test_priority_is_restored_when_the_balance_repair_dropped_too_much() -> None:
    a = _demand(1, 6000, 6000, prio=3, name="a")  # L1
    g = _demand(6, 6000, 16_000, prio=3, name="g")  # L2 + L3
    h = _demand(1, 6000, 6000, prio=2, name="h")  # L1
    low = _demand(7, 6000, 16_000, prio=1, name="low")
    # The minimums overload L1 by 6 A; the repair drops h, the lowest priority EVSE on L1.
    # Filling then raises g on L2/L3 to 10 A, after which h fits beside everything of its own
    # and higher priority: it must charge and the lower priority one shares around it.
    assert share([100_000] * 3, [a, g, h, low], 4000) == [6000, 10_000, 6000, 16_000]


def test_nothing_when_the_budget_is_negative() -> None:
    assert share([-1, 100_000, 100_000], [_demand(7, 6000, 16_000)], 0) == [0]
    assert share([-1, 100_000, 100_000], [_demand(6, 6000, 16_000)], 0) == [16_000]


def test_empty() -> None:
    assert share([1, 2, 3], [], 0) == []


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.integers(1, 7),
            st.sampled_from([1, 6000, 8000]),
            st.sampled_from([6000, 10_000, 16_000, 32_000]),
            st.integers(0, 2),
        ),
        min_size=1,
        max_size=30,
    ),
    st.lists(st.integers(-1000, 200_000), min_size=3, max_size=3),
    st.sampled_from([0, 4000, 10_000]),
)
def test_classes_change_nothing(
    spec: list[tuple[int, int, int, int]], budgets: list[int], max_imbalance: int
) -> None:
    """EVSEs with equal wishes share as one class; the result must be what each would get
    alone in its class (the same for equal demands) and it must respect every budget."""
    demands = [
        _demand(mask, minimum, max(minimum, target), prio, name=f"E{i:02}")
        for i, (mask, minimum, target, prio) in enumerate(spec)
    ]
    got = share(budgets, demands, max_imbalance)
    for d, current in zip(demands, got, strict=True):
        assert current == 0 or d.minimum <= current <= d.target
    loads = [sum(c for d, c in zip(demands, got, strict=True) if d.mask >> p & 1) for p in range(3)]
    for p in range(3):
        assert loads[p] <= max(budgets[p], 0) or loads[p] == 0
    if max_imbalance:
        assert max(loads) - min(loads) <= max_imbalance
    # Identical demands that both got current get the same.
    by_key: dict[tuple[int, int, int, int], set[int]] = {}
    for d, current in zip(demands, got, strict=True):
        if current:
            by_key.setdefault((d.prio, d.mask, d.minimum, d.target), set()).add(current)
    assert all(len(v) == 1 for v in by_key.values())


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.integers(1, 7),
            st.sampled_from([1, 6000, 8000, 10_000]),
            st.integers(0, 2),
            st.booleans(),
            st.integers(0, 50),
        ),
        min_size=60,
        max_size=400,
    ),
    # Each phase's budget as a share of what all minimums on it need: mostly a tier that does
    # not fit as a whole but has room for long stretches (which share() admits in bulk).
    st.lists(st.floats(-0.01, 1.1), min_size=3, max_size=3),
)
def test_who_gets_a_minimum_is_decided_one_by_one_in_priority_order(
    spec: list[tuple[int, int, int, bool, int]], fractions: list[float]
) -> None:
    """Without a balance limit, the EVSEs that get current are exactly those that a plain
    walk in priority order admits: each takes its minimum when that fits on every phase it
    loads. (share() admits long stretches in bulk; this is the walk it must agree with.)"""
    demands = [
        Demand(prio, (0 if charging else 1, float(plugged), f"E{i:03}"), mask, PHASES_OF[mask],
               mask, minimum, 32_000)
        for i, (mask, minimum, prio, charging, plugged) in enumerate(spec)
    ]  # fmt: skip
    needs = [sum(d.minimum for d in demands if d.mask >> p & 1) for p in range(3)]
    budgets = [int(f * n) for f, n in zip(fractions, needs, strict=True)]
    got = share(budgets, demands, 0)
    head = list(budgets)
    admitted: set[int] = set()
    for i in sorted(range(len(demands)), key=lambda k: (-demands[k].prio, demands[k].order)):
        d = demands[i]
        if all(head[p] >= d.minimum for p in d.slots):
            for p in d.slots:
                head[p] -= d.minimum
            admitted.add(i)
    assert {i for i, current in enumerate(got) if current} == admitted
