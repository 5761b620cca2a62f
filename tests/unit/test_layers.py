"""The layers of tunesmith, stated once: a module imports only from layers below its own.

Lowest first. Packages of one layer are siblings: none imports another (train, eval and export
each stand on the layers below, never on each other). Every import counts, also those inside
functions and under TYPE_CHECKING: a lazy import up the order is still a dependency up the order.

Why this order: the data flows reader -> records -> validator -> tokenizer -> loop -> evaluator
-> exporter -> engine -> server, and each stage is usable (and testable) without the ones after
it. `api` is the one door in; the demo, the CLI, the server and the worker are its clients.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src" / "tunesmith"

LAYERS: list[set[str]] = [
    {"tunesmith"},  # the package itself (version only)
    {"errors"},
    {"io"},
    {"events"},
    {"config"},  # the run spec
    {"auto"},  # its automatic rules (epochs, learning rate, batch size)
    {"runs"},
    {"data", "models", "demo_data"},
    {"inference"},
    {"graders"},
    {"train", "eval", "export"},
    {"api"},
    {"demo"},
    {"store", "service"},  # the job store and the service's settings
    {"server", "worker"},
    {"cli"},
]
RANK = {name: i for i, layer in enumerate(LAYERS) for name in layer}


def module_names() -> dict[str, Path]:
    out = {}
    for f in SRC.rglob("*.py"):
        parts = ("tunesmith", *f.relative_to(SRC).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = f
    return out


def imports_of(path: Path, modules: dict[str, Path]) -> set[str]:
    """tunesmith modules imported by the file (a `from pkg import name` names the submodule
    when `name` is one)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.split(".")[0] == "tunesmith")
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module.split(".")[0] != "tunesmith":
                continue
            for alias in node.names:
                sub = f"{node.module}.{alias.name}"
                found.add(sub if sub in modules else node.module)
    return found


def area(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "tunesmith"


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    modules = module_names()
    return {m: imports_of(p, modules) - {m} for m, p in modules.items()}


def test_every_module_has_a_layer(graph: dict[str, set[str]]) -> None:
    unplaced = sorted({area(m) for m in graph} - set(RANK))
    assert not unplaced, f"add these to LAYERS in tests/unit/test_layers.py: {unplaced}"


def test_no_import_runs_up_or_across_the_layers(graph: dict[str, set[str]]) -> None:
    bad = []
    for mod, deps in sorted(graph.items()):
        for dep in sorted(deps):
            a, b = area(mod), area(dep)
            if a == b:
                continue
            if RANK[b] >= RANK[a]:
                bad.append(f"{mod} imports {dep} ({a} is layer {RANK[a]}, {b} is {RANK[b]})")
    assert not bad, "\n".join(bad)


def test_no_import_cycles(graph: dict[str, set[str]]) -> None:
    """Tarjan's strongly connected components over the module graph."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in graph:
                continue
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                cycles.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    assert not cycles, f"import cycles: {cycles}"


def test_only_the_cli_draws_progress() -> None:
    """Progress bars are a consumer of the event stream; the library only emits events."""
    offenders = []
    for mod, path in module_names().items():
        if area(mod) == "cli":
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = []
            if isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            if any(n == "rich.progress" or n.startswith("tqdm") for n in names):
                offenders.append(mod)
    assert not offenders, f"progress bars outside cli/: {sorted(set(offenders))}"


def test_the_layer_test_sees_lazy_imports(tmp_path: Path) -> None:
    """The checker itself: a function-level `from tunesmith import api` is seen."""
    f = tmp_path / "m.py"
    f.write_text("def f():\n    from tunesmith import api\n    import tunesmith.train.loop\n")
    mods = {"tunesmith.api": f, "tunesmith.train.loop": f}
    assert imports_of(f, mods) == {"tunesmith.api", "tunesmith.train.loop"}
