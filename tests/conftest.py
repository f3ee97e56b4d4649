import os

import pytest
import torch

torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "0")) or max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture(autouse=True)
def _isolated_runs(tmp_path, monkeypatch):
    """Every test writes its runs under its own temporary folder. Training runs use PyTorch's own second
    derivatives unless a test sets ``CDN_SECOND_ORDER`` itself: the closed-form ones compile a kernel per
    layer shape (seconds per test); tests/test_second_order.py trains with them and compares."""
    monkeypatch.setenv("CDN_RUNS", str(tmp_path / "runs"))
    monkeypatch.setenv("CDN_SECOND_ORDER", "off")
    yield
