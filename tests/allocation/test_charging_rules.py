"""Rule windows, modes, how a rule set picks its rule, undercut, and expressions."""

from __future__ import annotations

import pytest

from service.core.charging_rules import (
    RuleContext,
    RuleState,
    evaluate_expression,
    evaluate_rule_set,
    minute_of_week,
    numeric_variables,
    rule_value,
    window_open,
)
from service.core.models import ChargingRule

MONDAY_0000_UTC = 1_704_067_200  # 2024-01-01, a Monday


def ctx(
    week_minute: int = 600, max_current: int = 16_000, solar: int = 0, surplus: int = 0
) -> RuleContext:
    return RuleContext(week_minute, max_current, solar, surplus, {})


def test_minute_of_week() -> None:
    assert minute_of_week(MONDAY_0000_UTC) == 0
    assert minute_of_week(MONDAY_0000_UTC + 90) == 1
    assert minute_of_week(MONDAY_0000_UTC + 6 * 86_400 + 23 * 3600) == 6 * 1440 + 23 * 60
    assert minute_of_week(MONDAY_0000_UTC + 7 * 86_400) == 0
    # Local time east of UTC: Sunday 23:30 UTC is Monday 00:30 in UTC+1.
    assert minute_of_week(MONDAY_0000_UTC - 1800, utc_offset_s=3600) == 30


def test_window_past_midnight_and_across_the_week_end() -> None:
    sunday_night = ChargingRule(days=1 << 6, time=22 * 60, dur=8 * 60)
    assert window_open(sunday_night, 6 * 1440 + 22 * 60)
    assert window_open(sunday_night, 5 * 60 + 59)  # Monday 05:59
    assert not window_open(sunday_night, 6 * 60)  # Monday 06:00
    assert not window_open(sunday_night, 5 * 1440 + 23 * 60)  # Saturday night


def test_window_edges() -> None:
    assert not window_open(ChargingRule(days=127, dur=0), 0)
    assert window_open(ChargingRule(days=127, time=0, dur=1440), 10_079)
    assert window_open(ChargingRule(days=1, time=500, dur=10_080), 499)
    assert not window_open(ChargingRule(days=0, time=0, dur=10_080), 0)
    weekdays = ChargingRule(days=0b0011111, time=0, dur=1440)
    assert window_open(weekdays, 4 * 1440 + 1)  # Friday
    assert not window_open(weekdays, 5 * 1440 + 1)  # Saturday


@pytest.mark.parametrize(
    ("mode", "current", "expected"),
    [
        (0, 7000, 7000),  # absolute
        (1, 50, 8000),  # percent of the 16 A maximum
        (2, 999, 9000),  # all solar, value ignored
        (3, 50, 4500),  # percent of solar
        (4, 2000, 7000),  # solar minus value
        (4, 20_000, 0),  # never negative
        (5, 999, 3000),  # surplus, value ignored
        (0, -5000, 0),
    ],
)
def test_modes(mode: int, current: int, expected: int) -> None:
    rule = ChargingRule(mode=mode, current=current)
    assert rule_value(rule, ctx(solar=9000, surplus=3000)) == expected


def test_expression_replaces_the_value() -> None:
    rule = ChargingRule(mode=1, expr="limit / 2", current=1)
    context = RuleContext(0, 16_000, 0, 0, {"limit": 100.0})
    assert rule_value(rule, context) == 8000  # 50 % of the maximum
    assert rule_value(ChargingRule(expr="M3.current"), context) is None


def test_first_applying_rule_wins_and_disabled_rules_do_not_count() -> None:
    rules = [
        ChargingRule(enabled=False, current=1000),
        ChargingRule(days=0, current=2000),  # never open
        ChargingRule(current=7000),
        ChargingRule(current=9000),
    ]
    value, state = evaluate_rule_set(rules, ctx(), 6000, None, 0.0)
    assert value == 7000
    assert state == RuleState(2)


def test_a_set_without_enabled_rules_asks_for_nothing_and_one_without_match_for_zero() -> None:
    assert evaluate_rule_set([ChargingRule(enabled=False)], ctx(), 6000, None, 0.0) == (
        None,
        None,
    )
    assert evaluate_rule_set([], ctx(), 6000, None, 0.0) == (None, None)
    assert evaluate_rule_set([ChargingRule(days=0)], ctx(), 6000, None, 0.0) == (0, None)


def test_rules_needing_inputs_or_prices_never_apply() -> None:
    rules = [ChargingRule(input="I1", current=9000), ChargingRule(price_level=3, current=8000)]
    assert evaluate_rule_set(rules, ctx(), 6000, None, 0.0) == (0, None)


def test_solar_threshold_uses_surplus_for_mode_5_and_production_otherwise() -> None:
    surplus_rule = ChargingRule(mode=5, solar=4000)
    solar_rule = ChargingRule(mode=0, current=6000, solar=4000)
    assert evaluate_rule_set([surplus_rule], ctx(solar=9000, surplus=3000), 1, None, 0)[0] == 0
    assert evaluate_rule_set([solar_rule], ctx(solar=9000, surplus=0), 1, None, 0)[0] == 6000
    assert evaluate_rule_set([solar_rule], ctx(solar=3999, surplus=9000), 1, None, 0)[0] == 0


def test_undercut_holds_the_minimum_for_udur_then_lets_go() -> None:
    rules = [ChargingRule(mode=5, udur=120)]
    value, state = evaluate_rule_set(rules, ctx(surplus=8000), 6000, None, 1000.0)
    assert (value, state) == (8000, RuleState(0))
    # The surplus drops below the minimum: the minimum is kept, the undercut starts.
    value, state = evaluate_rule_set(rules, ctx(surplus=2000), 6000, state, 1010.0)
    assert (value, state) == (6000, RuleState(0, 1010.0))
    value, state = evaluate_rule_set(rules, ctx(surplus=0), 6000, state, 1129.0)
    assert (value, state) == (6000, RuleState(0, 1010.0))
    value, state = evaluate_rule_set(rules, ctx(surplus=0), 6000, state, 1130.0)
    assert (value, state) == (0, None)


def test_undercut_ends_when_the_rule_recovers() -> None:
    rules = [ChargingRule(mode=5, udur=120)]
    _, state = evaluate_rule_set(rules, ctx(surplus=2000), 6000, RuleState(0), 1000.0)
    value, state = evaluate_rule_set(rules, ctx(surplus=7000), 6000, state, 1050.0)
    assert (value, state) == (7000, RuleState(0))


def test_a_rule_that_never_reached_the_minimum_is_not_held() -> None:
    rules = [ChargingRule(mode=5, udur=120)]
    value, state = evaluate_rule_set(rules, ctx(surplus=2000), 6000, None, 1000.0)
    assert (value, state) == (2000, None)


def test_an_earlier_rule_taking_over_is_no_undercut() -> None:
    rules = [
        ChargingRule(days=0b0000001, time=0, dur=60, current=0),
        ChargingRule(mode=5, udur=600),
    ]
    state = RuleState(1)
    # Monday 00:30: rule 0 applies and asks for 0 — a deliberate stop, not held.
    value, new_state = evaluate_rule_set(rules, ctx(week_minute=30, surplus=9000), 6000, state, 0)
    assert (value, new_state) == (0, None)


def test_the_held_rule_is_not_held_outside_its_window() -> None:
    rules = [ChargingRule(days=127, time=600, dur=60, mode=5, udur=3600)]
    value, state = evaluate_rule_set(rules, ctx(week_minute=700, surplus=0), 6000, RuleState(0), 0)
    assert (value, state) == (0, None)


@pytest.mark.parametrize(
    ("expr", "expected"),
    [
        ("16000", 16_000),
        (" 16000 ", 16_000),
        ("min(16000, 29000 - 20000)", 9000),
        ("max(1, 2, 3) * 1000", 3000),
        ("abs(-5) * 1000", 5000),
        ("cap * 1000 + 500", 10_500),
        ("(1 + 2) * 3", 9),
        ("7 // 2", 3),
        ("7 / 2", 3),
        ("-7 / 2", -4),
        ("10 % 4", 2),
        ("+5", 5),
    ],
)
def test_trivial_expressions(expr: str, expected: int) -> None:
    assert evaluate_expression(expr, {"cap": 10.0}) == expected


@pytest.mark.parametrize(
    "expr",
    [
        "M3.current",
        "unknown + 1",
        "1 / 0",
        "2 ** 10",
        "__import__('os')",
        "min()",
        "abs(1, 2)",
        "min(a=1)",
        "'text'",
        "True",
        "1 if 2 else 3",
        "1 < 2",
        "(",
        "",
        "1e300 * 1e300",
        "10 ** 20",
    ],
)
def test_other_expressions_are_not_evaluated(expr: str) -> None:
    assert evaluate_expression(expr, {}) is None


def test_numeric_variables() -> None:
    assert numeric_variables({"a": 1.5, "b": "2", "c": "x + 1", "d": "nan", "e": "inf"}) == {
        "a": 1.5,
        "b": 2.0,
    }
