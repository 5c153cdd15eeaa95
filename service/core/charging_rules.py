"""Charging rules: which rule applies, what current it asks for, how rule sets combine.

Semantics follow the cFos Charging Manager documentation of the rule format the /cnf API
carries (https://www.cfos-emobility.de/en/cfos-charging-manager/documentation/
charging-rules-old.htm, "Charging rules (for firmware versions < 1.25.2)"):

* An EVSE has its own rule set; the user who authorised the session has another. Each set is
  searched **in list order and the first rule that applies wins**; later rules are ignored.
* A set with at least one enabled rule of which none applies asks for **0 mA** (pause).
  A set without enabled rules (or switched off by override E / U) asks for nothing.
* When both sets ask for a current, **the lower one applies**. The result is a wish: it is
  capped by the EVSE's maximum and then shared like any other target.

A rule applies when it is enabled, its week window is open — it opens on each day whose bit is
set in `days` (bit0 Monday … bit6 Sunday) at `time` minutes after local midnight and stays open
for `dur` minutes, possibly past midnight — and, when `solar` > 0, the solar current it is based
on (the surplus for mode 5, the production for the other modes) is at least `solar` mA per
phase of the EVSE. A rule that needs a digital `input` or a `price_level` never applies
(chargebus has neither). `expr`, when set, replaces `current`; an expression that cannot be
evaluated (see `evaluate_expression`) makes the rule not apply.

Modes (the documented order: absolute, in percent, production absolute, production in
percent, production minus value, surplus):

====  ======================  ===========================================================
mode  name                    current asked for (mA per phase)
====  ======================  ===========================================================
0     absolute                `current`
1     relative                `current` percent of the EVSE's maximum current
2     solar                   the solar production current (value ignored)
3     relative solar          `current` percent of the solar production current
4     solar minus value       solar production current minus `current`
5     solar surplus           the surplus current (value ignored)
====  ======================  ===========================================================

Solar currents are the totals over the three phases divided by the number of phases the EVSE
charges on, i.e. what the EVSE could draw per phase from them. Negative results count as 0.

Undercut (`udur`, seconds): once a rule has let the EVSE charge (it asked for at least the
EVSE's minimum), it may fall below the minimum — or lose its solar condition — for up to `udur`
seconds while its week window stays open; meanwhile the EVSE keeps its minimum current. This
keeps clouds from stopping surplus charging. After `udur` the rule set's plain result applies.
"""

from __future__ import annotations

import ast
import math
import operator
from collections.abc import Callable, Mapping, Sequence
from functools import lru_cache
from typing import Final, NamedTuple

from service.core.models import ChargingRule

MINUTES_PER_DAY: Final = 1440
MINUTES_PER_WEEK: Final = 7 * MINUTES_PER_DAY
# 1970-01-01 was a Thursday; weekdays count from Monday = 0.
_EPOCH_WEEKDAY: Final = 3

MODE_ABSOLUTE: Final = 0
MODE_RELATIVE: Final = 1
MODE_SOLAR: Final = 2
MODE_RELATIVE_SOLAR: Final = 3
MODE_SOLAR_MINUS: Final = 4
MODE_SURPLUS: Final = 5


def minute_of_week(now: float, utc_offset_s: int = 0) -> int:
    """Minutes since local Monday 00:00."""
    local = math.floor(now) + utc_offset_s
    days, seconds = divmod(local, 86_400)
    weekday = (days + _EPOCH_WEEKDAY) % 7
    return weekday * MINUTES_PER_DAY + seconds // 60


def window_open(rule: ChargingRule, week_minute: int) -> bool:
    if rule.dur <= 0:
        return False
    if rule.dur >= MINUTES_PER_WEEK:
        return rule.days & 0x7F != 0
    for day in range(7):
        if rule.days >> day & 1:
            since = (week_minute - (day * MINUTES_PER_DAY + rule.time)) % MINUTES_PER_WEEK
            if since < rule.dur:
                return True
    return False


class RuleContext(NamedTuple):
    """What rules of one EVSE may depend on, per phase of that EVSE, in mA."""

    week_minute: int
    max_current: int
    solar: int
    surplus: int
    variables: Mapping[str, float]


class RuleState(NamedTuple):
    """A rule set's memory: the rule that last let the EVSE charge, and since when it has been
    undercut (None while it is not)."""

    rule: int
    undercut_since: float | None = None


def rule_value(rule: ChargingRule, ctx: RuleContext) -> int | None:
    """The current a rule asks for, or None when its expression cannot be evaluated."""
    value = rule.current
    if rule.expr:
        evaluated = evaluate_expression(rule.expr, ctx.variables)
        if evaluated is None:
            return None
        value = evaluated
    mode = rule.mode
    if mode == MODE_ABSOLUTE:
        out = value
    elif mode == MODE_RELATIVE:
        out = ctx.max_current * value // 100
    elif mode == MODE_SOLAR:
        out = ctx.solar
    elif mode == MODE_RELATIVE_SOLAR:
        out = ctx.solar * value // 100
    elif mode == MODE_SOLAR_MINUS:
        out = ctx.solar - value
    else:
        out = ctx.surplus
    return max(0, out)


def _condition(rule: ChargingRule, ctx: RuleContext) -> bool:
    if rule.input or rule.price_level > 0:
        return False
    if rule.solar > 0:
        basis = ctx.surplus if rule.mode == MODE_SURPLUS else ctx.solar
        if basis < rule.solar:
            return False
    return True


def evaluate_rule_set(
    rules: Sequence[ChargingRule],
    ctx: RuleContext,
    minimum: int,
    state: RuleState | None,
    now: float,
) -> tuple[int | None, RuleState | None]:
    """The current one rule set asks for (None = no wish) and the set's new memory."""
    first = -1
    value = 0
    any_enabled = False
    for index, rule in enumerate(rules):
        if not rule.enabled:
            continue
        any_enabled = True
        if window_open(rule, ctx.week_minute) and _condition(rule, ctx):
            v = rule_value(rule, ctx)
            if v is not None:
                first, value = index, v
                break
    if not any_enabled:
        return None, None
    if state is not None and 0 <= state.rule < len(rules):
        p = state.rule
        held = rules[p]
        # An earlier rule that applies now is a deliberate change, not an undercut.
        if (
            held.enabled
            and held.udur > 0
            and (first < 0 or first >= p)
            and window_open(held, ctx.week_minute)
        ):
            result = value if first >= 0 else 0
            if result < minimum:
                held_value = rule_value(held, ctx)
                since = state.undercut_since if state.undercut_since is not None else now
                if now - since < held.udur:
                    return max(held_value or 0, minimum), RuleState(p, since)
    if first < 0:
        return 0, None
    return value, (RuleState(first) if value >= minimum else None)


# --- expressions -------------------------------------------------------------------------

_BINARY: Final[dict[type[ast.operator], Callable[[float, float], float]]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
}
_FUNCTIONS: Final[dict[str, Callable[..., float]]] = {"min": min, "max": max, "abs": abs}
_LIMIT: Final = 1e12


class _NotTrivial(Exception):
    pass


@lru_cache(maxsize=1024)
def _parse(expr: str) -> ast.expr | None:
    # Parsing is the expensive part and pure, so it is memoised; evaluation is not.
    try:
        tree = ast.parse(expr.strip(), mode="eval")
    except (SyntaxError, ValueError, RecursionError):
        return None
    return tree.body


def _eval(node: ast.expr, variables: Mapping[str, float]) -> float:
    if isinstance(node, ast.Constant):
        if isinstance(node.value, bool) or not isinstance(node.value, int | float):
            raise _NotTrivial
        return float(node.value)
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub | ast.UAdd):
        v = _eval(node.operand, variables)
        return -v if isinstance(node.op, ast.USub) else v
    if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
        result = _BINARY[type(node.op)](_eval(node.left, variables), _eval(node.right, variables))
        if not math.isfinite(result) or abs(result) > _LIMIT:
            raise _NotTrivial
        return result
    if isinstance(node, ast.Name) and node.id in variables:
        return variables[node.id]
    if (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Name)
        and node.func.id in _FUNCTIONS
        and node.args
        and not node.keywords
        and not (node.func.id == "abs" and len(node.args) != 1)
    ):
        return _FUNCTIONS[node.func.id](*(_eval(a, variables) for a in node.args))
    raise _NotTrivial


def evaluate_expression(expr: str, variables: Mapping[str, float]) -> int | None:
    """A trivial expression's value in mA, or None.

    Trivial means numbers, + - * / // %, parentheses, min(), max(), abs() and names of
    numeric Charging Manager variables. Anything else (device values such as `M3.current`,
    functions, comparisons) is not evaluated: the caller falls back to a safe value.
    """
    node = _parse(expr)
    if node is None:
        return None
    try:
        value = _eval(node, variables)
    except (_NotTrivial, ZeroDivisionError, TypeError, ValueError, RecursionError):
        return None
    if not math.isfinite(value):
        return None
    return math.floor(value)


def numeric_variables(cm_vars: Mapping[str, float | str]) -> dict[str, float]:
    """The Charging Manager variables that hold a number (others are expressions)."""
    out: dict[str, float] = {}
    for name, value in cm_vars.items():
        if isinstance(value, int | float) and not isinstance(value, bool):
            if math.isfinite(value):
                out[name] = float(value)
        elif isinstance(value, str):
            try:
                number = float(value)
            except ValueError:
                continue
            if math.isfinite(number):
                out[name] = number
    return out
