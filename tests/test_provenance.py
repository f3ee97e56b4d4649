"""cdn.provenance.git_commit: a commit is marked dirty by code changes, not by what runs write to results/."""
import shutil
import subprocess

import pytest

from cdn.provenance import git_commit

pytestmark = pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")


def _git(repo, *args):
    subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True)


def test_git_commit_ignores_results_but_not_code(tmp_path):
    _git(tmp_path, "init", "-q")
    (tmp_path / "code.py").write_text("x = 1\n")
    (tmp_path / "results").mkdir()
    (tmp_path / "results" / "r.json").write_text("{}\n")
    _git(tmp_path, "add", "-A")
    _git(tmp_path, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "first")
    clean = git_commit(tmp_path)
    assert "uncommitted" not in clean and len(clean) >= 7
    (tmp_path / "results" / "r.json").write_text('{"row": 1}\n')
    (tmp_path / "results" / "new.json").write_text("{}\n")
    assert git_commit(tmp_path) == clean
    (tmp_path / "code.py").write_text("x = 2\n")
    assert git_commit(tmp_path) == clean + " + uncommitted changes"


def test_git_commit_outside_a_checkout(tmp_path):
    assert git_commit(tmp_path).startswith("unknown")
