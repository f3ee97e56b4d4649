"""The package's layers: the core (``cdn``), the experiments on it (``cdn.experiments``), the book on both
(``cdn.book``), and the command line (``cdn.cli``) over everything. Read from the source with ``ast``, every
import counted, those inside functions too: a lower layer never imports a higher one, and no two modules
import each other, directly or around a circle. The README's layout names every module."""
from __future__ import annotations

import re

from benchmarks.import_graph import (ROOT, circles, dodging_imports, find_cycle, import_graph, imports_of,
                                     package_modules)

PACKAGE = ROOT / "cdn"
#: a higher number may import a lower one, never the reverse
LAYERS = {"core": 0, "experiments": 1, "book": 2, "cli": 3}


def layer(module: str) -> str:
    parts = module.split(".")
    if len(parts) > 1 and parts[1] in ("experiments", "book"):
        return parts[1]
    if module in ("cdn.cli", "cdn.__main__"):
        return "cli"
    return "core"


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
    assert imports_of("cdn.a", pkg / "a.py", known, "top") == set()
    assert imports_of("cdn.a", pkg / "a.py", known, "function") == {"cdn.b"}
    # a.f's import dodges the circle a -> b -> a: b imports a at module level
    assert dodging_imports(tmp_path) == [("cdn.a", "cdn.b")]
    assert circles(import_graph(tmp_path)) == 1
    (pkg / "b.py").write_text("x = 1\n")
    assert dodging_imports(tmp_path) == [] and circles(import_graph(tmp_path)) == 0


def test_no_import_inside_a_function_dodges_a_circle():
    assert dodging_imports() == []


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

