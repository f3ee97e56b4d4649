"""One table of experiment sizes (``cdn.profiles.EXPERIMENT_SIZES``) read one way, with one fallback rule."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

from cdn.profiles import EXPERIMENT_SIZES, EXPERIMENTS, PROFILES, experiment_sizes, sizes_profile

ROOT = Path(__file__).resolve().parents[1]


def test_a_profile_without_sizes_of_its_own_uses_quicks():
    assert "attacks" not in EXPERIMENT_SIZES["cpu"] and sizes_profile("cpu", "attacks") == "quick"
    assert experiment_sizes("cpu", "attacks") == EXPERIMENT_SIZES["quick"]["attacks"]
    assert sizes_profile("cpu", "classical") == "cpu" and experiment_sizes("cpu", "classical") == {"images": 100}
    for profile in PROFILES:
        for experiment in EXPERIMENTS:
            own = experiment in EXPERIMENT_SIZES[profile]
            assert sizes_profile(profile, experiment) == (profile if own else "quick")


def test_the_sizes_are_a_copy_and_bad_names_are_refused():
    sizes = experiment_sizes("quick", "certify")
    sizes["n"] = -1
    assert EXPERIMENT_SIZES["quick"]["certify"]["n"] == 500
    with pytest.raises(ValueError, match="unknown profile 'laptop'"):
        experiment_sizes("laptop", "attacks")
    with pytest.raises(ValueError, match="unknown experiment 'atacks'.*attacks"):
        experiment_sizes("quick", "atacks")


def test_quick_holds_every_experiment_and_the_others_only_known_ones():
    assert set(EXPERIMENT_SIZES) == set(PROFILES)
    for profile, table in EXPERIMENT_SIZES.items():
        assert set(table) <= set(EXPERIMENTS), profile


def _profile_keyed_tables(path: Path) -> list[int]:
    """Lines of dict literals keyed by two or more profile names."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Dict):
            keys = {k.value for k in node.keys if isinstance(k, ast.Constant) and isinstance(k.value, str)}
            if len(keys & set(PROFILES)) >= 2:
                found.append(node.lineno)
    return found


def test_no_module_or_chapter_keeps_a_size_table_of_its_own():
    """The training profiles themselves (``PROFILE_SETTINGS``) and this table live in cdn/profiles.py; the provenance
    box's notes per profile are prose, not sizes."""
    allowed = {ROOT / "cdn" / "profiles.py": None, ROOT / "cdn" / "book" / "chapter.py": None}
    offenders = {}
    for path in sorted((ROOT / "cdn").rglob("*.py")):
        if path not in allowed and _profile_keyed_tables(path):
            offenders[str(path.relative_to(ROOT))] = _profile_keyed_tables(path)
    jupytext = pytest.importorskip("jupytext")
    for path in sorted((ROOT / "notebooks").glob("*.md")):
        for i, cell in enumerate(c for c in jupytext.read(path).cells if c.cell_type == "code"):
            code = "\n".join(line for line in cell.source.splitlines() if not line.lstrip().startswith(("%", "!")))
            tables = [n.lineno for n in ast.walk(ast.parse(code)) if isinstance(n, ast.Dict)
                      and len({k.value for k in n.keys if isinstance(k, ast.Constant)} & set(PROFILES)) >= 2]
            if tables:
                offenders[f"{path.relative_to(ROOT)}, code cell {i}"] = tables
    assert not offenders, f"per-profile size tables outside cdn.profiles.EXPERIMENT_SIZES: {offenders}"
