"""The package's layers: the core (``cdn``), the experiments on it (``cdn.experiments``), the book on both
(``cdn.book``), and the command line (``cdn.cli``) over everything. Read from the source with ``ast``, every
import counted, those inside functions too: a lower layer never imports a higher one, and no two modules
import each other, directly or around a circle. The README's layout names every module."""
from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "cdn"
#: a higher number may import a lower one, never the reverse
LAYERS = {"core": 0, "experiments": 1, "book": 2, "cli": 3}


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def layer(module: str) -> str:
    parts = module.split(".")
    if len(parts) > 1 and parts[1] in ("experiments", "book"):
        return parts[1]
    if module in ("cdn.cli", "cdn.__main__"):
        return "cli"
    return "core"


def package_modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def imports_of(module: str, path: Path, known: set[str]) -> set[str]:
    """The modules of ``cdn`` that ``module`` imports anywhere in its source (relative or absolute)."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            candidates = [target] + [f"{target}.{a.name}" for a in node.names]
        elif isinstance(node, ast.Import):
            candidates = [a.name for a in node.names]
        else:
            continue
        for name in candidates:
            while name and name not in known:
                name = name.rpartition(".")[0]
            if name and name != module:
                found.add(name)
    return found


def import_graph() -> dict[str, set[str]]:
    modules = package_modules()
    return {m: imports_of(m, p, set(modules)) for m, p in modules.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import circle of ``graph`` (a list of modules, first == last), None if there is none. A
    package's ``__init__`` importing its own submodules is not a circle (Python runs it first)."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def edges(m):
        return [t for t in graph.get(m, ()) if not m.startswith(t + ".")]

    def visit(m):
        state[m] = 1
        stack.append(m)
        for t in edges(m):
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


def test_the_layers_import_downwards_only():
    graph = import_graph()
    wrong = [f"{m} ({layer(m)}) imports {t} ({layer(t)})" for m, ts in graph.items() for t in ts
             if LAYERS[layer(t)] > LAYERS[layer(m)] and t != "cdn"]
    assert not wrong, "\n".join(wrong)
    assert layer("cdn.experiments.attacks") == "experiments" and layer("cdn.book.plots") == "book"
    assert "cdn.experiments.attacks" in graph["cdn.book.plots"] or "cdn.experiments.ood" in graph["cdn.book.plots"]


def test_there_is_no_import_circle():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import circle: " + " -> ".join(cycle)


def test_the_cycle_finder_finds_circles_and_passes_packages():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None
    # cdn.book.__init__ imports cdn.book.build, which is fine; cdn.book.build importing cdn.book.chapter too
    assert find_cycle({"p": {"p.x"}, "p.x": {"p"}}) is None


def test_imports_inside_functions_are_counted(tmp_path):
    pkg = tmp_path / "cdn"
    pkg.mkdir()
    (pkg / "a.py").write_text("def f():\n    from .b import g\n    return g\n")
    (pkg / "b.py").write_text("from .a import f\n")
    known = {"cdn.a", "cdn.b"}
    assert imports_of("cdn.a", pkg / "a.py", known) == {"cdn.b"}
    assert imports_of("cdn.b", pkg / "b.py", known) == {"cdn.a"}


def test_the_readme_layout_names_every_module():
    text = (ROOT / "README.md").read_text()
    section = text[text.index("## Layout"):text.index("## Testing")]
    section = "\n".join(line for line in section.splitlines() if line.startswith("    "))  # the code block
    listed = set(re.findall(r"([A-Za-z_][A-Za-z0-9_]*)\.py", section))
    folders = set(re.findall(r"(?:^|\s)(cdn/(?:[a-z_]+/)*)", section))
    missing = [m for m, p in package_modules().items() if p.name not in ("__init__.py", "__main__.py")
               and p.stem not in listed]
    assert not missing, f"modules missing from the README's layout: {missing}"
    for folder in folders:
        assert (ROOT / folder).is_dir(), f"the README's layout names {folder}, which does not exist"
    stale = [n for n in listed if not list(PACKAGE.rglob(f"{n}.py"))]
    assert not stale, f"the README's layout names modules that do not exist: {stale}"

