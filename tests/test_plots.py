"""The statistical figures of cdn.book.plots (seaborn): what they draw, not only that they run."""
from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from matplotlib.collections import PolyCollection  # noqa: E402

pytest.importorskip("seaborn")
from cdn.book import plots
from cdn.evaluate import reliability_bins

SIGMAS = (0.0, 0.05, 0.2, 0.8)


def _rows(offset):
    return [{"sigma": s, "accuracy": 0.9 - s / 2 + offset} for s in SIGMAS]


def _bands(ax):
    return [c for c in ax.collections if isinstance(c, PolyCollection)]


def test_metric_vs_sigma_draws_a_band_only_across_seeds():
    plots.use_style()
    fig, ax = plots.metric_vs_sigma({"one seed": _rows(0)}, "accuracy", legend=None)
    assert not _bands(ax) and ax.get_legend() is None
    (line,) = ax.lines
    np.testing.assert_allclose(line.get_ydata(), [r["accuracy"] for r in _rows(0)])
    seeds = _rows(0) + _rows(0.1) + _rows(-0.1)
    fig, ax = plots.metric_vs_sigma({"three seeds": seeds}, "accuracy", percent=True)
    (band,) = _bands(ax)
    np.testing.assert_allclose(ax.lines[0].get_ydata(), [100 * r["accuracy"] for r in _rows(0)])  # the mean
    ys = band.get_paths()[0].vertices[:, 1]
    sd = 100 * np.std([-0.1, 0.0, 0.1], ddof=1)
    assert ys.max() == pytest.approx(100 * 0.9 + sd) and ys.min() == pytest.approx(100 * (0.9 - 0.4) - sd)
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["three seeds"]
    fig, ax = plots.metric_vs_sigma({"no band": seeds}, "accuracy", errorbar=None)
    assert not _bands(ax)


def test_confusion_matrix_counts_and_normalises():
    labels = torch.tensor([0, 0, 1, 1, 2, 2])
    preds = torch.tensor([0, 1, 1, 1, 0, 2])
    _, _, m = plots.confusion_matrix(labels, preds, ["a", "b", "c"], normalize=False)
    np.testing.assert_array_equal(m, [[1, 1, 0], [0, 2, 0], [1, 0, 1]])
    _, ax, m = plots.confusion_matrix(labels, preds, ["a", "b", "c"])
    np.testing.assert_allclose(m.sum(1), 1.0)
    assert ax.get_xlabel() == "predicted class" and ax.get_ylabel() == "true class"
    with pytest.raises(ValueError, match="same length"):
        plots.confusion_matrix(labels, preds[:3], ["a", "b", "c"])
    with pytest.raises(ValueError, match=r"class indices in \[0, 2\]"):
        plots.confusion_matrix(labels, preds + 1, ["a", "b", "c"])


def test_sigma_histogram_one_set_or_several():
    draws = torch.cat([torch.zeros(10), torch.logspace(-3, 0, 90)])
    fig, ax = plots.sigma_histogram(draws, bins=10)
    assert ax.get_title() == "100 draws, 10 clean (σ = 0)" and ax.get_xscale() == "log"
    assert sum(p.get_height() for p in ax.patches) == 90  # the clean draws are counted apart
    fig, ax = plots.sigma_histogram({"a": torch.logspace(-3, 0, 50), "b": torch.linspace(0.01, 1, 50)})
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["a", "b"]
    with pytest.raises(ValueError, match="empty"):
        plots.sigma_histogram(torch.tensor([]))


def test_score_distributions_and_reliability_diagram():
    g = torch.Generator().manual_seed(0)
    scores_in = {"s1": torch.randn(200, generator=g), "s2": torch.randn(200, generator=g)}
    scores_out = {"far": {k: v + 3 for k, v in scores_in.items()}}
    fig = plots.score_distributions(scores_in, scores_out, in_label="test", labels={"s1": "first"})
    assert len(fig.axes) == 2 and fig.axes[0].get_xlabel() == "first"
    assert [t.get_text() for t in fig.axes[0].get_legend().get_texts()] == ["test", "far"]
    with pytest.raises(ValueError, match="scores_in is empty"):
        plots.score_distributions({}, {})
    conf = torch.tensor([0.95, 0.95, 0.55, 0.55])
    bins = reliability_bins(conf, torch.tensor([True, True, True, False]), n_bins=10)
    fig, ax = plots.reliability_diagram(bins)
    heights = sorted(p.get_height() for p in ax.patches if p.get_height() > 0)
    assert heights == pytest.approx([0.5, 1.0])  # the accuracy of the two filled bins
    assert ax.get_legend() is None
