"""The allocation's caches, in an object the caller owns and hands to every run.

None of them changes a result: `allocate(inp, memory, cache)` returns what
`allocate(inp, memory)` (no cache: everything made anew) returns. tests/allocation/checker.py
runs both for every run in the tests and compares. What is kept:

* the group tree, while the groups object and the main limit stay the same, and the
  constraints and `Context` made from it while the params and the failed groups stay the same;
* per EVSE, views of its configuration and state (views.py);
* per EVSE, its verdict (verdict.classify), with the configuration, state and memory objects
  and the context it was made from. A later run takes it as it is while all of these are
  the very same objects *and* the state is still fresh; a new state that only moved its
  measurements carries it over (verdict.refreshed);
* per EVSE with a vehicle, its last result with the wish and current it came from
  (sessions.conclude).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from service.core.allocation.budgets import Constraints, constraints
from service.core.allocation.model import EvseMemory
from service.core.allocation.sessions import Settled
from service.core.allocation.verdict import Context, Verdict
from service.core.allocation.views import ConfigView, StateView
from service.core.groups import GroupTree, build_group_tree
from service.core.models import EvseConfig, EvseState, GroupConfig, Params, User

# A cached verdict with what it was made from: configuration, state, the state's view,
# the EVSE's memory, the context.
Prepared = tuple[EvseConfig, EvseState | None, StateView | None, EvseMemory | None, Context,
                 Verdict]  # fmt: skip


@dataclass(slots=True, eq=False)
class AllocationCache:
    """Mutable; owned by one caller, used by one run at a time."""

    views: dict[str, ConfigView] = field(default_factory=dict)
    state_views: dict[str, StateView] = field(default_factory=dict)
    verdicts: dict[str, Prepared] = field(default_factory=dict)
    settled: dict[str, Settled] = field(default_factory=dict)
    _groups: Sequence[GroupConfig] | None = None
    _main_limit: int = 0
    _tree: GroupTree | None = None
    _constraints_key: tuple[bool, int, tuple[bool, ...]] | None = None
    _constraints: Constraints | None = None
    _context: Context | None = None

    def group_tree(self, groups: Sequence[GroupConfig], main_limit: int) -> GroupTree:
        """The group tree, kept while the groups (the same object, or equal ones) and the
        main limit stay the same."""
        tree = self._tree
        if self._groups is not groups:
            if tree is not None and self._groups != groups:
                tree = None
            self._groups = groups
        if tree is None or self._main_limit != main_limit:
            tree = self._tree = build_group_tree(groups, main_limit)
            self._main_limit = main_limit
            self._constraints = None
        return tree

    def context(
        self, params: Params, tree: GroupTree, failed: list[bool], users: Mapping[str, User]
    ) -> Context:
        """The context of this run's verdicts: the very same object as in the last run while
        the constraints, disable_policy, resume_margin and the user book stay the same."""
        key = (params.max_total_evse_current > 0, params.grid_fail_current, tuple(failed))
        cons = self._constraints
        if cons is None or self._constraints_key != key:
            cons = self._constraints = constraints(params, tree, failed)
            self._constraints_key = key
        context = self._context
        if (
            context is None
            or context.constraints is not cons
            or context.policy != params.disable_policy
            or context.resume_margin != params.resume_margin
            or context.users is not users
        ):
            context = self._context = Context(
                cons, tree.index, params.disable_policy, users, params.resume_margin, {}
            )
        return context

    def forget_gone(self, evses: Mapping[str, object]) -> None:
        """Drops what is kept for EVSEs that are gone, once they are many."""
        if len(self.views) <= 2 * len(evses) + 64:
            return
        self.views = {d: v for d, v in self.views.items() if d in evses}
        self.state_views = {d: v for d, v in self.state_views.items() if d in evses}
        self.verdicts = {d: v for d, v in self.verdicts.items() if d in evses}
        self.settled = {d: v for d, v in self.settled.items() if d in evses}
