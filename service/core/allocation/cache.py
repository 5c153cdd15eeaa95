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
  measurements carries it over (verdict.refreshed). The EVSEs' memory the last run handed
  out is kept too: after each run, the verdicts of EVSEs whose memory changed (or went)
  are dropped, so while a run gets that very mapping back (no event came between), every
  kept verdict was made from the memory it has, and the run does not look each one up;
* per EVSE with a vehicle, its last result with the wish and current it came from
  (sessions.conclude);
* per EVSE whose charging rules shape its wish, what wishes.solar_pools made of its vehicle;
* per EVSE whose wish reads the clock only as whether its minimum pause runs, that wish
  (run.Survey.vehicle_wish);
* the last sharing (groups.share, a pure function): its currents while the budgets, the
  demands and max_imbalance are equal to the last run's, as in a run that nothing new
  reached (the cycle timer's).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from service.core.allocation.budgets import Constraints, constraints
from service.core.allocation.model import EvseMemory
from service.core.allocation.sessions import Settled
from service.core.allocation.verdict import Clocked, Context, Verdict
from service.core.allocation.views import ConfigView, StateView
from service.core.allocation.wishes import SolarSeen
from service.core.groups import Demand, GroupTree, build_group_tree, share
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
    solar: dict[str, SolarSeen] = field(default_factory=dict)
    clocked: dict[str, Clocked] = field(default_factory=dict)
    _groups: Sequence[GroupConfig] | None = None
    _main_limit: int = 0
    _tree: GroupTree | None = None
    _constraints_key: tuple[bool, int, tuple[bool, ...]] | None = None
    _constraints: Constraints | None = None
    _context: Context | None = None
    # The EVSEs' memory the last run handed out (None: do not trust, see taken_back).
    _handed: Mapping[str, EvseMemory] | None = None
    # The last sharing: budgets, demands, max_imbalance and the currents they gave.
    _shared: tuple[list[int], list[Demand], int, list[int]] | None = None

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

    def share(self, budgets: list[int], demands: list[Demand], max_imbalance: int) -> list[int]:
        """groups.share, or the currents of the last sharing when its inputs are equal (most
        demands are the very same objects then: compared in C, at a small part of the cost
        of sharing). The lists handed in and returned must not change afterwards."""
        last = self._shared
        if (
            last is not None
            and last[2] == max_imbalance
            and last[0] == budgets
            and last[1] == demands
        ):
            return last[3]
        currents = share(budgets, demands, max_imbalance)
        self._shared = (budgets, demands, max_imbalance, currents)
        return currents

    def taken_back(self, evses_memory: Mapping[str, EvseMemory]) -> bool:
        """Whether a run gets back the very EVSEs' memory the last run handed out: then every
        kept verdict was made from its EVSE's memory in it (see handed_out). Until that run
        hands out its own, nothing is trusted (a run that fails midway leaves no trust)."""
        trusted = evses_memory is self._handed
        self._handed = None
        return trusted

    def handed_out(
        self, evses_memory: Mapping[str, EvseMemory], changed: Iterable[str], gone: Iterable[str]
    ) -> None:
        """A run hands out `evses_memory`: the verdicts of EVSEs whose memory it changed or
        dropped were made from another one, and go."""
        verdicts = self.verdicts
        for dev_id in changed:
            verdicts.pop(dev_id, None)
        for dev_id in gone:
            verdicts.pop(dev_id, None)
        self._handed = evses_memory

    def forget_gone(self, evses: Mapping[str, object]) -> None:
        """Drops what is kept for EVSEs that are gone, once they are many."""
        if len(self.views) <= 2 * len(evses) + 64:
            return
        self.views = {d: v for d, v in self.views.items() if d in evses}
        self.state_views = {d: v for d, v in self.state_views.items() if d in evses}
        self.verdicts = {d: v for d, v in self.verdicts.items() if d in evses}
        self.settled = {d: v for d, v in self.settled.items() if d in evses}
        self.solar = {d: v for d, v in self.solar.items() if d in evses}
        self.clocked = {d: v for d, v in self.clocked.items() if d in evses}
