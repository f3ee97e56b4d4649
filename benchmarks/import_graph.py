"""The package's import graph, read from the source with ``ast``: modules and lines per folder, the largest
module, import circles, and imports placed inside functions (and how many of those dodge a circle).

    python -m benchmarks.import_graph [--before COMMIT]

An import inside a function *dodges a circle* when the module it imports already reaches the importing module
through module-level imports: moved to the top of the file, it would close a circle. ``--before`` reads the
package as it was at ``COMMIT`` (through ``git archive``) and prints both columns. ``tests/test_layout.py``
checks the layers and the absence of circles with the same functions.
"""
from __future__ import annotations

import argparse
import ast
import io
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def module_name(path: Path, root: Path = ROOT) -> str:
    """The dotted name of the module at ``path`` (a package's ``__init__.py`` is the package)."""
    parts = path.relative_to(root).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def package_modules(root: Path = ROOT, package: str = "cdn") -> dict[str, Path]:
    """Every module of ``package`` under ``root``: dotted name -> path."""
    return {module_name(p, root): p for p in sorted((root / package).rglob("*.py"))}


def _imports(module: str, path: Path, known: set[str]) -> list[tuple[str, bool]]:
    """(imported module of ``known``, whether the import sits inside a function) for each import of ``module``."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = []

    def visit(node, in_function: bool):
        for child in ast.iter_child_nodes(node):
            inside = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            if isinstance(child, ast.ImportFrom):
                if child.level:
                    base = package.split(".")[: len(package.split(".")) - (child.level - 1)]
                    target = ".".join(base + ([child.module] if child.module else []))
                else:
                    target = child.module or ""
                candidates = [target] + [f"{target}.{a.name}" for a in child.names]
            elif isinstance(child, ast.Import):
                candidates = [a.name for a in child.names]
            else:
                visit(child, inside)
                continue
            for name in candidates:
                while name and name not in known:
                    name = name.rpartition(".")[0]
                if name and name != module:
                    found.append((name, in_function))

    visit(ast.parse(path.read_text()), False)
    return found


def imports_of(module: str, path: Path, known: set[str], where: str = "anywhere") -> set[str]:
    """The modules of ``known`` that ``module`` imports: ``where`` = "anywhere", "top" (module level, class
    bodies included) or "function" (inside a function)."""
    if where not in ("anywhere", "top", "function"):
        raise ValueError(f"where must be 'anywhere', 'top' or 'function', got {where!r}")
    return {t for t, inside in _imports(module, path, known)
            if where == "anywhere" or inside == (where == "function")}


def import_graph(root: Path = ROOT, where: str = "anywhere") -> dict[str, set[str]]:
    """module -> the package's modules it imports (``where`` as in ``imports_of``)."""
    modules = package_modules(root)
    return {m: imports_of(m, p, set(modules), where) for m, p in modules.items()}


def _edges(graph: dict[str, set[str]], m: str) -> list[str]:
    # a package's submodule importing the package itself is not a circle: Python runs the package's __init__ first
    return [t for t in graph.get(m, ()) if not m.startswith(t + ".")]


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import circle of ``graph`` (a list of modules, first == last), None if there is none."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m):
        state[m] = 1
        stack.append(m)
        for t in _edges(graph, m):
            if state.get(t) == 1:
                return stack[stack.index(t):] + [t]
            if t not in state:
                found = visit(t)
                if found:
                    return found
        stack.pop()
        state[m] = 2
        return None

    for m in graph:
        if m not in state:
            found = visit(m)
            if found:
                return found
    return None


def reaches(graph: dict[str, set[str]], start: str, goal: str) -> bool:
    """Whether ``goal`` is reachable from ``start`` along ``graph``'s imports."""
    seen, todo = set(), [start]
    while todo:
        m = todo.pop()
        if m == goal:
            return True
        if m not in seen:
            seen.add(m)
            todo.extend(_edges(graph, m))
    return False


def circles(graph: dict[str, set[str]]) -> int:
    """The number of import circles of ``graph``, counted as groups of modules that reach each other (strongly
    connected components of more than one module)."""
    modules = list(graph)
    groups = {frozenset(t for t in modules if reaches(graph, m, t) and reaches(graph, t, m)) for m in modules}
    return sum(len(g) > 1 for g in groups)


def dodging_imports(root: Path = ROOT) -> list[tuple[str, str]]:
    """(module, imported) for each import inside a function whose target reaches the module through
    module-level imports: at the top of the file it would close a circle."""
    top, inner = import_graph(root, "top"), import_graph(root, "function")
    return sorted((m, t) for m, ts in inner.items() for t in ts if t not in top[m] and reaches(top, t, m))


def report(root: Path = ROOT) -> dict:
    """Modules and lines per folder, the largest module, circles, imports inside functions and those that dodge
    a circle, for the package under ``root``."""
    modules = package_modules(root)
    lines = {m: len(p.read_text().splitlines()) for m, p in modules.items()}
    folders: dict[str, list[str]] = {}
    for m, p in modules.items():
        folders.setdefault(str(p.parent.relative_to(root)), []).append(m)
    inner = import_graph(root, "function")
    largest = max(lines, key=lines.get)
    return {"folders": {f: {"modules": len(ms), "lines": sum(lines[m] for m in ms)} for f, ms in sorted(folders.items())},
            "largest module": f"{largest} ({lines[largest]} lines)",
            "circles": circles(import_graph(root)),
            "imports inside functions": sum(len(ts) for ts in inner.values()),
            "imports inside functions that dodge a circle": len(dodging_imports(root))}


def _archive(commit: str, into: Path) -> Path:
    data = subprocess.run(["git", "-C", str(ROOT), "archive", commit, "cdn"], check=True, capture_output=True).stdout
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        tar.extractall(into, filter="data")
    return into


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.import_graph", description=__doc__.split("\n\n")[0])
    p.add_argument("--before", metavar="COMMIT", help="also read the package as it was at COMMIT")
    a = p.parse_args(argv)
    columns = {"now": report()}
    if a.before:
        with tempfile.TemporaryDirectory() as tmp:
            columns = {a.before: report(_archive(a.before, Path(tmp))), **columns}
    names = list(columns)
    folders = sorted({f for c in columns.values() for f in c["folders"]})
    print(f"{'':46s}" + "".join(f"{n:>26s}" for n in names))
    for f in folders:
        cells = [c["folders"].get(f) for c in columns.values()]
        print(f"{f + '/: modules, lines':46s}" + "".join(
            f"{(str(x['modules']) + ', ' + str(x['lines'])) if x else '-':>26s}" for x in cells))
    for key in ("largest module", "circles", "imports inside functions", "imports inside functions that dodge a circle"):
        print(f"{key:46s}" + "".join(f"{str(c[key]):>26s}" for c in columns.values()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
