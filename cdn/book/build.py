"""Build the book: Jupytext chapters -> executed notebooks (papermill) -> HTML (Jupyter Book 1).

``build_book(profile)`` (``make book``, ``cdn book --profile P``) does, for every chapter
``notebooks/NN_name.md`` in order:

1. converts it to a notebook with jupytext and checks that it has a cell tagged ``parameters``;
2. executes it with papermill (parameters ``profile``, ``data_dir``, ``seed``) in a kernel that runs
   this very Python (``sys.executable``), registered in a private kernelspec folder inside the build
   folder, so a user's own Jupyter kernels never interfere;
3. writes the executed notebook to ``<build>/chapters/NN_name.ipynb`` only when every cell ran: the
   old copy is deleted first, execution writes to a partial file that is renamed at the end, and a
   failed run is kept as ``NN_name.failed.ipynb`` (never rendered) while a ``ChapterError`` names the
   chapter and the cell;

then builds the HTML with Jupyter Book 1 (execution off: it renders the executed notebooks) into
``<build>/html`` (``<build>`` is ``book/_build`` by default), with MathJax served from the build
itself (the ``sphinx-mathjax-offline`` package), so math renders without internet. Per-chapter wall
times go to ``<build>/timings.json``.

**Editions.** ``edition="full"`` (the default) renders every exercise with its solution, hidden behind
a toggle; ``edition="student"`` renders the same executed notebooks with every solution removed
before Sphinx sees them (``strip_solutions``: the ``solution`` blocks and every cell between a
``solution-start`` and its ``solution-end``), into ``<build>/html-student``, and checks that the HTML
holds no solution. A student build reuses the executed chapters of a full build when they are fresh,
so after ``make book`` it is only the Sphinx step. Before anything runs, ``check_exercises`` checks the
exercises of every chapter (a label, a kind, a difficulty, exactly one solution each).

``build_book(profile, chapters=[...])`` reruns only the named chapters; the others are reused when
their executed copy was made with the same profile, data folder, seed, chapter source and package
source, and are executed again (with a message) otherwise, so no stale chapter is ever rendered.
"""
from __future__ import annotations

import contextlib
import datetime as _dt
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

from ..checkpoint import atomic_write_text
from ..data import REPO_ROOT
from .editions import BookBuildError, check_edition, check_exercises, pages_with_solutions, strip_solutions

NOTEBOOKS_DIR = REPO_ROOT / "notebooks"
BOOK_DIR = REPO_ROOT / "book"
DEFAULT_BUILD_DIR = BOOK_DIR / "_build"
#: files of book/ copied into the Sphinx source folder of every build
BOOK_FILES = ("_config.yml", "_toc.yml", "references.bib", "teaching.md")
KERNEL_NAME = "cdn-book"
PROFILES = ("smoke", "quick", "cpu", "paper")
_CHAPTER_RE = re.compile(r"^\d\d_[A-Za-z0-9_]+$")


class ChapterError(RuntimeError):
    """A chapter raised while executing: ``chapter``, ``cell_index`` (in the executed notebook, or
    None when the kernel itself failed), ``ename``/``evalue`` of the exception, and ``notebook``, the
    path of the kept failed copy."""

    def __init__(self, chapter: str, message: str, cell_index: int | None = None, ename: str | None = None,
                 evalue: str | None = None, notebook: Path | None = None):
        super().__init__(message)
        self.chapter, self.cell_index, self.ename, self.evalue, self.notebook = (
            chapter, cell_index, ename, evalue, notebook)


# ------------------------------------------------------------------------------- chapters --

def chapter_list(notebooks_dir: str | Path | None = None) -> list[str]:
    """The chapters in reading order: the names (``NN_name``) of ``notebooks/NN_name.md``, sorted."""
    nb_dir = Path(notebooks_dir) if notebooks_dir is not None else NOTEBOOKS_DIR
    if not nb_dir.is_dir():
        raise FileNotFoundError(f"no chapter folder {nb_dir}: the book is built from a checkout of the repository")
    names = sorted(p.stem for p in nb_dir.glob("*.md") if _CHAPTER_RE.match(p.stem))
    if not names:
        raise FileNotFoundError(f"no chapters (NN_name.md) in {nb_dir}")
    return names


def resolve_chapters(names, available: list[str] | None = None) -> list[str]:
    """Map chapter names as a user types them to chapter names, in reading order: the full name
    (``02_classification``), the name without its number (``classification``) or the number
    (``02``). Raises ``ValueError`` naming the available chapters for an unknown or ambiguous name."""
    available = available if available is not None else chapter_list()
    if isinstance(names, str):
        names = [names]
    picked = set()
    for name in names:
        key = str(name).removesuffix(".md").removesuffix(".ipynb")
        hits = [c for c in available if key in (c, c.split("_", 1)[1], c[:2])]
        if len(hits) != 1:
            why = "unknown" if not hits else f"ambiguous ({', '.join(hits)})"
            raise ValueError(f"chapter {name!r} is {why}; available chapters: {', '.join(available)}")
        picked.add(hits[0])
    return [c for c in available if c in picked]


def toc_chapters(toc_path: str | Path | None = None) -> list[str]:
    """The chapter names listed in the book's ``_toc.yml`` (entries ``chapters/NN_name``), in order."""
    import yaml

    toc_path = Path(toc_path) if toc_path is not None else BOOK_DIR / "_toc.yml"
    toc = yaml.safe_load(toc_path.read_text())
    out = []

    def walk(node):
        if isinstance(node, dict):
            for key in ("root", "file"):
                if isinstance(node.get(key), str):
                    out.append(node[key])
            for value in node.values():
                if isinstance(value, (list, dict)):
                    walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    walk(toc)
    return [Path(entry).name for entry in out if Path(entry).parent.name == "chapters"]


def _check_toc(chapters: list[str]) -> None:
    listed = toc_chapters()
    missing = [c for c in chapters if c not in listed]
    extra = [c for c in listed if c not in chapters]
    if missing or extra:
        raise BookBuildError(
            f"book/_toc.yml does not match notebooks/: chapters not in the table of contents: {missing or 'none'}; "
            f"table-of-contents entries without a chapter: {extra or 'none'}")


def _sha256_bytes(*chunks: bytes) -> str:
    h = hashlib.sha256()
    for c in chunks:
        h.update(c)
    return h.hexdigest()


def fingerprinted_files() -> list[Path]:
    """The modules of ``cdn`` whose source ``package_fingerprint`` hashes: all of them, in every subpackage,
    but the build machinery (``book/build.py``, ``book/editions.py``, ``cli.py``, ``__main__.py``)."""
    pkg = Path(__file__).resolve().parents[1]
    skip = {"book/build.py", "book/editions.py", "cli.py", "__main__.py"}
    return sorted(f for f in pkg.rglob("*.py") if f.relative_to(pkg).as_posix() not in skip)


def package_fingerprint() -> str:
    """A hash of the source of the ``cdn`` package that chapters run (every module but the build
    machinery itself: book/build.py, book/editions.py, cli.py, __main__.py): an executed chapter made with other package code
    is stale."""
    pkg = Path(__file__).resolve().parents[1]
    files = fingerprinted_files()
    return _sha256_bytes(*(f.relative_to(pkg).as_posix().encode() + f.read_bytes() for f in files))[:16]


def _fingerprint(chapter: str, profile: str, data_dir, seed: int) -> dict:
    src = NOTEBOOKS_DIR / f"{chapter}.md"
    return {"profile": profile, "data_dir": None if data_dir is None else str(Path(data_dir).expanduser().resolve()),
            "seed": int(seed), "source_sha256": _sha256_bytes(src.read_bytes())[:16],
            "package_sha256": package_fingerprint()}


# ------------------------------------------------------------------------------ editions --

def html_dir(build_dir: str | Path | None = None, edition: str = "full") -> Path:
    """Where the HTML of ``edition`` goes: ``<build_dir>/html`` (full) or ``<build_dir>/html-student``."""
    build_dir = Path(build_dir) if build_dir is not None else DEFAULT_BUILD_DIR
    return build_dir / ("html" if check_edition(edition) == "full" else f"html-{edition}")


# --------------------------------------------------------------------------------- kernel --

def install_kernel(kernels_root: str | Path) -> str:
    """Write a kernelspec that runs ``sys.executable -m ipykernel_launcher`` into
    ``kernels_root/kernels/cdn-book/`` and return its name. Used with ``JUPYTER_PATH`` pointing at
    ``kernels_root`` (``_kernel_env``), so execution never depends on kernels installed elsewhere. The file is
    replaced atomically and only when it changes: a chapter executing in parallel may be reading it."""
    try:
        import ipykernel  # noqa: F401
    except ImportError as err:
        raise BookBuildError("ipykernel is not installed for this Python; install the book extra: "
                             "pip install -e '.[book]'") from err
    spec_dir = Path(kernels_root) / "kernels" / KERNEL_NAME
    spec_dir.mkdir(parents=True, exist_ok=True)
    spec = {"argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}",
                     "--IPKernelApp.log_level=ERROR"],
            "display_name": f"Python ({sys.executable})", "language": "python",
            "metadata": {"debugger": False}}
    path, text = spec_dir / "kernel.json", json.dumps(spec, indent=1)
    # chapters executed in parallel call this while another reads the file: never truncate it in place
    if not path.is_file() or path.read_text() != text:
        atomic_write_text(path, text)
    return KERNEL_NAME


@contextlib.contextmanager
def _kernel_env(kernels_root: Path):
    """Put ``kernels_root`` first on ``JUPYTER_PATH`` for the duration of the block, with papermill's
    per-notebook INFO messages silenced (``build_book`` prints its own progress)."""
    import logging

    old = os.environ.get("JUPYTER_PATH")
    os.environ["JUPYTER_PATH"] = str(kernels_root) + (os.pathsep + old if old else "")
    pm_log = logging.getLogger("papermill")
    old_level = pm_log.level
    pm_log.setLevel(max(old_level, logging.WARNING))
    try:
        yield
    finally:
        pm_log.setLevel(old_level)
        if old is None:
            os.environ.pop("JUPYTER_PATH", None)
        else:
            os.environ["JUPYTER_PATH"] = old


# ------------------------------------------------------------------------------ execution --

def convert_chapter(chapter: str, out_path: str | Path, kernel_name: str = KERNEL_NAME) -> Path:
    """Convert ``notebooks/<chapter>.md`` (Jupytext MyST) to a notebook at ``out_path``, with the
    given kernel. Raises ``BookBuildError`` when the chapter has no cell tagged ``parameters``."""
    import jupytext
    import nbformat

    src = NOTEBOOKS_DIR / f"{chapter}.md"
    if not src.is_file():
        raise FileNotFoundError(f"chapter {chapter!r}: {src} does not exist")
    nb = jupytext.read(src)
    if not any("parameters" in c.get("metadata", {}).get("tags", []) for c in nb.cells if c.cell_type == "code"):
        raise BookBuildError(f"chapter {chapter!r} ({src}) has no code cell tagged 'parameters' "
                             "(profile, data_dir, seed) for papermill")
    nb.metadata["kernelspec"] = {"name": kernel_name, "display_name": "Python (cdn book)", "language": "python"}
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, str(out_path))
    return out_path


def _finalise(partial: Path, final: Path, meta: dict) -> None:
    """Tag the parameter cells for removal from the page, record ``meta``, and move the executed
    notebook into place atomically."""
    import nbformat

    nb = nbformat.read(str(partial), as_version=4)
    for cell in nb.cells:
        tags = cell.get("metadata", {}).get("tags", [])
        if ("parameters" in tags or "injected-parameters" in tags) and "remove-cell" not in tags:
            cell.metadata["tags"] = [*tags, "remove-cell"]
    nb.metadata["cdn_book"] = meta
    tmp = final.with_name(f".{final.stem}.final.ipynb")
    nbformat.write(nb, str(tmp))
    os.replace(tmp, final)
    partial.unlink(missing_ok=True)


def execute_chapter(chapter: str, profile: str = "quick", data_dir=None, seed: int = 0,
                    build_dir: str | Path | None = None) -> dict:
    """Execute one chapter with papermill into ``<build_dir>/chapters/<chapter>.ipynb`` and return its
    record (fingerprint, wall time). The previous executed copy is deleted before the run; on error
    the partial notebook is kept as ``<chapter>.failed.ipynb`` and ``ChapterError`` names the chapter
    and the failing cell."""
    import papermill as pm
    from papermill.exceptions import PapermillExecutionError

    if profile not in PROFILES:
        raise ValueError(f"unknown profile {profile!r}; expected one of {', '.join(PROFILES)}")
    build_dir = Path(build_dir) if build_dir is not None else DEFAULT_BUILD_DIR
    out_dir = build_dir / "chapters"
    out_dir.mkdir(parents=True, exist_ok=True)
    final = out_dir / f"{chapter}.ipynb"
    failed = out_dir / f"{chapter}.failed.ipynb"
    partial = out_dir / f".{chapter}.partial.ipynb"
    for stale in (final, failed, partial):
        stale.unlink(missing_ok=True)
    kernels_root = build_dir / "jupyter"
    kernel = install_kernel(kernels_root)
    source = convert_chapter(chapter, build_dir / "converted" / f"{chapter}.ipynb", kernel)
    meta = _fingerprint(chapter, profile, data_dir, seed)
    params = {"profile": profile, "data_dir": meta["data_dir"], "seed": int(seed)}
    t0 = time.perf_counter()
    try:
        with _kernel_env(kernels_root):
            pm.execute_notebook(str(source), str(partial), parameters=params, kernel_name=kernel, language="python",
                                cwd=str(REPO_ROOT), progress_bar=False, log_output=False)
    except PapermillExecutionError as err:
        if partial.exists():
            os.replace(partial, failed)
        src_lines = (err.source or "").strip().splitlines()
        excerpt = "\n".join("    " + line for line in src_lines[:12]) + ("\n    ..." if len(src_lines) > 12 else "")
        raise ChapterError(
            chapter,
            f"chapter {chapter!r} failed in cell {err.cell_index} (execution count {err.exec_count}) with "
            f"{err.ename}: {err.evalue}\n  cell source:\n{excerpt}\n  failed notebook kept at {failed} "
            f"(not rendered)", err.cell_index, err.ename, err.evalue, failed) from err
    except Exception as err:  # the kernel died, could not start, timed out ...
        if partial.exists():
            os.replace(partial, failed)
        raise ChapterError(chapter, f"chapter {chapter!r} could not be executed: {type(err).__name__}: {err}",
                           notebook=failed if failed.exists() else None) from err
    wall = time.perf_counter() - t0
    meta.update(wall_s=round(wall, 2), executed_at=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"))
    _finalise(partial, final, meta)
    return meta


def executed_record(chapter: str, build_dir: str | Path | None = None) -> dict | None:
    """The ``cdn_book`` record of the executed copy of ``chapter`` in the build folder, or None when
    there is no complete executed copy."""
    build_dir = Path(build_dir) if build_dir is not None else DEFAULT_BUILD_DIR
    path = build_dir / "chapters" / f"{chapter}.ipynb"
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())["metadata"].get("cdn_book")
    except (json.JSONDecodeError, KeyError):
        return None


def _is_fresh(record: dict | None, chapter: str, profile: str, data_dir, seed: int) -> tuple[bool, str]:
    if record is None:
        return False, "no executed copy"
    want = _fingerprint(chapter, profile, data_dir, seed)
    for key, value in want.items():
        if record.get(key) != value:
            return False, f"{key} differs ({record.get(key)!r} != {value!r})"
    return True, ""


# ------------------------------------------------------------------------------------ html --

_SPHINX_SCRIPT = """
import sys
from pathlib import Path
from jupyter_book.sphinx import build_sphinx
src, out = Path(sys.argv[1]), Path(sys.argv[2])
code = build_sphinx(src, out, noconfig=True, path_config=str(src / "_config.yml"),
                    confoverrides={"external_toc_path": str(src / "_toc.yml"), "latex_individualpages": False},
                    builder="html",
                    freshenv=True, quiet=True)
sys.exit(code if isinstance(code, int) else 1)
"""


def build_html(build_dir: str | Path | None = None, chapters: list[str] | None = None, edition: str = "full") -> Path:
    """Render the executed chapters of ``<build_dir>/chapters`` with Jupyter Book 1 (execution off)
    into ``html_dir(build_dir, edition)`` (``<build_dir>/html`` for the full edition,
    ``<build_dir>/html-student`` for the student one) and return that folder. The Sphinx source is
    assembled afresh in ``<build_dir>/source`` (``source-student``) from book/ and the executed
    notebooks, with every solution removed for the student edition (``strip_solutions``); the Sphinx
    log is ``<build_dir>/html.log`` (``html-student.log``). Raises ``BookBuildError`` when a chapter has
    no executed copy, Sphinx fails, or a student page still renders a solution."""
    import nbformat

    build_dir = Path(build_dir) if build_dir is not None else DEFAULT_BUILD_DIR
    chapters = chapters or chapter_list()
    html = html_dir(build_dir, edition)
    suffix = "" if edition == "full" else f"-{edition}"
    src = build_dir / f"source{suffix}"
    for d in (src, html, build_dir / ".doctrees"):
        if d.exists():
            shutil.rmtree(d)
    (src / "chapters").mkdir(parents=True)
    for name in BOOK_FILES:
        if not (BOOK_DIR / name).is_file():
            raise BookBuildError(f"{BOOK_DIR / name} is missing")
        shutil.copy2(BOOK_DIR / name, src / name)
    for chapter in chapters:
        nb_path = build_dir / "chapters" / f"{chapter}.ipynb"
        if not nb_path.is_file():
            raise BookBuildError(f"chapter {chapter!r} has no executed notebook {nb_path}: execute it first")
        if edition == "full":
            shutil.copy2(nb_path, src / "chapters" / nb_path.name)
            continue
        nb = nbformat.read(str(nb_path), as_version=4)
        try:
            strip_solutions(nb)
        except BookBuildError as err:
            raise BookBuildError(f"chapter {chapter!r}: {err}") from err
        nbformat.write(nb, str(src / "chapters" / nb_path.name))
    log_path = build_dir / f"html{suffix}.log"
    with open(log_path, "w") as log:
        proc = subprocess.run([sys.executable, "-c", _SPHINX_SCRIPT, str(src), str(html)], stdout=log,
                              stderr=subprocess.STDOUT, cwd=str(build_dir))
    if proc.returncode != 0 or not (html / "index.html").is_file():
        tail = "\n".join(log_path.read_text(errors="replace").splitlines()[-30:])
        raise BookBuildError(f"Jupyter Book (Sphinx) failed with exit code {proc.returncode}; "
                             f"log {log_path}:\n{tail}")
    if edition == "student":
        leaked = pages_with_solutions(html)
        if leaked:
            raise BookBuildError(f"the student edition in {html} still renders solutions on: {', '.join(leaked)}")
    return html


# ----------------------------------------------------------------------------------- book --

def _execute_in_worker(chapter: str, profile: str, data_dir, seed: int, build_dir: str) -> tuple[str, dict]:
    """``execute_chapter`` in a worker process of ``build_book(jobs > 1)``: ``("ok", record)``, or
    ``("error", the ChapterError's fields)`` (re-raised by the parent: the exception itself is not sent
    between processes). One thread per worker, inherited by its kernel, so that the jobs share the cores."""
    os.environ["OMP_NUM_THREADS"] = "1"
    try:
        return "ok", execute_chapter(chapter, profile, data_dir, seed, build_dir)
    except ChapterError as err:
        return "error", {"chapter": err.chapter, "message": str(err), "cell_index": err.cell_index,
                         "ename": err.ename, "evalue": err.evalue, "notebook": err.notebook}


def _execute_all(chapters: list[str], profile: str, data_dir, seed: int, build_dir: Path, jobs: int):
    """Yield ``(chapter, record)`` for ``chapters`` in order, executing ``jobs`` of them at a time (one
    process each); the first ``ChapterError`` is raised in the order of the chapters."""
    if jobs <= 1 or len(chapters) <= 1:
        for chapter in chapters:
            print(f"[book] {chapter}: executing (profile {profile}) ...", flush=True)
            yield chapter, execute_chapter(chapter, profile, data_dir, seed, build_dir)
        return
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    install_kernel(build_dir / "jupyter")  # once, before the workers share it
    with ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = [pool.submit(_execute_in_worker, c, profile, data_dir, seed, str(build_dir)) for c in chapters]
        print(f"[book] executing {len(chapters)} chapters, {jobs} at a time (profile {profile}) ...", flush=True)
        for chapter, future in zip(chapters, futures):
            status, out = future.result()
            if status == "error":
                for f in futures:
                    f.cancel()
                raise ChapterError(**out)
            yield chapter, out


def build_book(profile: str = "quick", chapters=None, data_dir=None, seed: int = 0,
               build_dir: str | Path | None = None, edition: str = "full", jobs: int = 1) -> Path:
    """Execute the book's chapters in ``profile`` and render the HTML of ``edition``; return the HTML
    folder (``book/_build/html`` by default, ``book/_build/html-student`` for the student edition;
    open ``index.html``).

    ``chapters``: None for every chapter, or names (``02_classification``, ``classification`` or
    ``02``) to rerun only those; the other chapters are reused when fresh (same profile, data_dir,
    seed, chapter and package source) and re-executed otherwise. ``data_dir`` and ``seed`` are passed
    to every chapter (papermill parameters). The HTML of an earlier build is deleted first; a chapter
    that raises stops the build with a ``ChapterError`` naming the chapter and the cell, and nothing
    is rendered then. Wall times go to ``<build_dir>/timings.json``.

    ``edition``: ``"full"`` (every solution, hidden behind a toggle) or ``"student"`` (no solution;
    see ``build_html``). With ``chapters=None`` the student edition reuses every fresh executed
    chapter (the solutions run in the full build all the same, so the executed notebooks are shared)
    and executes only the stale or missing ones.

    ``jobs``: how many chapters execute at once, each in its own process with one thread (default 1:
    one at a time, with every thread). Chapters that need the same run wait for each other (the run
    lock of ``cdn.train``); the record and the timings are the same either way.
    """
    check_edition(edition)
    if profile not in PROFILES:
        raise ValueError(f"unknown profile {profile!r}; expected one of {', '.join(PROFILES)}")
    if data_dir is not None and not Path(data_dir).expanduser().exists():
        raise FileNotFoundError(f"data_dir {str(data_dir)!r} does not exist")
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise ValueError(f"seed must be an integer, got {seed!r}")
    build_dir = Path(build_dir).resolve() if build_dir is not None else DEFAULT_BUILD_DIR
    build_dir.mkdir(parents=True, exist_ok=True)
    all_chapters = chapter_list()
    _check_toc(all_chapters)
    check_exercises(all_chapters, NOTEBOOKS_DIR)
    if chapters is None:
        wanted = [] if edition == "student" else all_chapters
    else:
        wanted = resolve_chapters(chapters, all_chapters)
    t_start = time.perf_counter()
    timings = {"profile": profile, "edition": edition, "seed": seed, "data_dir": None if data_dir is None else str(data_dir),
               "started_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"), "chapters": {}}
    timings_path = build_dir / "timings.json"
    timings_path.unlink(missing_ok=True)
    # the HTML of an earlier build goes first: a build that fails leaves no book that looks fresh
    html = html_dir(build_dir, edition)
    for old in (html, build_dir / ("source" if edition == "full" else f"source-{edition}")):
        if old.exists():
            shutil.rmtree(old)

    def write_timings():
        tmp = timings_path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(timings, indent=1))
        os.replace(tmp, timings_path)

    if not isinstance(jobs, int) or isinstance(jobs, bool) or jobs < 1:
        raise ValueError(f"jobs must be an integer >= 1, got {jobs!r}")
    to_execute = []
    for chapter in all_chapters:
        if chapter not in wanted:
            fresh, why = _is_fresh(executed_record(chapter, build_dir), chapter, profile, data_dir, seed)
            if fresh:
                rec = executed_record(chapter, build_dir)
                timings["chapters"][chapter] = {"seconds": rec.get("wall_s"), "reused": True,
                                                "executed_at": rec.get("executed_at")}
                print(f"[book] {chapter}: reused (executed {rec.get('executed_at')})", flush=True)
                continue
            reason = "not asked for, but its executed copy is stale" if chapters is not None else "no fresh executed copy"
            print(f"[book] {chapter}: {reason} ({why}): executing", flush=True)
        to_execute.append(chapter)
    try:
        for chapter, meta in _execute_all(to_execute, profile, data_dir, seed, build_dir, jobs):
            timings["chapters"][chapter] = {"seconds": meta["wall_s"], "reused": False,
                                            "executed_at": meta["executed_at"]}
            write_timings()
            print(f"[book] {chapter}: done in {meta['wall_s']:.1f} s", flush=True)
    except ChapterError as err:
        timings["chapters"][err.chapter] = {"seconds": None, "failed": True}
        timings["total_seconds"] = round(time.perf_counter() - t_start, 2)
        write_timings()
        raise
    timings["chapters"] = {c: timings["chapters"][c] for c in all_chapters if c in timings["chapters"]}
    t_html = time.perf_counter()
    print(f"[book] rendering the {edition} edition's HTML with Jupyter Book ...", flush=True)
    html = build_html(build_dir, all_chapters, edition)
    timings["html_seconds"] = round(time.perf_counter() - t_html, 2)
    timings["total_seconds"] = round(time.perf_counter() - t_start, 2)
    write_timings()
    print(f"[book] HTML in {html} (open {html / 'index.html'}); {timings['total_seconds']:.1f} s in all; "
          f"timings in {timings_path}", flush=True)
    return html


__all__ = ["BookBuildError", "ChapterError", "build_book", "build_html", "chapter_list", "convert_chapter",
           "execute_chapter", "executed_record", "html_dir", "install_kernel", "package_fingerprint", "resolve_chapters",
           "toc_chapters"]
