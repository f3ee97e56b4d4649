"""The book's exercises and editions without building anything (seconds): the edition names, the
solution stripper of the student edition on synthetic notebooks, the checks of the exercises in the
real chapters, the teachers' page against the chapters, and the sizes of the coding exercises.

The built HTML (counts of exercises and solutions per page, the student edition, the rendering in
Chromium) is tested in tests/test_book.py on the smoke build.
"""
from __future__ import annotations

import re

import pytest

book = pytest.importorskip("cdn.book.build")
editions = pytest.importorskip("cdn.book.editions")
nbformat = pytest.importorskip("nbformat")

from cdn.profiles import EXPERIMENT_SIZES
from cdn.book import exercises
from cdn.cli import main

CHAPTERS_WITHOUT_EXERCISES = ("00_front_page", "20_results")


def _nb(*cells):
    """A notebook from ("md" | "code", source) pairs."""
    nb = nbformat.v4.new_notebook()
    for kind, src in cells:
        nb.cells.append(nbformat.v4.new_markdown_cell(src) if kind == "md" else nbformat.v4.new_code_cell(src))
    return nb


# ------------------------------------------------------------------------------ editions --

def test_unknown_edition_is_refused_naming_the_choices(tmp_path, capsys):
    with pytest.raises(ValueError, match=r"unknown edition 'teacher'; expected one of full, student"):
        editions.check_edition("teacher")
    with pytest.raises(ValueError, match="unknown edition"):
        book.build_book("smoke", build_dir=tmp_path, edition="teacher")
    assert not (tmp_path / "chapters").exists(), "nothing may run before the edition is checked"
    assert main(["book", "--profile", "smoke", "--edition", "teacher", "--build-dir", str(tmp_path)]) == 2
    assert "expected one of full, student" in capsys.readouterr().err
    assert book.html_dir(tmp_path, "full") == tmp_path / "html"
    assert book.html_dir(tmp_path, "student") == tmp_path / "html-student"


def test_cli_passes_the_edition(monkeypatch):
    seen = {}

    def fake_build_book(profile, chapters, data_dir, seed, build_dir=None, edition="full", jobs=1):
        seen.update(profile=profile, edition=edition, jobs=jobs)
        return "somewhere"

    monkeypatch.setattr(book, "build_book", fake_build_book)
    assert main(["book", "--profile", "smoke", "--edition", "student"]) == 0
    assert seen == {"profile": "smoke", "edition": "student", "jobs": 1}
    assert main(["book", "--profile", "smoke", "--jobs", "2"]) == 0
    assert seen["edition"] == "full" and seen["jobs"] == 2


# ------------------------------------------------------------------------ the stripper --

EXERCISE = """```{exercise} Title
:label: ex-a
:class: pen-and-paper

Show that $1 + 1 = 2$.
```"""
SOLUTION = """```{solution} ex-a
:label: sol-a
:class: dropdown

Count: SECRET-PEN.

````{math}
x = 1
````
```"""


def test_strip_solutions_removes_solution_blocks_and_keeps_the_rest():
    nb = _nb(("md", f"Intro.\n\n{EXERCISE}\n\n{SOLUTION}\n\nAfter the solution."),
             ("code", "print('chapter code')"))
    assert editions.strip_solutions(nb) == 1
    text = nb.cells[0].source
    assert "SECRET-PEN" not in text and "{solution}" not in text
    assert "Intro." in text and "Show that" in text and "After the solution." in text
    assert nb.cells[1].source == "print('chapter code')"


def test_strip_solutions_removes_gated_solutions_with_their_code_cells():
    nb = _nb(("md", "Before.\n\n```{exercise} Code\n:label: ex-b\n:class: coding\n\nCompute.\n```\n\n"
                    "```{solution-start} ex-b\n:class: dropdown\n```\n\nSECRET-PROSE before the code."),
             ("code", "print('SECRET-CODE')"),
             ("md", "SECRET-MIDDLE"),
             ("code", "x = 2"),
             ("md", "SECRET-AFTER\n\n```{solution-end}\n```\n\n## Next section"),
             ("code", "print('kept')"))
    nb.cells[1].outputs = [nbformat.v4.new_output("stream", text="SECRET-OUTPUT")]
    assert editions.strip_solutions(nb) == 1
    everything = nbformat.writes(nb)
    for secret in ("SECRET-PROSE", "SECRET-CODE", "SECRET-MIDDLE", "SECRET-AFTER", "SECRET-OUTPUT", "x = 2",
                   "solution-start", "solution-end"):
        assert secret not in everything, secret
    assert [c.cell_type for c in nb.cells] == ["markdown", "markdown", "code"]
    assert "Compute." in nb.cells[0].source and nb.cells[1].source == "## Next section"


def test_strip_solutions_refuses_unmatched_gates():
    with pytest.raises(book.BookBuildError, match="without its solution-end"):
        editions.strip_solutions(_nb(("md", "```{solution-start} ex-a\n```"), ("code", "1")))
    with pytest.raises(book.BookBuildError, match="without its solution-start"):
        editions.strip_solutions(_nb(("md", "```{solution-end}\n```")))


def test_directive_blocks_skip_nested_fences_and_refuse_unclosed_ones():
    text = "````{solution} ex-a\n:class: dropdown\n\n```{math}\nx\n```\n````\n\n:::{exercise}\n:label: ex-c\nBody\n:::\n"
    blocks = editions.directive_blocks(text)
    assert [(b["name"], b["arg"]) for b in blocks] == [("solution", "ex-a"), ("exercise", "")]
    assert blocks[0]["options"] == {"class": "dropdown"} and blocks[1]["options"] == {"label": "ex-c"}
    assert (blocks[0]["start"], blocks[0]["end"]) == (0, 6)
    with pytest.raises(book.BookBuildError, match="never closed"):
        editions.directive_blocks("```{exercise}\nno end\n")


# ------------------------------------------------------------------ the real chapters --

def test_every_chapter_has_two_to_four_exercises_each_with_one_solution():
    chapters = book.chapter_list()
    editions.check_exercises(chapters)  # labels, kinds, one solution each
    total = {"pen-and-paper": 0, "coding": 0}
    for chapter in chapters:
        counts = editions.exercise_counts(chapter)
        n = len(counts["exercises"])
        if chapter in CHAPTERS_WITHOUT_EXERCISES:
            assert n == 0, chapter
            continue
        assert 2 <= n <= 4, f"{chapter}: {n} exercises"
        assert len(counts["solutions"]) == n
        for kind in total:
            total[kind] += counts[kind]
        # a coding exercise's solution holds code cells, so it is a gated one, and vice versa
        kinds = {e["label"]: e["kind"] for e in counts["exercises"]}
        for s in counts["solutions"]:
            assert s["gated"] == (kinds[s["exercise"]] == "coding"), f"{chapter}: solution of {s['exercise']}"
            assert s["label"] == "sol-" + s["exercise"].removeprefix("ex-"), f"{chapter}: label of {s['label']}"
    assert total["pen-and-paper"] >= 12 and total["coding"] >= 10, total


THEORY_CHAPTERS = ("07_tweedie", "08_jacobian", "09_generative_discriminative")


def test_every_exercise_has_a_difficulty_and_every_theory_chapter_a_challenge():
    levels = {c: editions.exercise_counts(c) for c in book.chapter_list()}
    for chapter, counts in levels.items():
        assert all(e["difficulty"] in editions.DIFFICULTIES for e in counts["exercises"]), chapter
    for chapter in THEORY_CHAPTERS:
        assert levels[chapter]["challenge"] >= 1, f"{chapter} has no challenge exercise"
    assert sum(c["warm-up"] for c in levels.values()) >= 10


def test_every_teaching_chapter_opens_with_its_learning_objectives():
    for chapter in book.chapter_list():
        if chapter in CHAPTERS_WITHOUT_EXERCISES:
            continue
        text = (book.NOTEBOOKS_DIR / f"{chapter}.md").read_text()
        head = text.split("```{code-cell}", 1)[0]
        assert "**Learning objectives.**" in head, f"{chapter}: no learning objectives before its first cell"
        assert head.count("\n- ") >= 2, f"{chapter}: fewer than two objectives"


def test_an_exercise_without_a_difficulty_is_refused(tmp_path):
    (tmp_path / "01_x.md").write_text("```{exercise} No level\n:label: ex-x\n:class: coding\n\nBody\n```\n\n"
                                      "```{solution} ex-x\n:class: dropdown\n\nA\n```\n")
    with pytest.raises(book.BookBuildError, match=r"ex-x needs its difficulty .*\(warm-up\), \(core\), \(challenge\)"):
        editions.check_exercises(["01_x"], tmp_path)
    (tmp_path / "01_x.md").write_text((tmp_path / "01_x.md").read_text().replace("No level", "No level (core)"))
    editions.check_exercises(["01_x"], tmp_path)
    assert editions.exercise_counts("01_x", tmp_path)["core"] == 1


def test_malformed_exercises_are_refused(tmp_path):
    (tmp_path / "01_x.md").write_text(
        "```{exercise} No kind\n:label: ex-x\n\nBody\n```\n\n```{exercise} Two kinds\n:label: ex-y\n"
        ":class: coding pen-and-paper\n\nBody\n```\n\n```{solution} ex-y\n:class: dropdown\n\nA\n```\n\n"
        "```{solution} ex-y\n\nB\n```\n\n```{solution} ex-z\n\nC\n```\n")
    with pytest.raises(book.BookBuildError) as info:
        editions.check_exercises(["01_x"], tmp_path)
    msg = str(info.value)
    assert "exercise ex-x needs exactly one :class:" in msg and "exercise ex-y needs exactly one :class:" in msg
    assert "'ex-x' has 0 solutions" in msg and "'ex-y' has 2 solutions" in msg
    assert "names 'ex-z', which is no exercise" in msg


def test_teachers_page_assigns_every_exercise_and_links_existing_chapters():
    page = (book.BOOK_DIR / "teaching.md").read_text()
    assert "teaching" in (book.BOOK_DIR / "_toc.yml").read_text() and "teaching.md" in book.BOOK_FILES
    labels = {e["label"] for c in book.chapter_list() for e in editions.exercise_counts(c)["exercises"]}
    referenced = set(re.findall(r"\{ref\}`(?:[^`<]*<)?(ex-[a-z0-9-]+)>?`", page))
    assert referenced == labels, (f"exercises missing from the course plan: {sorted(labels - referenced)}; "
                                  f"unknown labels on the page: {sorted(referenced - labels)}")
    docs = set(re.findall(r"\{doc\}`chapters/([0-9a-z_]+)`", page))
    assert docs and docs <= set(book.chapter_list()), docs - set(book.chapter_list())
    assert "make book EDITION=student" in page and "--edition student" in page and "papermill " in page


# -------------------------------------------------------------------- exercise sizes --

def test_exercise_configs_apply_the_sizes_then_the_changes():
    cfg = exercises.config("quick", "gradresnet", lam=0.1, seed=2)
    assert (cfg.width, cfg.steps, cfg.batch_size, cfg.lam, cfg.seed) == (8, 200, 64, 0.1, 2)
    assert exercises.config("smoke") == exercises.get_config("smoke")
    assert exercises.config("quick", steps=50).steps == 50
    with pytest.raises(ValueError, match="unknown profile"):
        exercises.config("laptop")
    # every profile trains its exercises at sizes of the table (a profile without its own: quick's)
    for profile in exercises.PROFILES:
        p = exercises.exercise_profile(profile)
        assert p == profile if "exercises" in EXPERIMENT_SIZES[profile] else p == "quick"
        assert exercises.config(profile).profile == p
    with pytest.raises(ValueError, match="unknown configuration keys"):
        exercises.run("smoke", lamb=0.1)
