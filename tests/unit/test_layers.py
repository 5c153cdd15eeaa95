"""The layers hold: read every import of `service` and `bridges` (also those inside functions
and under TYPE_CHECKING) and check the rules of CONTRIBUTING.md ("Layers").

- `service.core` imports nothing of chargebus outside itself (it is pure) but the version
  constants of `service/__init__.py`, which imports nothing;
- a bridge imports only the shared parts of `service`: the core, the bus and its setup, the
  topic names, settings, auth's throttle and the HTTP plumbing (`service.httpkit`) — never the
  service's wiring, its /cnf adapter, its state or its control loop;
- of `service`, only the wiring (`service.app`, `service.cli`, `service.demo`) imports bridges;
- no two modules import each other, directly or around a circle.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("service", "bridges")

# What a bridge may use of the service: the pure core and the plumbing every part shares.
BRIDGE_MAY_IMPORT = (
    "service.core",
    "service.bus",
    "service.bus_setup",
    "service.topics",
    "service.settings",
    "service.httpkit",
    "service.auth",
    "service.rpc_client",
    "service.log_format",
)
# The wiring: the only parts of the service that know which bridges exist.
WIRING = ("service.app", "service.cli", "service.demo")


@dataclass(frozen=True)
class Import:
    source: str  # the importing module
    target: str  # the imported module (a submodule when `from pkg import submodule`)
    line: int


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def all_modules() -> dict[str, Path]:
    modules: dict[str, Path] = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            modules[module_name(path)] = path
    return modules


def _resolve(module: str, is_package: bool, node: ast.ImportFrom) -> str:
    if node.level == 0:
        return node.module or ""
    base = module.split(".")
    # A package's __init__ is the package itself: `.` is the package, not its parent.
    base = base if is_package else base[:-1]
    if node.level > 1:
        base = base[: -(node.level - 1)]
    return ".".join([*base, node.module] if node.module else base)


def imports_of(module: str, path: Path, known: set[str]) -> Iterator[Import]:
    tree = ast.parse(path.read_text(), filename=str(path))
    is_package = path.name == "__init__.py"
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield Import(module, alias.name, node.lineno)
        elif isinstance(node, ast.ImportFrom):
            target = _resolve(module, is_package, node)
            if target == "__future__":
                continue
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                yield Import(module, sub if sub in known else target, node.lineno)


def chargebus_imports() -> list[Import]:
    modules = all_modules()
    known = set(modules)
    return [
        imp
        for name, path in modules.items()
        for imp in imports_of(name, path, known)
        if imp.target.split(".")[0] in PACKAGES
    ]


def within(module: str, prefixes: tuple[str, ...]) -> bool:
    return any(module == p or module.startswith(p + ".") for p in prefixes)


def describe(found: list[Import]) -> str:
    return "\n".join(f"  {i.source}:{i.line} imports {i.target}" for i in found)


@pytest.fixture(scope="module")
def imports() -> list[Import]:
    found = chargebus_imports()
    assert len(found) > 100, "the import reader found too few imports to be reading them"
    return found


def test_the_core_imports_nothing_outside_itself(imports: list[Import]) -> None:
    wrong = [
        i
        for i in imports
        if within(i.source, ("service.core",))
        and not within(i.target, ("service.core",))
        and i.target != "service"
    ]
    assert not wrong, "service.core must stay pure:\n" + describe(wrong)
    # `service` itself is only version constants: importing it brings nothing else along.
    assert not [i for i in imports if i.source == "service"]


def test_bridges_use_only_the_shared_parts_of_the_service(imports: list[Import]) -> None:
    wrong = [
        i
        for i in imports
        if within(i.source, ("bridges",))
        and within(i.target, ("service",))
        and not within(i.target, BRIDGE_MAY_IMPORT)
    ]
    assert not wrong, "a bridge reached into the service:\n" + describe(wrong)


def test_only_the_wiring_imports_bridges(imports: list[Import]) -> None:
    wrong = [
        i
        for i in imports
        if within(i.source, ("service",))
        and within(i.target, ("bridges",))
        and not within(i.source, WIRING)
    ]
    assert not wrong, "only service.app/cli/demo may know the bridges:\n" + describe(wrong)


def find_cycle(edges: dict[str, set[str]]) -> list[str] | None:
    """One import circle, as the modules along it; None when there is none."""
    state: dict[str, int] = {}  # 1 on the current path, 2 done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                return [*path[path.index(nxt) :], nxt]
            if nxt not in state and (cycle := visit(nxt)) is not None:
                return cycle
        path.pop()
        state[node] = 2
        return None

    for start in sorted(edges):
        if start not in state and (cycle := visit(start)) is not None:
            return cycle
    return None


def test_no_import_circles(imports: list[Import]) -> None:
    edges: dict[str, set[str]] = {}
    for i in imports:
        # A submodule importing its own package's __init__ (for shared names) is no circle
        # unless the __init__ imports it back, which the search sees as an edge of its own.
        if i.source != i.target:
            edges.setdefault(i.source, set()).add(i.target)
    cycle = find_cycle(edges)
    assert cycle is None, "import circle: " + " -> ".join(cycle or [])


def test_the_reader_sees_a_circle_and_a_forbidden_import() -> None:
    """The checks above can fail: a circle and a hidden import in a function are found."""
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None
    source = "def f():\n    from service.app import running_service\n"
    tree_path = ROOT / "bridges" / "_layers_probe.py"
    known = set(all_modules())
    try:
        tree_path.write_text(source)
        found = list(imports_of("bridges._layers_probe", tree_path, known))
    finally:
        tree_path.unlink()
    assert [(i.target, i.line) for i in found] == [("service.app", 2)]
