"""The package's shape, read from the source (no import of steeropt): no import cycle, rooms that depend only
downward, modules a reader can hold in mind, no reach into another package's private names.

Every import between steeropt modules counts, also one inside a function: a cycle hidden in a function is still
a cycle. `from steeropt.a.b import c` is an arrow to steeropt.a.b (or to the module steeropt.a.b.c), not to the
package steeropt.a that Python initialises on the way.
"""
from __future__ import annotations

import ast
from pathlib import Path

import steeropt

ROOT = Path(steeropt.__file__).parent
MAX_LINES = 450
STUDY_MAX_LINES = 250
# The rooms bottom to top: a module may import its own room and the rooms below it. specs and engine/evaluation
# lean on each other by design (a spec checks keywords with the metric's rules; a judge spec is a spec kind), so
# they share a floor.
FLOORS = [
    {"types", "errors", "redact", "timing", "records"},
    {"specs", "engine", "evaluation"},
    {"search"},
    {"tracking"},
    {"report"},
    {"runner"},
    {"deploy", "serve"},
    {"cli", "__main__"},
]
# In-function imports of steeropt modules outside cli/ (the CLI loads a command's stack on use: `steeropt --help`
# stays at 0.2 s), each with why. Anything else is imported at the top of its module.
LAZY = {
    ("steeropt.specs.study", "steeropt.evaluation.objectives.metrics"): "evaluation loads torch; reading a spec must not",
    ("steeropt.specs.validate", "steeropt.engine.models"): "validate checks a model's shape without torch when it can",
    ("steeropt.evaluation.judges", "steeropt.evaluation.judges.local_backend"): "torch, only for a local judge",
    ("steeropt.evaluation.judges", "steeropt.evaluation.judges.openai_backend"): "openai, only for an endpoint judge",
    ("steeropt.search.optimizers", "steeropt.search.optimizers._ax"): "Ax (seconds to import), only for botorch",
}


def _modules() -> dict[str, Path]:
    out = {}
    for p in ROOT.rglob("*.py"):
        parts = list(p.relative_to(ROOT.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = p
    return out


MODULES = _modules()


def _imports(mod: str, path: Path):
    """(target module, imported name or None, inside a function?) for every import of a steeropt module."""
    tree = ast.parse(path.read_text())
    in_fn = {id(k) for f in ast.walk(tree) if isinstance(f, (ast.FunctionDef, ast.AsyncFunctionDef))
             for k in ast.walk(f) if k is not f}
    pkg = path.name == "__init__.py"
    for n in ast.walk(tree):
        if isinstance(n, ast.Import):
            for a in n.names:
                if a.name.split(".")[0] == "steeropt":
                    yield _owner(a.name), None, id(n) in in_fn
        elif isinstance(n, ast.ImportFrom):
            base = n.module or ""
            if n.level:
                here = mod.split(".") if pkg else mod.split(".")[:-1]
                base = ".".join(here[: len(here) - n.level + 1] + ([n.module] if n.module else []))
            if base.split(".")[0] != "steeropt":
                continue
            for a in n.names:
                full = f"{base}.{a.name}"
                yield (full, None, id(n) in in_fn) if full in MODULES else (_owner(base), a.name, id(n) in in_fn)


def _owner(name: str) -> str:
    while name not in MODULES and "." in name:
        name = name.rsplit(".", 1)[0]
    return name


GRAPH = {m: sorted({t for t, _, _ in _imports(m, p) if t != m}) for m, p in MODULES.items()}


def _room(mod: str) -> str:
    parts = mod.split(".")
    return parts[1] if len(parts) > 1 else "steeropt"


def _floor(room: str) -> int:
    return next(i for i, rooms in enumerate(FLOORS) if room in rooms)


def test_no_import_cycle():
    state, stack, cycles = {}, [], []

    def visit(m):
        state[m] = "open"
        stack.append(m)
        for t in GRAPH[m]:
            if state.get(t) == "open":
                cycles.append(stack[stack.index(t):] + [t])
            elif t not in state:
                visit(t)
        stack.pop()
        state[m] = "done"

    for m in sorted(GRAPH):
        if m not in state:
            visit(m)
    assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(c) for c in cycles)


def test_rooms_depend_only_downward():
    up = [f"{m} -> {t}" for m, ts in GRAPH.items() for t in ts
          if m != "steeropt" and t != "steeropt" and _floor(_room(t)) > _floor(_room(m))]
    assert not up, "imports that reach up a floor (docs/architecture.md):\n" + "\n".join(up)


def test_module_sizes():
    sizes = {m: len(p.read_text().splitlines()) for m, p in MODULES.items()}
    big = {m: n for m, n in sizes.items() if n > MAX_LINES}
    assert not big, f"modules over {MAX_LINES} lines: {big}"
    assert sizes["steeropt.runner.study"] <= STUDY_MAX_LINES


def test_no_private_name_across_packages():
    def package(m):
        return ".".join(m.split(".")[:2])

    bad = [f"{m} imports {name} from {t}" for m, p in MODULES.items() for t, name, _ in _imports(m, p)
           if name and name.startswith("_") and not name.startswith("__") and package(t) != package(m)]
    assert not bad, "\n".join(bad)


def test_steeropt_imports_are_at_the_top():
    lazy = {(m, t) for m, p in MODULES.items() for t, _, inside in _imports(m, p)
            if inside and _room(m) != "cli" and m != "steeropt"}
    assert lazy <= set(LAZY), "imports of steeropt modules inside functions:\n" + "\n".join(
        f"{m} -> {t}" for m, t in sorted(lazy - set(LAZY)))


def test_no_callable_module():
    tricks = [m for m, p in MODULES.items() if "sys.modules[__name__].__class__" in p.read_text()]
    assert not tricks, tricks


def test_readme_example_names_come_from_steeropt():
    readme = (ROOT.parent / "README.md").read_text()
    first = readme.split("```python", 1)[1].split("```", 1)[0]
    names = [n.strip() for line in first.splitlines() if line.startswith("from steeropt import")
             for n in line.split("import", 1)[1].split(",")]
    assert names and all(n in steeropt.__all__ for n in names), names
    assert {"load_model"} <= set(steeropt.__all__)
