"""The layers run one way: an import-graph check over the package (no cycles, nothing imports upward)."""

from __future__ import annotations

import ast
import functools
from pathlib import Path

import diffkit

PACKAGE = Path(diffkit.__file__).parent

# Rank of each top-level module or package: a module may import its own package and lower ranks only.
# Why this order: docs/architecture.md.
RANKS: dict[str, int] = {
    "errors": 0,
    "atomic": 1,
    "safepath": 0,
    "lock": 1,
    "console": 0,
    "clihelp": 0,
    "configfile": 1,
    "report": 2,
    "dataset": 2,
    "device": 1,
    "models": 3,
    "diffusion": 3,
    "metrics": 3,
    "scrape": 3,
    "dedupe": 3,
    "runs": 4,
    "train": 5,
    "sample": 5,
    "fakesite": 5,
    "export": 5,
    "eval": 6,
    "phema": 6,
    "demo": 7,
    "testing": 7,
    "cli": 8,
    "__main__": 9,
}


def _top(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


@functools.cache
def _imports() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for path in PACKAGE.rglob("*.py"):
        relative = path.relative_to(PACKAGE.parent).with_suffix("")
        module = ".".join(relative.parts).removesuffix(".__init__")
        found: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
                found.update(name for name in names if name.startswith("diffkit.") or name == "diffkit")
            elif isinstance(node, ast.Import):
                found.update(a.name for a in node.names if a.name.startswith("diffkit"))
        graph[module] = found
    return graph


def test_every_top_level_module_has_a_rank() -> None:
    tops = {_top(module) for module in _imports()} - {"__init__"}
    assert tops <= set(RANKS), f"give these a layer in RANKS and docs/architecture.md: {tops - set(RANKS)}"


def test_no_import_runs_up_the_layers_or_across_a_layer() -> None:
    upward = []
    for module, targets in _imports().items():
        source = _top(module)
        for target in targets:
            destination = _top(target)
            if destination in ("__init__", source) or destination not in RANKS:
                continue  # `from diffkit import __version__`, or the module's own package
            if RANKS[destination] >= RANKS[source]:
                upward.append(f"{module} -> {target}")
    assert not upward, "imports that run up or across the layers:\n" + "\n".join(sorted(upward))


def test_no_import_cycle_between_modules() -> None:
    modules = set(_imports())
    graph = {module: {t for t in targets if t in modules} for module, targets in _imports().items()}
    state: dict[str, int] = {}
    cycle: list[str] = []

    def visit(node: str, stack: list[str]) -> bool:
        state[node] = 1
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                cycle.extend(stack[stack.index(nxt) :] + [nxt] if nxt in stack else [node, nxt])
                return True
            if state.get(nxt) is None and visit(nxt, [*stack, nxt]):
                return True
        state[node] = 2
        return False

    for start in sorted(graph):
        if state.get(start) is None and visit(start, [start]):
            break
    assert not cycle, " -> ".join(cycle)
