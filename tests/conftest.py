import os

import pytest
import torch

torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "0")) or max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture(autouse=True)
def _isolated_runs(tmp_path, monkeypatch):
    """Every test writes its runs under its own temporary folder."""
    monkeypatch.setenv("CDN_RUNS", str(tmp_path / "runs"))
    yield
