"""The papermill commands of the teachers' page (book/teaching.md) work as written: the test runs
them, with /tmp replaced by a temporary folder, and checks the executed notebook (a theory chapter in
the smoke profile: seconds).
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

book = pytest.importorskip("cdn.book.build")
pytest.importorskip("papermill")
pytest.importorskip("jupytext")

pytestmark = [pytest.mark.book, pytest.mark.slow]


def _papermill_block(page: str) -> list[str]:
    """The command lines of the first ```bash block of the page that runs papermill."""
    for block in re.findall(r"```bash\n(.*?)```", page, flags=re.S):
        if "papermill " in block:
            return [line for line in block.strip().splitlines() if line.strip() and not line.startswith("#")]
    raise AssertionError("the teachers' page has no papermill command")


def test_teachers_papermill_commands_work_as_written(tmp_path):
    lines = _papermill_block((book.BOOK_DIR / "teaching.md").read_text())
    assert lines[0].startswith("jupytext ") and lines[1].startswith("papermill ")
    env = dict(os.environ, PATH=str(Path(sys.executable).parent) + os.pathsep + os.environ.get("PATH", ""))
    for line in lines:
        res = subprocess.run(line.replace("/tmp/", f"{tmp_path}/"), shell=True, cwd=book.REPO_ROOT, env=env,
                             capture_output=True, text=True, timeout=900)
        assert res.returncode == 0, f"{line}\n{res.stderr[-3000:]}"
    out = json.loads(next(tmp_path.glob("*.out.ipynb")).read_text())
    assert out["metadata"]["papermill"]["parameters"] == {"profile": "smoke", "seed": 1}
    code = [c for c in out["cells"] if c["cell_type"] == "code"]
    assert all(c["execution_count"] is not None for c in code)
    assert not [o for c in code for o in c.get("outputs", []) if o["output_type"] == "error"]
    injected = next(c for c in code if "injected-parameters" in c["metadata"].get("tags", []))
    assert 'profile = "smoke"' in "".join(injected["source"])
