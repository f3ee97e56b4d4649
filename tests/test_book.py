"""The book pipeline (cdn.book.build): the whole book built in the smoke profile (every chapter executes,
every page and figure exists, headless Chromium renders figures and typeset math offline), and the
pipeline's guarantees on small synthetic chapters (a failing chapter names itself and its cell and
is never rendered; rerunning one chapter reuses only fresh ones).

The same smoke build also checks the teaching material: every exercise and solution of the sources is
on its page (solutions hidden behind a toggle, linked to their exercise, coding solutions with their
outputs), the theorems and proofs render, and the student edition, rendered from the same executed
notebooks (the Sphinx step only), holds every exercise and no solution.

The smoke build takes a few minutes on 2 cores; run these tests alone with ``pytest -m book``.
The Chromium check needs Debian's ``chromium`` (``apt-get install -y chromium``): it is skipped
without it on a developer machine and fails without it under CI (``CI`` set).
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
from html.parser import HTMLParser
from pathlib import Path

import pytest

book = pytest.importorskip("cdn.book.build")
editions = pytest.importorskip("cdn.book.editions")
pytest.importorskip("papermill")
pytest.importorskip("jupytext")
pytest.importorskip("jupyter_book")

pytestmark = [pytest.mark.book, pytest.mark.slow]

ARTIFACTS = book.REPO_ROOT / "artifacts"


# ------------------------------------------------------------------------------ helpers --

class _Tags(HTMLParser):
    """Collects <img src>, <script src> and visible text markers of one HTML page."""

    def __init__(self):
        super().__init__()
        self.imgs: list[str] = []
        self.scripts: list[str] = []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "img" and a.get("src"):
            self.imgs.append(a["src"])
        if tag == "script" and a.get("src"):
            self.scripts.append(a["src"])


def _parse(path: Path) -> _Tags:
    p = _Tags()
    p.feed(path.read_text(encoding="utf-8"))
    return p


class _Blocks(HTMLParser):
    """The teaching blocks of one page: exercises (id, classes), solutions (id, classes, the exercise
    they link to, their text, how many cell outputs they hold), theorems and proofs, and the page's
    text outside the solutions."""

    def __init__(self):
        super().__init__()
        self.exercises: list[dict] = []
        self.solutions: list[dict] = []
        self.theorems = self.proofs = 0
        self.outside: list[str] = []
        self._divs: list[str | None] = []  # per open <div>: "solution" when it opens one

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        classes = (a.get("class") or "").split()
        inside = any(self._divs)
        if tag == "div":
            kind = None
            if "admonition" in classes and "exercise" in classes:
                self.exercises.append({"id": a.get("id"), "classes": classes})
            elif "admonition" in classes and "solution" in classes and not inside:
                self.solutions.append({"id": a.get("id"), "classes": classes, "links": [], "text": [], "outputs": 0})
                kind = "solution"
            elif "proof" in classes and "theorem" in classes:
                self.theorems += 1
            elif classes == ["proof", "admonition"]:
                self.proofs += 1
            if inside and "cell_output" in classes:
                self.solutions[-1]["outputs"] += 1
            self._divs.append(kind)
        elif tag == "a" and inside and a.get("href", "").startswith("#"):
            self.solutions[-1]["links"].append(a["href"][1:])

    def handle_endtag(self, tag):
        if tag == "div" and self._divs:
            self._divs.pop()

    def handle_data(self, data):
        (self.solutions[-1]["text"] if any(self._divs) else self.outside).append(data)


def _blocks(path: Path) -> _Blocks:
    return _blocks_of(path.read_text(encoding="utf-8"))


def _blocks_of(html_text: str) -> _Blocks:
    p = _Blocks()
    p.feed(html_text)
    return p


def _sentences(text: str, min_len: int = 40) -> set[str]:
    """The sentences (split at '. ' and line ends) of at least ``min_len`` characters, whitespace
    normalised: a fingerprint of a block of text."""
    flat = " ".join(text.split())
    return {s.strip() for s in flat.replace(". ", ".\n").splitlines() if len(s.strip()) >= min_len}


def _chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        found = shutil.which(name)
        if found:
            return found
    return None


def _chromium_run(page: Path, tmp: Path, *action: str) -> subprocess.CompletedProcess:
    exe = _chromium()
    if exe is None:
        if os.environ.get("CI"):
            pytest.fail("headless Chromium is required under CI: apt-get update && apt-get install -y chromium")
        pytest.skip("chromium not installed (apt-get update && apt-get install -y chromium)")
    cmd = [exe, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           f"--user-data-dir={tmp / 'chromium-profile'}", "--window-size=1280,2200",
           "--virtual-time-budget=20000", "--hide-scrollbars", *action, page.resolve().as_uri()]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=180)


# -------------------------------------------------------------------------- smoke build --

@pytest.fixture(scope="module")
def smoke_book(tmp_path_factory):
    """The whole book built in the smoke profile, with runs trained from scratch in a temp folder, two
    chapters at a time (``jobs=2``: the chapters share runs through the run lock)."""
    build = tmp_path_factory.mktemp("book-build")
    runs = tmp_path_factory.mktemp("book-runs")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CDN_RUNS", str(runs))  # inherited by the chapters' kernels
        html = book.build_book("smoke", build_dir=build, jobs=2)
    return build, html


def test_every_chapter_executed_without_error(smoke_book):
    build, _ = smoke_book
    chapters = book.chapter_list()
    assert chapters[0] == "00_front_page" and len(chapters) >= 6
    timings = json.loads((build / "timings.json").read_text())
    assert timings["profile"] == "smoke"
    for chapter in chapters:
        path = build / "chapters" / f"{chapter}.ipynb"
        assert path.is_file(), f"{chapter} has no executed notebook"
        assert not (build / "chapters" / f"{chapter}.failed.ipynb").exists()
        nb = json.loads(path.read_text())
        meta = nb["metadata"]["cdn_book"]
        assert meta["profile"] == "smoke" and meta["seed"] == 0
        assert nb["metadata"]["papermill"]["exception"] in (None, False)
        code = [c for c in nb["cells"] if c["cell_type"] == "code"]
        assert all(c["execution_count"] is not None for c in code), f"{chapter}: a cell did not run"
        errors = [o for c in code for o in c.get("outputs", []) if o["output_type"] == "error"]
        assert not errors, f"{chapter}: {errors[0]['ename']}: {errors[0]['evalue']}"
        # the first output of every chapter is the provenance box, naming the profile
        first = next(o for c in code for o in c.get("outputs", []) if o["output_type"] != "stream")
        text = "".join(first["data"]["text/markdown"])
        assert "Provenance" in text and "smoke" in text and "commit" in text and "device" in text
        assert timings["chapters"][chapter]["seconds"] > 0
    assert timings["html_seconds"] > 0 and timings["total_seconds"] > 0


def test_every_page_and_figure_exists(smoke_book):
    build, html = smoke_book
    assert (html / "index.html").is_file()
    assert (html / "_static" / "mathjax" / "tex-chtml.js").is_file(), "MathJax is not served locally"
    assert (html / "_static" / "mathjax" / "output" / "chtml" / "fonts" / "woff-v2").is_dir(), "MathJax fonts missing"
    pages_with_math = 0
    for chapter in book.chapter_list():
        page = html / "chapters" / f"{chapter}.html"
        assert page.is_file(), f"no HTML page for {chapter}"
        tags = _parse(page)
        figures = [src for src in tags.imgs if "_images/" in src]
        assert figures, f"{chapter}: no figure on the page"
        for src in figures:
            assert (page.parent / src.split("?")[0]).resolve().is_file(), f"{chapter}: missing figure file {src}"
        # offline: no script is fetched from the network, and MathJax comes from _static
        assert not [s for s in tags.scripts if s.startswith(("http:", "https:", "//"))], tags.scripts
        text = page.read_text(encoding="utf-8")
        if 'class="math' in text:  # Sphinx loads MathJax only on pages with math
            assert any(s.endswith("_static/mathjax/tex-chtml.js") for s in tags.scripts), tags.scripts
            pages_with_math += 1
        assert "Provenance of this page" in text, f"{chapter}: no provenance box"
        assert "Traceback" not in text, f"{chapter}: a traceback was rendered"
    assert pages_with_math >= 4


def test_exercises_and_solutions_of_every_chapter_are_on_its_page(smoke_book):
    """Per chapter, the exercises and solutions of the source are on the page, in order: each exercise
    with its kind, each solution hidden behind a toggle (class dropdown) and linked to its exercise,
    and each coding solution holding the outputs of its executed code cells."""
    _, html = smoke_book
    table = {}
    for chapter in book.chapter_list():
        counts = editions.exercise_counts(chapter)
        page = _blocks(html / "chapters" / f"{chapter}.html")
        assert [e["id"] for e in page.exercises] == [e["label"] for e in counts["exercises"]], chapter
        for shown, src in zip(page.exercises, counts["exercises"]):
            assert src["kind"] in shown["classes"], f"{chapter}: {src['label']} lost its kind"
        assert [s["id"] for s in page.solutions] == [s["label"] for s in counts["solutions"]], chapter
        for shown, src in zip(page.solutions, counts["solutions"]):
            assert "dropdown" in shown["classes"], f"{chapter}: {src['label']} is not hidden behind a toggle"
            assert src["exercise"] in shown["links"], f"{chapter}: {src['label']} does not link to {src['exercise']}"
            assert "".join(shown["text"]).strip(), f"{chapter}: {src['label']} is empty"
            if src["gated"]:
                assert shown["outputs"] >= 1, f"{chapter}: the code of {src['label']} left no output in it"
        table[chapter] = {"pen-and-paper": counts["pen-and-paper"], "coding": counts["coding"],
                          "solutions in the source": len(counts["solutions"]), "exercises on the page": len(page.exercises),
                          "solutions on the page": len(page.solutions)}
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / "book-exercises.json").write_text(json.dumps(table, indent=1))
    assert sum(r["exercises on the page"] for r in table.values()) >= 24


def test_theorems_and_proofs_render(smoke_book):
    _, html = smoke_book
    total = 0
    for chapter in book.chapter_list():
        names = [b["name"] for b in editions.directive_blocks((book.NOTEBOOKS_DIR / f"{chapter}.md").read_text())]
        page = _blocks(html / "chapters" / f"{chapter}.html")
        assert page.theorems == names.count("prf:theorem"), chapter
        assert page.proofs == names.count("prf:proof"), chapter
        total += page.theorems
    assert total >= 4


@pytest.fixture(scope="module")
def student_book(smoke_book):
    """The student edition rendered from the smoke build's executed notebooks (the Sphinx step only);
    its build time and size go to artifacts/book-student-edition.json."""
    build, _ = smoke_book
    t0 = time.perf_counter()
    html = book.build_html(build, edition="student")
    seconds = time.perf_counter() - t0
    size = sum(f.stat().st_size for f in html.rglob("*") if f.is_file())
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / "book-student-edition.json").write_text(json.dumps(
        {"seconds": round(seconds, 1), "bytes": size, "files": sum(1 for f in html.rglob("*") if f.is_file())}, indent=1))
    return html


def test_student_edition_has_every_exercise_and_no_solution(smoke_book, student_book):
    _, html = smoke_book
    assert student_book == html.parent / "html-student" and (student_book / "index.html").is_file()
    assert editions.pages_with_solutions(html), "the full edition should have solutions"
    assert editions.pages_with_solutions(student_book) == []
    secrets_checked = 0
    for chapter in book.chapter_list():
        full = _blocks(html / "chapters" / f"{chapter}.html")
        student_page = student_book / "chapters" / f"{chapter}.html"
        student = _blocks(student_page)
        assert [e["id"] for e in student.exercises] == [e["id"] for e in full.exercises], chapter
        assert not student.solutions, chapter
        # no sentence of a solution that is not said elsewhere on the page reaches the student page
        said = _sentences(" ".join(full.outside))
        secret = set().union(*(_sentences(" ".join(s["text"])) for s in full.solutions)) - said
        text = " ".join(" ".join(student.outside).split())
        leaked = sorted(t for t in secret if t in text)
        assert not leaked, f"{chapter}: solution text in the student edition: {leaked[:3]}"
        assert "Provenance of this page" in student_page.read_text(encoding="utf-8")
        secrets_checked += len(secret)
    assert secrets_checked > 50
    # nor in any other file of the edition: the notebooks offered for download (_sources), the search index
    for f in student_book.rglob("*"):
        if f.is_file() and f.suffix in (".html", ".ipynb", ".js", ".txt", ".md"):
            text = f.read_text(encoding="utf-8", errors="replace")
            assert "{solution" not in text and 'class="solution' not in text, f.relative_to(student_book)
    # the teachers' page and its links to the exercises are in the student edition too
    teaching = (student_book / "teaching.html").read_text(encoding="utf-8")
    assert teaching.count('href="chapters/') >= 30


def test_chromium_renders_figures_and_math_offline(smoke_book, student_book, tmp_path):
    _, html = smoke_book
    ARTIFACTS.mkdir(exist_ok=True)
    # index.html is what a reader opens: it redirects to the front page; the Tweedie chapter has
    # theorems, proofs, exercises and solutions; the student edition the same page without solutions
    pages = {"front": html / "index.html",
             "denoising": html / "chapters" / "03_denoising.html",
             "tweedie": html / "chapters" / "07_tweedie.html",
             "tweedie-student": student_book / "chapters" / "07_tweedie.html"}
    for name, page in pages.items():
        dom = _chromium_run(page, tmp_path, "--dump-dom")
        assert dom.returncode == 0, dom.stderr[-2000:]
        text = dom.stdout
        # MathJax ran (from the local copy) and typeset the page's math without errors
        assert text.count("<mjx-container") >= 3, f"{name}: math was not typeset by MathJax"
        assert "<mjx-merror" not in text and "Math input error" not in text
        # no error box of docutils/Sphinx (an unknown directive or role, a broken reference)
        assert 'class="system-message' not in text and 'class="problematic' not in text, name
        if name.startswith("tweedie"):
            blocks = _blocks_of(text)
            n_exercises = len(editions.exercise_counts("07_tweedie")["exercises"])  # as many as the source has
            assert blocks.theorems == 2 and blocks.proofs == 2, f"{name}: theorems not rendered"
            assert len(blocks.exercises) == n_exercises >= 3, f"{name}: exercises not rendered"
            # the theorem statements hold typeset math
            start = text.index('id="thm-tweedie"')
            assert "<mjx-container" in text[start:start + 20_000], f"{name}: no typeset math in the theorem"
            solutions = re.findall(r'<div class="([^"]*\bsolution\b[^"]*)"', text)
            if name == "tweedie":  # every solution is folded by sphinx-togglebutton when the page loads
                assert len(solutions) == n_exercises and all("toggle-hidden" in c for c in solutions), solutions
            else:
                assert not solutions, solutions
        # the figures and the provenance box are in the rendered page
        assert text.count("_images/") >= 1, f"{name}: no figure in the rendered DOM"
        assert "Provenance of this page" in text
        shot = ARTIFACTS / f"book-{name}.png"
        shot.unlink(missing_ok=True)
        res = _chromium_run(page, tmp_path, f"--screenshot={shot}")
        assert res.returncode == 0 and shot.is_file() and shot.stat().st_size > 20_000, res.stderr[-2000:]
        from PIL import Image

        with Image.open(shot) as im:  # a page, not a blank canvas
            colours = im.convert("RGB").resize((320, 550)).getcolors(maxcolors=1_000_000)
        assert colours is not None and len(colours) > 200, f"{name}: the screenshot looks blank"


_OPEN_SOLUTION = """
<script>
window.addEventListener("load", () => {
  const solution = document.getElementById("%(solution)s");
  solution.querySelector(".admonition-title").click();   // the toggle of sphinx-togglebutton
  // a headless screenshot shows the top of the page: move the exercise and its solution there
  const article = document.querySelector("article");
  article.prepend(solution);
  article.prepend(document.getElementById("%(exercise)s"));
});
</script>
"""


def test_chromium_opens_a_solution_with_its_toggle(smoke_book, tmp_path):
    """A click on a solution's title unfolds it (and only it); the screenshot of the exercise with its
    solution open is artifacts/book-solution-open.png."""
    _, html = smoke_book
    exercise, solution = "ex-tweedie-lambda0", "sol-tweedie-lambda0"
    page = html / "chapters" / "07_tweedie.html"
    opened = page.with_name("_solution_open.html")  # beside the page, so that its relative links work
    text = page.read_text(encoding="utf-8")
    opened.write_text(text.replace("</body>", _OPEN_SOLUTION % {"solution": solution, "exercise": exercise}
                                   + "</body>"), encoding="utf-8")
    dom = _chromium_run(opened, tmp_path, "--dump-dom")
    assert dom.returncode == 0, dom.stderr[-2000:]
    by_id = {i: c for c, i in re.findall(r'<div class="([^"]*\bsolution\b[^"]*)" id="([^"]+)"', dom.stdout)}
    assert solution in by_id and "toggle-hidden" not in by_id[solution], by_id
    assert all("toggle-hidden" in c for i, c in by_id.items() if i != solution), by_id
    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / "book-solution-open.png"
    shot.unlink(missing_ok=True)
    res = _chromium_run(opened, tmp_path, f"--screenshot={shot}")
    assert res.returncode == 0 and shot.is_file() and shot.stat().st_size > 20_000, res.stderr[-2000:]
    opened.unlink()


# ------------------------------------------------------------- pipeline on tiny chapters --

_HEADER = """---
jupytext:
  text_representation:
    extension: .md
    format_name: myst
    format_version: 0.13
kernelspec:
  display_name: Python 3
  language: python
  name: python3
---

# {title}

```{{code-cell}} ipython3
:tags: [parameters]

profile = "quick"
data_dir = None
seed = 0
```
"""


def _chapter(title: str, body: str) -> str:
    return _HEADER.format(title=title) + "\n" + body


@pytest.fixture
def tiny_book(tmp_path, monkeypatch):
    """A book of two trivial chapters in a temp repository layout (notebooks/ and book/)."""
    nb_dir, book_dir = tmp_path / "notebooks", tmp_path / "book"
    nb_dir.mkdir()
    book_dir.mkdir()
    for name in book.BOOK_FILES:
        shutil.copy2(book.BOOK_DIR / name, book_dir / name)
    (book_dir / "_toc.yml").write_text("format: jb-book\nroot: chapters/00_alpha\nchapters:\n  - file: chapters/01_beta\n")
    (nb_dir / "00_alpha.md").write_text(_chapter("Alpha", "```{code-cell} ipython3\nprint('alpha', profile, seed)\n```\n"))
    (nb_dir / "01_beta.md").write_text(_chapter("Beta", "```{code-cell} ipython3\nprint('beta', profile)\n```\n"))
    monkeypatch.setattr(book, "NOTEBOOKS_DIR", nb_dir)
    monkeypatch.setattr(book, "BOOK_DIR", book_dir)
    return tmp_path


def test_chapter_names_resolve():
    chapters = ["00_front_page", "01_training", "02_classification"]
    assert book.resolve_chapters(["classification", "00"], chapters) == ["00_front_page", "02_classification"]
    assert book.resolve_chapters("01_training.md", chapters) == ["01_training"]
    with pytest.raises(ValueError, match="unknown.*available chapters"):
        book.resolve_chapters(["nope"], chapters)
    assert book.chapter_list() == book.toc_chapters(), "book/_toc.yml and notebooks/ disagree"


def test_failing_chapter_names_chapter_and_cell_and_is_not_rendered(tiny_book):
    build = tiny_book / "build"
    (tiny_book / "notebooks" / "01_beta.md").write_text(_chapter(
        "Beta", "```{code-cell} ipython3\nx = 1\n```\n\n```{code-cell} ipython3\nraise RuntimeError('boom in beta')\n```\n"))
    # a stale executed copy from an earlier build must disappear, not be rendered
    (build / "chapters").mkdir(parents=True)
    (build / "chapters" / "01_beta.ipynb").write_text("{}")
    (build / "html").mkdir()
    (build / "html" / "index.html").write_text("an earlier book")
    with pytest.raises(book.ChapterError) as info:
        book.build_book("smoke", build_dir=build)
    err = info.value
    assert err.chapter == "01_beta" and err.ename == "RuntimeError" and err.cell_index is not None
    msg = str(err)
    assert "01_beta" in msg and "boom in beta" in msg and f"cell {err.cell_index}" in msg
    assert "raise RuntimeError" in msg  # the failing cell's source
    assert not (build / "chapters" / "01_beta.ipynb").exists()
    assert (build / "chapters" / "01_beta.failed.ipynb").is_file()
    assert not (build / "html").exists(), "nothing may be rendered after a failing chapter"
    timings = json.loads((build / "timings.json").read_text())
    assert timings["chapters"]["01_beta"]["failed"] is True


def test_rerun_one_chapter_reuses_only_fresh_chapters(tiny_book, capsys):
    build = tiny_book / "build"
    html = book.build_book("smoke", build_dir=build, seed=3)
    assert (html / "chapters" / "00_alpha.html").is_file() and (html / "chapters" / "01_beta.html").is_file()
    first = book.executed_record("00_alpha", build)
    assert first["profile"] == "smoke" and first["seed"] == 3
    alpha = json.loads((build / "chapters" / "00_alpha.ipynb").read_text())
    printed = "".join("".join(o.get("text", "")) for c in alpha["cells"] for o in c.get("outputs", []))
    assert "alpha smoke 3" in printed  # papermill passed the parameters
    capsys.readouterr()

    book.build_book("smoke", chapters=["beta"], build_dir=build, seed=3)
    out = capsys.readouterr().out
    assert "00_alpha: reused" in out and "01_beta: executing" in out
    assert book.executed_record("00_alpha", build)["executed_at"] == first["executed_at"]
    timings = json.loads((build / "timings.json").read_text())
    assert timings["chapters"]["00_alpha"]["reused"] and not timings["chapters"]["01_beta"]["reused"]

    # another profile makes the other chapter stale: it is executed again, not rendered as it was
    book.build_book("quick", chapters=["01_beta"], build_dir=build, seed=3)
    out = capsys.readouterr().out
    assert "00_alpha: not asked for, but its executed copy is stale (profile differs" in out
    assert book.executed_record("00_alpha", build)["profile"] == "quick"


def test_chapter_without_parameters_cell_is_refused(tiny_book):
    (tiny_book / "notebooks" / "01_beta.md").write_text(
        "---\njupytext:\n  text_representation:\n    format_name: myst\n---\n\n# Beta\n\n"
        "```{code-cell} ipython3\nprint(1)\n```\n")
    with pytest.raises(book.BookBuildError, match="no code cell tagged 'parameters'"):
        book.convert_chapter("01_beta", tiny_book / "x.ipynb")


def test_bad_arguments_are_refused(tmp_path):
    with pytest.raises(ValueError, match="unknown profile"):
        book.build_book("fast", build_dir=tmp_path)
    with pytest.raises(FileNotFoundError, match="data_dir"):
        book.build_book("smoke", data_dir=tmp_path / "missing", build_dir=tmp_path)
    with pytest.raises(ValueError, match="chapter 'nope' is unknown"):
        book.build_book("smoke", chapters=["nope"], build_dir=tmp_path)


def test_a_failing_chapter_in_a_worker_comes_back_as_the_same_error(monkeypatch, tmp_path):
    """build_book(jobs > 1) runs chapters in worker processes; a ChapterError there is sent back as its
    fields and raised again by the parent with the same chapter, cell and message."""
    def failing(chapter, *args):
        raise book.ChapterError(chapter, f"chapter {chapter!r} failed in cell 3", 3, "RuntimeError", "boom",
                                tmp_path / "x.failed.ipynb")

    monkeypatch.setattr(book, "execute_chapter", failing)
    # the worker sets OMP_NUM_THREADS=1 for its kernels; this test runs it in the test process, so restore it
    monkeypatch.setenv("OMP_NUM_THREADS", os.environ.get("OMP_NUM_THREADS", "2"))
    status, out = book._execute_in_worker("01_beta", "smoke", None, 0, str(tmp_path))
    assert status == "error"
    err = book.ChapterError(**out)
    assert (err.chapter, err.cell_index, err.ename, err.evalue) == ("01_beta", 3, "RuntimeError", "boom")
    assert str(err) == "chapter '01_beta' failed in cell 3" and err.notebook == tmp_path / "x.failed.ipynb"
    with pytest.raises(ValueError, match="jobs"):
        book.build_book("smoke", build_dir=tmp_path, jobs=0)


def test_the_fingerprint_covers_every_module_chapters_run_and_not_the_build():
    names = {f.relative_to(book.REPO_ROOT / "cdn").as_posix() for f in book.fingerprinted_files()}
    assert {"joint.py", "train.py", "nets/resnet.py", "experiments/attacks.py", "book/chapter.py"} <= names
    assert not names & {"book/build.py", "book/editions.py", "cli.py", "__main__.py"}
    assert len(book.package_fingerprint()) == 16


def test_the_kernelspec_is_written_once_and_never_truncated_in_place(tmp_path, monkeypatch):
    """Chapters executed two at a time each call install_kernel while the other's kernel reads kernel.json (a
    JSONDecodeError when it was rewritten in place): an unchanged spec is not written again, a changed one is
    replaced atomically."""
    from cdn.book import build

    name = build.install_kernel(tmp_path)
    path = tmp_path / "kernels" / name / "kernel.json"
    first = json.loads(path.read_text())
    writes = []
    monkeypatch.setattr(build, "atomic_write_text", lambda p, text: writes.append(p))
    build.install_kernel(tmp_path)
    assert writes == []
    path.write_text("{}")
    monkeypatch.undo()
    build.install_kernel(tmp_path)
    assert json.loads(path.read_text()) == first
