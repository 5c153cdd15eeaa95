"""Load-balancing groups and the sharing of current within their per-phase limits.

The tree
--------
Group 0 is the main group (the house connection, limited by the params); every configured
`GroupConfig` hangs below its `parent`. A parent that does not exist, or a loop of parents,
puts the group directly below the main group, and the tree reports it in `notes`. A device
that names an unknown group belongs to the main group (the allocation reports that too).

Sharing
-------
`share()` works on *slots*: one per (constraint, grid phase), numbered `constraint * 3 +
phase`. A constraint is a group, or a cap on a set of groups' EVSEs (all EVSEs together, the
EVSEs of a group whose grid meter is lost). Each slot has a budget in mA — what the EVSEs
covered by it may draw together on that phase — and each demand (one EVSE) lists the slots it
loads. An EVSE draws the same current on each of its phases, so it loads one slot per phase and
constraint on its path to the root.

The result for each demand is 0 or a current in [minimum, target]:

1. Minimums, by priority (higher `prio` first; ties by `order`): an EVSE gets its minimum when
   it fits into every slot it loads, else it gets nothing. When a whole priority level fits,
   it is admitted at once without sorting; otherwise only the slots that cannot take the whole
   level are checked EVSE by EVSE.
2. Unbalanced load (`max_imbalance` > 0): if the admitted minimums load the grid phases
   more unevenly than allowed, the lowest-priority EVSE that loads the most loaded phase and
   not the least loaded one is dropped, until the limit holds; then those left out are tried
   again in priority order, each only if it keeps budgets and balance.
3. The rest is shared by water-filling, one priority level after the other (a higher level is
   filled up to its targets before a lower level gets more than its minimum): all EVSEs of the
   level rise together from their minimums; when a slot runs out (or the phase balance limit
   is reached) the EVSEs that load it stop rising, the others go on. EVSEs with the same
   slots, minimum and target rise as one class, so the cost grows with the number of distinct
   classes and slots rather than with the number of EVSEs.
4. Priority check (only when step 2 dropped something, because only the balance limit can make
   an EVSE that did not fit at first fit later): an EVSE left at 0 whose minimum would fit
   beside everything of its own and higher priority is admitted, and the lower levels are
   shared again around it.
"""

from __future__ import annotations

import heapq
import operator
from collections import Counter, defaultdict, deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from itertools import compress
from operator import not_
from typing import NamedTuple

from service.core.models import GroupConfig
from service.core.phases import PHASES_OF

MAIN_GROUP = 0


@dataclass(frozen=True, slots=True)
class GroupTree:
    """Groups by index: index 0 is the main group (id 0), the others in configuration order."""

    ids: tuple[int, ...]
    parent: tuple[int, ...]  # -1 for the main group
    limits: tuple[int, ...]  # per-phase limit, mA (the main group's as given to the builder)
    chains: tuple[tuple[int, ...], ...]  # (itself, its parent, …, 0)
    bottom_up: tuple[int, ...]  # every group after all of its descendants
    index: Mapping[int, int]
    notes: tuple[str, ...]

    def locate(self, group_id: int) -> int:
        """The index of a group id; an unknown id is the main group."""
        return self.index.get(group_id, 0)


def build_group_tree(groups: Sequence[GroupConfig], main_limit: int) -> GroupTree:
    notes: list[str] = []
    ids = [MAIN_GROUP]
    limits = [main_limit]
    wanted_parent: list[int] = [-1]
    index: dict[int, int] = {MAIN_GROUP: 0}
    for group in groups:
        if group.id in index:
            notes.append(f"group {group.id} is defined twice; the first definition counts")
            continue
        index[group.id] = len(ids)
        ids.append(group.id)
        limits.append(group.max_current)
        wanted_parent.append(group.parent)
    parent = [-1] * len(ids)
    for i in range(1, len(ids)):
        wanted = wanted_parent[i]
        if wanted not in index:
            notes.append(f"group {ids[i]}: parent group {wanted} does not exist; using group 0")
            parent[i] = 0
        else:
            parent[i] = index[wanted]
    # Break loops: walk up from each group; a group met twice closes a loop, and the group
    # whose parent closes it is hung below the main group.
    for i in range(1, len(ids)):
        seen = {i}
        j = i
        while parent[j] > 0:
            if parent[j] in seen:
                notes.append(
                    f"group {ids[j]}: parent loop through group {ids[parent[j]]}; using group 0"
                )
                parent[j] = 0
                break
            j = parent[j]
            seen.add(j)
    chains: list[tuple[int, ...]] = []
    for i in range(len(ids)):
        chain = [i]
        j = i
        while parent[j] >= 0:
            j = parent[j]
            chain.append(j)
        chains.append(tuple(chain))
    # Deeper groups first: each comes after all of its descendants.
    bottom_up = tuple(sorted(range(len(ids)), key=lambda g: (-len(chains[g]), g)))
    return GroupTree(
        ids=tuple(ids),
        parent=tuple(parent),
        limits=tuple(limits),
        chains=tuple(chains),
        bottom_up=bottom_up,
        index=index,
        notes=tuple(notes),
    )


def sum_subtrees(tree: GroupTree, own: list[list[int]]) -> list[list[int]]:
    """Per group and phase: its own amount plus that of all groups below it."""
    total = [list(v) for v in own]
    for g in tree.bottom_up:
        p = tree.parent[g]
        if p >= 0:
            tp, tg = total[p], total[g]
            tp[0] += tg[0]
            tp[1] += tg[1]
            tp[2] += tg[2]
    return total


class Demand(NamedTuple):
    """One EVSE's wish, as `share()` needs it."""

    prio: int
    order: tuple[int, float, str]  # within a priority, smaller first
    cell: int  # equal cells ⇔ equal slots and mask; lets EVSEs be handled as classes
    slots: tuple[int, ...]
    mask: int  # grid phases
    minimum: int
    target: int  # ≥ minimum
    # The class share() puts it in, "prio cell minimum target", made once with the demand: a
    # string keeps its hash, so a demand kept from call to call is not hashed anew each time.
    # None: share() keys it by those four numbers.
    klass: str | None = None


def class_key(prio: int, cell: int, minimum: int, target: int) -> str:
    """Demand.klass: demands with equal keys need the same and get the same."""
    return f"{prio} {cell} {minimum} {target}"


# Demand.order for map(): by position, as a NamedTuple field read by name costs more.
_ORDER = operator.itemgetter(1)
_KLASS = operator.itemgetter(7)


# A tier: the demands of one priority, as classes of members with equal cell, minimum and
# target (they need the same and get the same).
_Tier = list[list[int]]


def share(budgets: Sequence[int], demands: Sequence[Demand], max_imbalance: int) -> list[int]:
    """The current for each demand: 0 or within [minimum, target]; see the module docstring."""
    current = [0] * len(demands)
    if not demands:
        return current
    # Keyed by Demand.klass, read in C; demands made without one are keyed by its numbers.
    keys: list[object] = list(map(_KLASS, demands))
    if None in keys:
        keys = [d.klass or (d.prio, d.cell, d.minimum, d.target) for d in demands]
    by_key: defaultdict[object, list[int]] = defaultdict(list)
    for i, key in enumerate(keys):
        by_key[key].append(i)
    tiers: dict[int, _Tier] = {}
    for members in by_key.values():
        prio = demands[members[0]][0]
        tier = tiers.get(prio)
        if tier is None:
            tiers[prio] = [members]
        else:
            tier.append(members)
    prios = sorted(tiers, reverse=True)
    head = list(budgets)
    loads = [0, 0, 0]
    repaired = _solve(head, demands, [tiers[p] for p in prios], max_imbalance, current, loads)
    if repaired:
        _restore_priority(budgets, demands, prios, tiers, max_imbalance, current)
    return current


def _solve(
    head: list[int],
    demands: Sequence[Demand],
    tier_list: list[_Tier],
    max_imbalance: int,
    current: list[int],
    loads: list[int],
) -> bool:
    """Shares `head` among the tiers (highest first); True when the balance repair ran."""
    _minimums(head, demands, tier_list, current, loads)
    repaired = False
    if max_imbalance > 0 and max(loads) - min(loads) > max_imbalance:
        _repair_balance(head, demands, tier_list, max_imbalance, current, loads)
        repaired = True
    for tier in tier_list:
        _fill_tier(head, demands, tier, max_imbalance, current, loads)
    return repaired


def _take(head: list[int], loads: list[int], d: Demand, amount: int) -> None:
    for s in d.slots:
        head[s] -= amount
    for p in PHASES_OF[d.mask]:
        loads[p] += amount


def _fits(head: list[int], d: Demand, amount: int) -> bool:
    return all(head[s] >= amount for s in d.slots)


def _balanced(loads: list[int], d: Demand, amount: int, max_imbalance: int) -> bool:
    if max_imbalance <= 0:
        return True
    mask = d.mask
    a = loads[0] + (amount if mask & 1 else 0)
    b = loads[1] + (amount if mask & 2 else 0)
    c = loads[2] + (amount if mask & 4 else 0)
    return max(a, b, c) - min(a, b, c) <= max_imbalance


def _minimums(
    head: list[int],
    demands: Sequence[Demand],
    tier_list: list[_Tier],
    current: list[int],
    loads: list[int],
) -> None:
    for tier in tier_list:
        need: dict[int, int] = {}
        for members in tier:
            d0 = demands[members[0]]
            amount = d0.minimum * len(members)
            for s in d0.slots:
                need[s] = need.get(s, 0) + amount
        if all(head[s] >= v for s, v in need.items()):
            for members in tier:
                d0 = demands[members[0]]
                minimum = d0.minimum
                _take(head, loads, d0, minimum * len(members))
                for i in members:
                    current[i] = minimum
            continue
        _minimums_in_order(head, demands, tier, need, current, loads)


# Below this many EVSEs that surely fit, _minimums_in_order goes one by one.
_BULK = 16


def _minimums_in_order(
    head: list[int],
    demands: Sequence[Demand],
    tier: _Tier,
    need: dict[int, int],
    current: list[int],
    loads: list[int],
) -> None:
    """Not all minimums of a tier fit: admits them one by one in priority order.

    Only the slots that cannot take all of them ("tight") can refuse anyone, so each EVSE is
    checked against those alone, and the other slots are charged in bulk afterwards. Classes
    that load no tight slot are admitted whole, in any order. Budgets only shrink here, so
    once one EVSE does not fit, no later one with the same cell and minimum will.

    While every tight slot has room for `room` more of the largest minimum that loads it, the
    next `room` EVSEs all fit, whoever they are: they are admitted in bulk (in C, by map and
    Counter). Only the stretch before a slot runs out goes one by one.
    """
    tight = {s for s, v in need.items() if head[s] < v}
    admitted: list[tuple[Demand, int]] = []  # (a member, how many were admitted)
    ordered: list[int] = []
    class_of = [0] * len(demands)  # demand index -> its class (a list: faster than a dict)
    info: list[tuple[int, tuple[int, ...]]] = []  # per ordered class: minimum, tight slots
    firsts: list[Demand] = []
    largest: dict[int, int] = {}  # tight slot -> the largest minimum that loads it (>= 1)
    for members in tier:
        d0 = demands[members[0]]
        minimum = d0.minimum
        mine = tuple(filter(tight.__contains__, d0.slots))
        if not mine:
            for i in members:
                current[i] = minimum
            admitted.append((d0, len(members)))
            continue
        c = len(info)
        info.append((minimum, mine))
        firsts.append(d0)
        for s in mine:
            largest[s] = max(largest.get(s, 1), minimum)
        for i in members:
            class_of[i] = c
        ordered.extend(members)
    orders = list(map(_ORDER, demands))
    ordered.sort(key=orders.__getitem__)
    refused = [False] * len(info)
    counts = [0] * len(info)
    minimum_of = [m for m, _ in info]  # per class
    k = 0
    while k < len(ordered):
        room = min(head[s] // m for s, m in largest.items())
        if room >= _BULK:
            chunk = ordered[k : k + room]
            k += room
            classes = list(map(class_of.__getitem__, chunk))
            if any(refused):
                keep = list(map(refused.__getitem__, classes))
                chunk = list(compress(chunk, map(not_, keep)))
                classes = list(compress(classes, map(not_, keep)))
            deque(map(current.__setitem__, chunk, map(minimum_of.__getitem__, classes)), 0)
            for c, n in Counter(classes).items():
                minimum, mine = info[c]
                for s in mine:
                    head[s] -= minimum * n
                counts[c] += n
            continue
        for i in ordered[k : k + _BULK]:
            c = class_of[i]
            if refused[c]:
                continue
            minimum, mine = info[c]
            for s in mine:
                if head[s] < minimum:
                    refused[c] = True
                    break
            else:
                for s in mine:
                    head[s] -= minimum
                current[i] = minimum
                counts[c] += 1
        k += _BULK
    admitted.extend((d0, n) for d0, n in zip(firsts, counts, strict=True) if n)
    for d0, n in admitted:
        amount = d0.minimum * n
        for s in d0.slots:
            if s not in tight:
                head[s] -= amount
        for p in PHASES_OF[d0.mask]:
            loads[p] += amount


def _priority_order(demands: Sequence[Demand], tier_list: list[_Tier]) -> list[int]:
    out: list[int] = []
    for tier in tier_list:
        out.extend(sorted((i for members in tier for i in members), key=lambda k: demands[k].order))
    return out


def _repair_balance(
    head: list[int],
    demands: Sequence[Demand],
    tier_list: list[_Tier],
    max_imbalance: int,
    current: list[int],
    loads: list[int],
) -> None:
    ordered = _priority_order(demands, tier_list)
    position = {i: k for k, i in enumerate(ordered)}
    stacks: list[list[int]] = [[] for _ in range(8)]
    for i in ordered:
        if current[i]:
            stacks[demands[i].mask].append(i)
    while max(loads) - min(loads) > max_imbalance:
        hi = loads.index(max(loads))
        lo = loads.index(min(loads))
        victim = -1
        for mask in range(1, 8):
            stack = stacks[mask]
            if stack and mask >> hi & 1 and not mask >> lo & 1:
                i = stack[-1]
                if victim < 0 or position[i] > position[victim]:
                    victim = i
        if victim < 0:
            # Only loads this call cannot move remain unbalanced (callers prevent this).
            break
        stacks[demands[victim].mask].pop()
        _take(head, loads, demands[victim], -current[victim])
        current[victim] = 0
    for i in ordered:
        d = demands[i]
        if (
            current[i] == 0
            and _fits(head, d, d.minimum)
            and _balanced(loads, d, d.minimum, max_imbalance)
        ):
            _take(head, loads, d, d.minimum)
            current[i] = d.minimum


def _fill_tier(
    head: list[int],
    demands: Sequence[Demand],
    tier: _Tier,
    max_imbalance: int,
    current: list[int],
    loads: list[int],
) -> None:
    classes: list[_Class] = []
    admitted: list[list[int]] = []
    for members in tier:
        d0 = demands[members[0]]
        if d0.target <= d0.minimum:
            continue
        # filter() in C: a comprehension is a function call of its own, once per class.
        these = list(filter(current.__getitem__, members))
        if these:
            classes.append(
                _Class(d0.slots, PHASES_OF[d0.mask], d0.mask, d0.minimum, d0.target, len(these))
            )
            admitted.append(these)
    if not classes:
        return
    levels = _water_fill(head, loads, max_imbalance, classes)
    for level, these in zip(levels, admitted, strict=True):
        for i in these:
            current[i] = level


class _Class(NamedTuple):
    slots: tuple[int, ...]
    phases: tuple[int, ...]
    mask: int
    minimum: int
    target: int
    size: int


def _water_fill(
    head: list[int], loads: list[int], max_imbalance: int, classes: list[_Class]
) -> list[int]:
    """Progressive filling: the level of every rising class goes up together; a class stops
    at its target, or when a slot it loads (or the phase balance) has no room for one more mA
    per member. Updates `head` and `loads`; returns each class's level."""
    count = len(classes)
    level = [c.minimum for c in classes]
    starts = sorted(range(count), key=lambda j: classes[j].minimum)
    slope: dict[int, int] = {}
    members: dict[int, list[int]] = {}
    sigma = [0, 0, 0]
    rising: dict[int, None] = {}
    finish: list[tuple[int, int]] = []
    ptr = 0
    lam = classes[starts[0]].minimum

    def stop(j: int, at: int) -> None:
        del rising[j]
        c = classes[j]
        for s in c.slots:
            slope[s] -= c.size
        for p in c.phases:
            sigma[p] -= c.size
        level[j] = at

    while True:
        while ptr < count and classes[starts[ptr]].minimum <= lam:
            j = starts[ptr]
            ptr += 1
            c = classes[j]
            rising[j] = None
            for s in c.slots:
                slope[s] = slope.get(s, 0) + c.size
                lst = members.get(s)
                if lst is None:
                    members[s] = [j]
                else:
                    lst.append(j)
            for p in c.phases:
                sigma[p] += c.size
            heapq.heappush(finish, (c.target, j))
        if not rising:
            if ptr >= count:
                break
            lam = classes[starts[ptr]].minimum
            continue
        while finish[0][1] not in rising:
            heapq.heappop(finish)
        step = finish[0][0] - lam
        if ptr < count:
            step = min(step, classes[starts[ptr]].minimum - lam)
        for s, sl in slope.items():
            if sl and head[s] < sl * step:
                step = head[s] // sl
        if max_imbalance > 0:
            for a in range(3):
                for b in range(3):
                    diff = sigma[a] - sigma[b]
                    if diff > 0:
                        room = (max_imbalance - (loads[a] - loads[b])) // diff
                        if room < step:
                            step = room
        if step > 0:
            lam += step
            for s, sl in slope.items():
                if sl:
                    head[s] -= sl * step
            loads[0] += sigma[0] * step
            loads[1] += sigma[1] * step
            loads[2] += sigma[2] * step
        while finish and finish[0][0] <= lam:
            target, j = heapq.heappop(finish)
            if j in rising:
                stop(j, target)
        for s, sl in list(slope.items()):
            if sl and head[s] < sl:
                for j in members[s]:
                    if j in rising:
                        stop(j, lam)
        if max_imbalance > 0:
            _stop_unbalancing(classes, rising, sigma, loads, max_imbalance, stop, lam)
    return level


def _stop_unbalancing(
    classes: list[_Class],
    rising: dict[int, None],
    sigma: list[int],
    loads: list[int],
    max_imbalance: int,
    stop: Callable[[int, int], None],
    lam: int,
) -> None:
    """Stops the classes that would push a phase pair past the balance limit by rising 1 mA."""
    changed = True
    while changed:
        changed = False
        for a in range(3):
            for b in range(3):
                diff = sigma[a] - sigma[b]
                if diff > 0 and loads[a] - loads[b] + diff > max_imbalance:
                    for j in list(rising):
                        mask = classes[j].mask
                        if mask >> a & 1 and not mask >> b & 1:
                            stop(j, lam)
                    changed = True


def _restore_priority(
    budgets: Sequence[int],
    demands: Sequence[Demand],
    prios: list[int],
    tiers: dict[int, _Tier],
    max_imbalance: int,
    current: list[int],
) -> None:
    """Admits an EVSE left at 0 whose minimum fits beside everything of equal and higher
    priority, and shares the lower priorities again around it; repeats until none does."""
    while True:
        used: dict[int, int] = {}
        loads = [0, 0, 0]
        admitted = False
        for level_no, prio in enumerate(prios):
            members = [i for cls in tiers[prio] for i in cls]
            for i in members:
                c = current[i]
                if c:
                    d = demands[i]
                    for s in d.slots:
                        used[s] = used.get(s, 0) + c
                    for p in PHASES_OF[d.mask]:
                        loads[p] += c
            for i in sorted(members, key=lambda k: demands[k].order):
                d = demands[i]
                if current[i] or not all(budgets[s] - used.get(s, 0) >= d.minimum for s in d.slots):
                    continue
                if not _balanced(loads, d, d.minimum, max_imbalance):
                    continue
                current[i] = d.minimum
                head = list(budgets)
                for s, v in used.items():
                    head[s] -= v
                new_loads = list(loads)
                _take(head, new_loads, d, d.minimum)
                lower = [tiers[q] for q in prios[level_no + 1 :]]
                for tier in lower:
                    for cls in tier:
                        for k in cls:
                            current[k] = 0
                _solve(head, demands, lower, max_imbalance, current, new_loads)
                admitted = True
                break
            if admitted:
                break
        if not admitted:
            return
