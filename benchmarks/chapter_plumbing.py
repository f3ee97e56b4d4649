"""How much of each chapter's code is plumbing rather than teaching, by one stated pattern.

    python -m benchmarks.chapter_plumbing [--show]

A code line of a chapter (``notebooks/*.md``, code cells, blank lines and comments excluded) counts as
plumbing when it reads or writes files, builds cache keys, prints provenance, styles a table or speaks of
the project's issues: it matches ``PLUMBING`` below. The pattern is a lower bound (a loop that digs
columns out of a JSON file counts only where it names ``.get("...")``); it is the same for every chapter, so
the counts compare chapters and commits, not absolute truths. ``--show`` prints the matching lines.
"""
from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

PLUMBING = re.compile(r"json\.|read_text|write_text|Path\(|results_root|REPO_ROOT|cached_json|cache_key|sha256|hashlib|"
                      r"os\.environ|getenv|\.is_file\(|\.exists\(|glob\(|\.style\b|set_caption|na_rep|committed|"
                      r"provenance|__version__|git_commit|\.get\(\"|\.get\('|issue|not committed|no GPU")


def code_lines(chapter: str | Path) -> list[tuple[int, str]]:
    """(line number, text) of every code line of a MyST chapter's code cells, without blank lines and comments."""
    out, inside = [], False
    for number, line in enumerate(Path(chapter).read_text().splitlines(), 1):
        if line.startswith("```{code-cell}"):
            inside = True
        elif inside and line.startswith("```"):
            inside = False
        elif inside and line.strip() and not line.lstrip().startswith(("#", ":")):
            out.append((number, line))
    return out


def plumbing_lines(chapter: str | Path) -> list[tuple[int, str]]:
    """The code lines of ``chapter`` that match ``PLUMBING``."""
    return [(n, t) for n, t in code_lines(chapter) if PLUMBING.search(t)]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.chapter_plumbing", description=__doc__.split("\n\n")[0])
    p.add_argument("--notebooks", type=Path, default=Path(__file__).resolve().parent.parent / "notebooks")
    p.add_argument("--show", action="store_true", help="print every line counted as plumbing")
    a = p.parse_args(argv)
    total = plumbing = 0
    print(f"{'chapter':40s} {'code':>5s} {'plumbing':>8s} {'share':>6s}")
    for chapter in sorted(a.notebooks.glob("*.md")):
        code, plumb = code_lines(chapter), plumbing_lines(chapter)
        total, plumbing = total + len(code), plumbing + len(plumb)
        print(f"{chapter.name:40s} {len(code):5d} {len(plumb):8d} {len(plumb) / max(len(code), 1):6.1%}")
        if a.show:
            for n, t in plumb:
                print(f"    {n:4d} {t.strip()[:110]}")
    print(f"{'all chapters':40s} {total:5d} {plumbing:8d} {plumbing / max(total, 1):6.1%}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
