"""The book on top of the package: building it (``build``: Jupytext chapters executed by papermill, rendered
by Jupyter Book 1, in a full and a student edition), what every chapter opens with and reuses (``chapter``:
the provenance box, the runs a chapter compares, cached computations, committed results), its tables
(``tables``), figures (``plots``), the claims ledger (``claims``) and the sizes of its coding exercises
(``exercises``), the exercises' checks and the student edition (``editions``). Nothing in ``cdn`` or ``cdn.experiments`` imports this package."""
from .build import (BookBuildError, ChapterError, build_book, build_html, chapter_list, execute_chapter,
                    executed_record)

__all__ = ["BookBuildError", "ChapterError", "build_book", "build_html", "chapter_list", "execute_chapter",
           "executed_record"]
