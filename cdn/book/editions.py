"""The book's exercises and its two editions: every exercise of a chapter's source has a label, a kind
(``EXERCISE_KINDS``), a difficulty (``DIFFICULTIES``, the end of its title) and exactly one solution
(``check_exercises``, ``exercise_counts``); the ``student`` edition renders the executed notebooks with every
solution removed (``strip_solutions``) and is checked to render none (``pages_with_solutions``)."""
from __future__ import annotations

import re
from pathlib import Path

from ..data import REPO_ROOT

#: the chapters' sources, ``notebooks/NN_name.md``
NOTEBOOKS_DIR = REPO_ROOT / "notebooks"
#: ``full``: every solution, hidden behind a toggle (the default); ``student``: no solution at all
EDITIONS = ("full", "student")
#: the kind of an exercise, one of these classes on every ``exercise`` directive
EXERCISE_KINDS = ("pen-and-paper", "coding")
#: the difficulty of an exercise, the last word of its title in parentheses: "Tweedie by hand (warm-up)"
DIFFICULTIES = ("warm-up", "core", "challenge")
_DIFFICULTY_RE = re.compile(r"\((" + "|".join(DIFFICULTIES) + r")\)\s*$")


class BookBuildError(RuntimeError):
    """The book could not be assembled or rendered (missing files, a table of contents that does not
    match the chapters, a failing Sphinx build)."""


_FENCE_RE = re.compile(r"^(?P<fence>`{3,}|:{3,})\{(?P<name>[A-Za-z0-9:_-]+)\}[ \t]*(?P<arg>.*)$")
_OPTION_RE = re.compile(r"^:(?P<key>[A-Za-z0-9_-]+):[ \t]*(?P<value>.*)$")


def check_edition(edition: str) -> str:
    """Return ``edition`` if it is one of ``EDITIONS``; raise ``ValueError`` naming them otherwise."""
    if edition not in EDITIONS:
        raise ValueError(f"unknown edition {edition!r}; expected one of {', '.join(EDITIONS)}")
    return edition


def directive_blocks(text: str) -> list[dict]:
    """The top-level fenced MyST directives of ``text`` (backtick or colon fences), in order: dicts with
    ``name``, ``arg``, ``options`` (the ``:key: value`` lines) and the line span ``start``..``end``
    (inclusive). A directive nested in another is part of its parent, not listed. Raises
    ``BookBuildError`` for a fence that is never closed."""
    lines = text.splitlines()
    blocks, i = [], 0
    while i < len(lines):
        m = _FENCE_RE.match(lines[i].rstrip())
        if not m:
            i += 1
            continue
        fence = m["fence"]
        j = i + 1
        # a closing fence: the same character, at least as long, nothing else on the line
        while j < len(lines) and not (set(lines[j].strip()) == {fence[0]} and len(lines[j].strip()) >= len(fence)):
            j += 1
        if j == len(lines):
            raise BookBuildError(f"the directive {{{m['name']}}} opened at line {i + 1} is never closed ({fence})")
        options = {}
        for line in lines[i + 1:j]:
            o = _OPTION_RE.match(line.strip())
            if not o:
                break
            options[o["key"]] = o["value"].strip()
        blocks.append({"name": m["name"], "arg": m["arg"].strip(), "options": options, "start": i, "end": j})
        i = j + 1
    return blocks


def exercise_counts(chapter: str, notebooks_dir: str | Path | None = None) -> dict:
    """The exercises and solutions in the source of ``chapter`` (``notebooks/<chapter>.md``):
    ``{"exercises": [{"label", "kind", "difficulty", "title"}], "solutions": [{"exercise", "label", "gated"}],
    "pen-and-paper": n, "coding": n, "warm-up": n, "core": n, "challenge": n}``; a gated solution (``solution-start`` ... ``solution-end``) is one that holds code cells."""
    nb_dir = Path(notebooks_dir) if notebooks_dir is not None else NOTEBOOKS_DIR
    src = nb_dir / f"{chapter}.md"
    if not src.is_file():
        raise FileNotFoundError(f"chapter {chapter!r}: {src} does not exist")
    exercises, solutions = [], []
    for b in directive_blocks(src.read_text(encoding="utf-8")):
        if b["name"] in ("exercise", "exercise-start"):
            classes = b["options"].get("class", "").split()
            kinds = [k for k in EXERCISE_KINDS if k in classes]
            level = _DIFFICULTY_RE.search(b["arg"])
            exercises.append({"label": b["options"].get("label"), "kind": kinds[0] if len(kinds) == 1 else None,
                              "difficulty": level.group(1) if level else None, "title": b["arg"]})
        elif b["name"] in ("solution", "solution-start"):
            solutions.append({"exercise": b["arg"], "label": b["options"].get("label"),
                              "gated": b["name"] == "solution-start"})
    out = {"exercises": exercises, "solutions": solutions}
    out.update({k: sum(e["kind"] == k for e in exercises) for k in EXERCISE_KINDS})
    out.update({k: sum(e["difficulty"] == k for e in exercises) for k in DIFFICULTIES})
    return out


def check_exercises(chapters: list[str], notebooks_dir: str | Path | None = None) -> None:
    """Check the exercises of ``chapters`` in their sources: every exercise has a label and exactly one
    kind among ``EXERCISE_KINDS`` (a ``:class:``) and a difficulty among ``DIFFICULTIES`` (the end of its
    title, in parentheses), every solution names an exercise of its chapter, and every exercise has exactly
    one solution. Raises ``BookBuildError`` listing every problem."""
    problems = []
    for chapter in chapters:
        counts = exercise_counts(chapter, notebooks_dir)
        labels = [e["label"] for e in counts["exercises"]]
        for i, e in enumerate(counts["exercises"], 1):
            if not e["label"]:
                problems.append(f"{chapter}: exercise {i} has no :label:")
            if e["kind"] is None:
                problems.append(f"{chapter}: exercise {e['label'] or i} needs exactly one :class: among "
                                f"{', '.join(EXERCISE_KINDS)}")
            if e["difficulty"] is None:
                problems.append(f"{chapter}: exercise {e['label'] or i} needs its difficulty at the end of its title, "
                                f"one of {', '.join(f'({d})' for d in DIFFICULTIES)}; got the title {e['title']!r}")
        targets = [s["exercise"] for s in counts["solutions"]]
        for t in targets:
            if t not in labels:
                problems.append(f"{chapter}: a solution names {t!r}, which is no exercise of this chapter")
        for label in labels:
            if label and targets.count(label) != 1:
                problems.append(f"{chapter}: exercise {label!r} has {targets.count(label)} solutions (expected 1)")
    if problems:
        raise BookBuildError("exercises are malformed:\n  " + "\n  ".join(problems))


def strip_solutions(nb) -> int:
    """Remove every solution from an (executed) notebook, in place, and return how many were removed:
    each ``solution`` directive block of a markdown cell, and everything from a ``solution-start`` block
    to its ``solution-end`` block (the code cells between them included, and their outputs). Text of a
    cell outside these blocks is kept; a cell left empty is dropped. Raises ``BookBuildError`` for a
    ``solution-start`` without its ``solution-end`` or the reverse."""
    kept, removed, inside = [], 0, False
    for cell in nb.cells:
        if cell.cell_type == "code":
            if not inside:
                kept.append(cell)
            continue
        lines = cell.source.splitlines()
        keep_lines, pos = [], 0
        for b in directive_blocks(cell.source):
            if not inside:
                keep_lines += lines[pos:b["start"]]
            pos = b["end"] + 1
            if b["name"] == "solution" and not inside:
                removed += 1
            elif b["name"] == "solution-start":
                if inside:
                    raise BookBuildError("a solution-start opens inside another solution")
                inside, removed = True, removed + 1
            elif b["name"] == "solution-end":
                if not inside:
                    raise BookBuildError("a solution-end without its solution-start")
                inside = False
            elif not inside:
                keep_lines += lines[b["start"]:b["end"] + 1]
        if not inside:
            keep_lines += lines[pos:]
        text = "\n".join(keep_lines).strip("\n")
        if text.strip():
            cell.source = text
            kept.append(cell)
    if inside:
        raise BookBuildError("a solution-start without its solution-end")
    nb.cells = kept
    return removed


_SOLUTION_DIV_RE = re.compile(r'<div class="solution[ "]')


def pages_with_solutions(html: str | Path) -> list[str]:
    """The HTML pages under ``html`` that render a solution (sphinx-exercise's ``<div class="solution ...">``),
    as paths relative to ``html``."""
    html = Path(html)
    return sorted(p.relative_to(html).as_posix() for p in html.rglob("*.html")
                  if _SOLUTION_DIV_RE.search(p.read_text(encoding="utf-8", errors="replace")))
