"""One figure style for the whole book, and the few plot helpers its chapters share: metric
against noise level, image grids, training curves, the noise-level distribution.

Call ``use_style()`` once at the top of a chapter; every helper draws on a given ``ax`` (or makes
a new figure) and returns the matplotlib objects, so chapters stay a few lines long. A model keeps
one colour in every figure of the book (``color_for``).

The statistical figures are drawn with seaborn (the ``book`` extra), under the same matplotlib style
(seaborn's own themes are never applied): the distribution of the training noise levels
(``sigma_histogram``), of out-of-distribution scores (``score_distributions``), reliability diagrams,
confusion matrices, and metrics against the noise level with a band across seeds where several
seeds exist (``metric_vs_sigma``).
"""
from __future__ import annotations

import math
from typing import Iterable, Mapping, Sequence

import matplotlib as mpl
import matplotlib.pyplot as plt
import numpy as np
import torch

from ..experiments.ood import SCORE_LABELS

#: Okabe-Ito colour-blind-safe palette, then matplotlib's tab10 for anything beyond it.
PALETTE = ["#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#F0E442", "#000000"]

#: fixed colours for the curves that recur across chapters (matched by substring, first match wins)
_FIXED = [
    ("noisy", "#999999"),
    ("wrong", "#CC79A7"),
    ("D(y,c)", "#009E73"),
    ("GradResNet (joint", "#0072B2"),
    ("gradresnet-ce", "#56B4E9"),
    ("cross-entropy only", "#56B4E9"),
    ("mollif", "#882255"),
    ("ResNet-18 + noise", "#E69F00"),
    ("resnet18-noise", "#E69F00"),
    ("ResNet-18", "#D55E00"),
    ("resnet18", "#D55E00"),
    ("DnCNN", "#7F7F7F"),
    ("dncnn", "#7F7F7F"),
    ("UNet", "#000000"),
    ("unet", "#000000"),
    ("NL-means", "#8C564B"),
    ("gradresnet", "#0072B2"),
]

STYLE = {
    "figure.figsize": (6.4, 3.6),
    "figure.dpi": 110,
    "savefig.dpi": 110,
    "savefig.bbox": "tight",
    "font.size": 10,
    "axes.titlesize": 11,
    "axes.labelsize": 10,
    "legend.fontsize": 8.5,
    "legend.frameon": False,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "grid.linewidth": 0.6,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "lines.linewidth": 1.8,
    "lines.markersize": 4.5,
    "image.interpolation": "nearest",
    "axes.prop_cycle": mpl.cycler(color=PALETTE),
}


def use_style() -> None:
    """Apply the book's matplotlib style (sizes, grid, palette, no top/right spines) globally."""
    mpl.rcParams.update(STYLE)


def color_for(name: str, index: int = 0) -> str:
    """The colour of a curve named ``name``: a fixed colour for the book's recurring models and
    denoisers, else the ``index``-th colour of the palette."""
    for key, colour in _FIXED:
        if key in name:
            return colour
    return PALETTE[index % len(PALETTE)]


def _seaborn():
    """seaborn, imported on first use (it is in the ``book`` extra, beside pandas)."""
    try:
        import seaborn
    except ImportError as err:
        raise ImportError("this figure needs seaborn: pip install -e '.[book]' (or pip install seaborn)") from err
    return seaborn


def _axes(ax, figsize=None):
    if ax is not None:
        return ax.figure, ax
    fig, ax = plt.subplots(figsize=figsize)
    return fig, ax


def _title_and_legend(ax, title: str | None, legend: str | None) -> None:
    """Set the title; place the legend inside (``legend`` a matplotlib location), outside to the
    right (``"right"``) or nowhere (None)."""
    if title:
        ax.set_title(title)
    if legend == "right":
        ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0))
    elif legend is not None:
        ax.legend(loc=legend)


def metric_vs_sigma(curves: Mapping[str, Sequence[Mapping]], metric: str, ax=None, ylabel: str | None = None,
                    title: str | None = None, percent: bool = False, linthresh: float = 0.01,
                    legend: str | None = "best", errorbar="sd"):
    """Plot ``metric`` against the noise level for several models (seaborn ``lineplot``).

    ``curves`` maps a label to rows ``[{"sigma": s, metric: v, ...}, ...]`` (as in
    ``Run.metrics(...)["classification"]``). Rows of several seeds (several rows at one sigma, e.g.
    the concatenated rows of runs that differ only by their seed) are drawn as their mean with a band of
    ``errorbar`` (seaborn's: ``"sd"``, one standard deviation across the seeds, by default; ``("ci", 95)``
    a bootstrap interval; None for no band). The x axis is logarithmic, symmetric-log (linear below
    ``linthresh``) when sigma = 0 (clean images) is among the levels; ``percent`` multiplies the values
    by 100; the ticks are the noise levels themselves. ``legend``: ``"best"`` (inside), ``"right"``
    (outside, right of the axes) or None. Returns ``(fig, ax)``.
    """
    if not curves:
        raise ValueError("curves is empty: expected {label: [{'sigma': ..., metric: ...}, ...]}")
    sns = _seaborn()
    fig, ax = _axes(ax)
    markers = "osD^vP*X"
    for i, (label, rows) in enumerate(curves.items()):
        rows = [r for r in rows if r.get(metric) is not None]
        if not rows:
            continue
        s = np.array([r["sigma"] for r in rows], dtype=float)
        v = np.array([r[metric] * (100 if percent else 1) for r in rows], dtype=float)
        dashed = "wrong" in label or label.startswith("noisy")
        several = len(np.unique(s)) < len(s)  # several rows at one noise level: several seeds
        sns.lineplot(x=s, y=v, ax=ax, errorbar=errorbar if several else None, marker=markers[i % len(markers)],
                     color=color_for(label, i), label=label, linestyle="--" if dashed else "-", markeredgewidth=0,
                     legend=False)
    all_sigmas = sorted({r["sigma"] for rows in curves.values() for r in rows})
    if min(all_sigmas) > 0:
        ax.set_xscale("log")
    else:  # sigma = 0 (clean images) beside 0.02 ... 0.8
        ax.set_xscale("symlog", linthresh=linthresh)
    ax.set_xticks(all_sigmas)
    ax.set_xticklabels([f"{v:g}" for v in all_sigmas])
    ax.xaxis.set_minor_locator(mpl.ticker.NullLocator())
    ax.set_xlabel("noise level σ (pixels in [0, 1])")
    ax.set_ylabel(ylabel or (metric + (" (%)" if percent else "")))
    _title_and_legend(ax, title, legend)
    return fig, ax


def accuracy_curves(curves: Mapping[str, Sequence[Mapping]], x: str, ax=None, xlabel: str | None = None,
                    title: str | None = None, xticks: Sequence[float] | None = None,
                    xticklabels: Sequence[str] | None = None, legend: str | None = "best", markers: bool = True):
    """Plot accuracy (in %) against ``x`` (e.g. the attack budget ``eps`` or the certified radius)
    for several models: ``curves`` maps a label to rows ``[{x: ..., "accuracy": ...}, ...]``. Labels
    holding "noise-averaged" or "smoothed" are dashed (chapter "Robustness"). Returns ``(fig, ax)``."""
    if not curves:
        raise ValueError(f"curves is empty: expected {{label: [{{'{x}': ..., 'accuracy': ...}}, ...]}}")
    fig, ax = _axes(ax)
    marks = "osD^vP*X"
    for i, (label, rows) in enumerate(curves.items()):
        dashed = "noise-averaged" in label or "smoothed" in label
        ax.plot([r[x] for r in rows], [100 * r["accuracy"] for r in rows], color=color_for(label, i), label=label,
                marker=marks[i % len(marks)] if markers else None, linestyle="--" if dashed else "-")
    if xticks is not None:
        ax.set_xticks(list(xticks))
        ax.xaxis.set_minor_locator(mpl.ticker.NullLocator())
        if xticklabels is not None:
            ax.set_xticklabels(list(xticklabels))
    ax.set_ylim(-3, 103)
    ax.set_xlabel(xlabel or x)
    ax.set_ylabel("accuracy (%)")
    _title_and_legend(ax, title, legend)
    return fig, ax


def signed_images(images) -> torch.Tensor:
    """Signed images (perturbations, gradients) mapped to [0, 1] for display: ``0.5 + v / (2 max|v|)``
    per image, so grey is zero (chapter "Robustness")."""
    v = torch.as_tensor(images).detach().float().cpu()
    scale = v.flatten(1).abs().amax(1).clamp_min(1e-12).view(-1, *([1] * (v.ndim - 1)))
    return 0.5 + v / (2 * scale)


def _to_numpy_images(images) -> np.ndarray:
    """(B, C, H, W) tensor or array in [0, 1] -> (B, H, W, C) float array, clipped."""
    if isinstance(images, torch.Tensor):
        images = images.detach().float().cpu().numpy()
    images = np.asarray(images, dtype=np.float32)
    if images.ndim == 3:
        images = images[None]
    if images.ndim != 4 or images.shape[1] not in (1, 3):
        raise ValueError(f"images must have shape (B, C, H, W) with C in (1, 3), got {images.shape}")
    return np.clip(images.transpose(0, 2, 3, 1), 0, 1)


def show_image(image, ax=None, title: str | None = None):
    """Show one image (C, H, W) or (1, C, H, W) in [0, 1] on ``ax`` without axes ticks; grey
    images use a grey colour map. Returns ``ax``."""
    img = _to_numpy_images(image)[0]
    if ax is None:
        _, ax = plt.subplots(figsize=(2.5, 2.5))
    if img.shape[2] == 1:
        ax.imshow(img[:, :, 0], cmap="gray", vmin=0, vmax=1)
    else:
        ax.imshow(img)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.grid(False)
    for spine in ax.spines.values():
        spine.set_visible(False)
    if title:
        ax.set_title(title, fontsize=8)
    return ax


def image_grid(images, ncols: int | None = None, titles: Sequence[str] | None = None, size: float = 1.3,
               suptitle: str | None = None):
    """A grid of images from a (B, C, H, W) tensor in [0, 1] (``ncols`` per row, default up to 8),
    with optional per-image ``titles``. Returns the figure."""
    imgs = _to_numpy_images(images)
    b = imgs.shape[0]
    ncols = ncols or min(b, 8)
    nrows = math.ceil(b / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(size * ncols, size * nrows + (0.3 if titles else 0)),
                             squeeze=False)
    for i, ax in enumerate(axes.flat):
        if i < b:
            show_image(imgs[i].transpose(2, 0, 1), ax, titles[i] if titles is not None else None)
        else:
            ax.axis("off")
    if suptitle:
        fig.suptitle(suptitle)
    fig.tight_layout()
    return fig


def image_rows(rows: Mapping[str, object], size: float = 1.3, col_titles: Sequence[str] | None = None,
               suptitle: str | None = None):
    """Labelled rows of images: ``rows`` maps a row label (e.g. "clean", "noisy", "D(y)") to a
    (B, C, H, W) tensor in [0, 1]; all rows must hold the same number of images. Returns the figure."""
    if not rows:
        raise ValueError("rows is empty: expected {label: (B, C, H, W) images}")
    arrays = {k: _to_numpy_images(v) for k, v in rows.items()}
    counts = {k: a.shape[0] for k, a in arrays.items()}
    if len(set(counts.values())) != 1:
        raise ValueError(f"every row must hold the same number of images, got {counts}")
    b = next(iter(counts.values()))
    fig, axes = plt.subplots(len(arrays), b, figsize=(size * b + 0.9, size * len(arrays)), squeeze=False)
    for r, (label, imgs) in enumerate(arrays.items()):
        for j in range(b):
            ax = axes[r, j]
            show_image(imgs[j].transpose(2, 0, 1), ax, col_titles[j] if (r == 0 and col_titles) else None)
        axes[r, 0].set_ylabel(label, rotation=0, ha="right", va="center", fontsize=9)
    if suptitle:
        fig.suptitle(suptitle)
    fig.tight_layout()
    return fig


def _smooth(values: Sequence[float], window: int) -> np.ndarray:
    v = np.asarray(values, dtype=float)
    if window <= 1 or len(v) < window:
        return v
    kernel = np.ones(window) / window
    padded = np.concatenate([np.full(window - 1, v[0]), v])
    return np.convolve(padded, kernel, mode="valid")


def training_curves(logs: Mapping[str, Sequence[Mapping]], keys: Iterable[str] = ("ce", "dsm"), smooth: int = 1,
                    logy: Mapping[str, bool] | None = None, titles: Mapping[str, str] | None = None):
    """Training curves from ``Run.log()`` rows: one panel per key in ``keys`` (e.g. ``ce`` and
    ``dsm``), one line per run that logged that key, against the training step; ``smooth`` is a
    moving-average window in log rows. Returns the figure."""
    keys = list(keys)
    if not keys:
        raise ValueError("keys is empty")
    logy = dict(logy or {"dsm": True})
    titles = dict(titles or {})
    fig, axes = plt.subplots(1, len(keys), figsize=(4.2 * len(keys), 3.3), squeeze=False)
    for ax, key in zip(axes.flat, keys):
        drawn = 0
        for i, (label, rows) in enumerate(logs.items()):
            pts = [(r["step"], r[key]) for r in rows if key in r]
            if not pts:
                continue
            steps, vals = zip(*pts)
            ax.plot(steps, _smooth(vals, smooth), color=color_for(label, i), label=label)
            drawn += 1
        ax.set_xlabel("training step")
        ax.set_ylabel(key)
        ax.set_title(titles.get(key, key))
        if logy.get(key):
            ax.set_yscale("log")
        if drawn:
            ax.legend()
        else:
            ax.text(0.5, 0.5, f"no run logged {key!r}", ha="center", va="center", transform=ax.transAxes)
    fig.tight_layout()
    return fig


def sigma_histogram(sigmas, ax=None, bins: int = 40, title: str | None = None):
    """Histogram of sampled noise levels on a log axis (seaborn ``histplot``); zeros, the clean images,
    are counted in the title. ``sigmas`` is one set of draws, or a mapping ``{label: draws}`` to
    compare distributions (one outlined histogram each, same bins). Returns ``(fig, ax)``."""
    sns = _seaborn()
    sets = dict(sigmas) if isinstance(sigmas, Mapping) else {None: sigmas}
    arrays = {k: torch.as_tensor(v).detach().float().cpu().numpy().ravel() for k, v in sets.items()}
    if not arrays or any(a.size == 0 for a in arrays.values()):
        raise ValueError("sigmas is empty")
    fig, ax = _axes(ax, figsize=(4.8, 3.0))
    pos_all = np.concatenate([a[a > 0] for a in arrays.values()])
    if pos_all.size:
        edges = np.logspace(np.log10(pos_all.min()), np.log10(pos_all.max()), bins + 1)
        for i, (label, a) in enumerate(arrays.items()):
            one = label is None
            sns.histplot(x=a[a > 0], bins=edges, ax=ax, color=PALETTE[i % len(PALETTE)], label=label,
                         element="bars" if one else "step", fill=one, alpha=0.85 if one else 1.0,
                         linewidth=0 if one else 1.5)
        ax.set_xscale("log")
    ax.set_xlabel("σ")
    ax.set_ylabel("count")
    if len(arrays) > 1:
        ax.legend()
    if title is None and len(arrays) == 1:
        s = next(iter(arrays.values()))
        zeros = int((s == 0).sum())
        title = f"{s.size} draws" + (f", {zeros} clean (σ = 0)" if zeros else "")
    if title:
        ax.set_title(title)
    return fig, ax


def score_distributions(scores_in: Mapping[str, torch.Tensor], scores_out: Mapping[str, Mapping[str, torch.Tensor]],
                        in_label: str = "in-distribution", bins: int = 40, labels: Mapping[str, str] | None = None):
    """Out-of-distribution scores (``cdn.experiments.ood.ood_scores``): one panel per score, the density of the
    in-distribution scores (filled grey) and of each outlier set's (outlined), on shared bins clipped
    to the 0.5-99.5 percentiles of all values (seaborn ``histplot``). ``labels`` names the scores on
    the x axes. Returns the figure."""
    sns = _seaborn()
    keys = list(scores_in)
    if not keys:
        raise ValueError("scores_in is empty: expected {score name: (N,) tensor}")
    labels = dict(labels or {})
    fig, axes = plt.subplots(1, len(keys), figsize=(4.2 * len(keys), 3.2), squeeze=False)
    for ax, k in zip(axes.flat, keys):
        vals = {in_label: torch.as_tensor(scores_in[k]).double().numpy()}
        vals.update({name: torch.as_tensor(sc[k]).double().numpy() for name, sc in scores_out.items()})
        allv = np.concatenate(list(vals.values()))
        lo, hi = np.percentile(allv, 0.5), np.percentile(allv, 99.5)
        edges = np.linspace(lo, hi if hi > lo else lo + 1, bins + 1)
        for i, (name, v) in enumerate(vals.items()):
            first = i == 0
            sns.histplot(x=np.clip(v, lo, hi), bins=edges, stat="density", ax=ax, label=name,
                         color="#444444" if first else PALETTE[(i - 1) % len(PALETTE)],
                         element="bars" if first else "step", fill=first, alpha=0.5 if first else 1.0,
                         linewidth=0 if first else 1.5)
        ax.set_xlabel(labels.get(k, k))
        ax.set_ylabel("density")
    handles, names = axes.flat[0].get_legend_handles_labels()  # in-distribution first, then the sets in order
    order = sorted(range(len(names)), key=lambda j: list(vals).index(names[j]))
    axes.flat[0].legend([handles[j] for j in order], [names[j] for j in order], fontsize=7)
    fig.tight_layout()
    return fig


def confusion_matrix(labels, predictions, classes: Sequence[str], ax=None, normalize: bool = True,
                     title: str | None = None):
    """Confusion matrix of integer ``labels`` (true classes) against ``predictions`` as a seaborn
    heatmap: rows are true classes, columns predicted ones; with ``normalize`` each row is divided by
    its count (the fraction of each true class predicted as each class). Returns ``(fig, ax, matrix)``
    with the matrix as a numpy array."""
    sns = _seaborn()
    t = torch.as_tensor(labels).long().cpu().ravel()
    p = torch.as_tensor(predictions).long().cpu().ravel()
    k = len(classes)
    if t.shape != p.shape:
        raise ValueError(f"labels and predictions must have the same length, got {t.numel()} and {p.numel()}")
    if t.numel() and (min(t.min(), p.min()) < 0 or max(t.max(), p.max()) >= k):
        raise ValueError(f"labels and predictions must be class indices in [0, {k - 1}]")
    m = torch.zeros(k, k, dtype=torch.float64).index_put_((t, p), torch.ones(t.numel(), dtype=torch.float64),
                                                          accumulate=True).numpy()
    if normalize:
        m = m / np.maximum(m.sum(1, keepdims=True), 1)
    fig, ax = _axes(ax, figsize=(0.45 * k + 2.2, 0.45 * k + 1.4))
    names = [c[:10] for c in classes]
    sns.heatmap(m, ax=ax, cmap="Blues", vmin=0, vmax=1 if normalize else None, square=True,
                annot=k <= 12, fmt=".2f" if normalize else ".0f", annot_kws={"fontsize": 7},
                xticklabels=names, yticklabels=names, cbar_kws={"shrink": 0.8})
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    ax.tick_params(axis="x", rotation=45)
    ax.grid(False)
    if title:
        ax.set_title(title)
    return fig, ax, m


def bar_by_class(values: Sequence[float], classes: Sequence[str], ax=None, highlight: int | None = None,
                 ylabel: str = "p(c | y)"):
    """Bar chart of one value per class (e.g. ``p(c | y)``), the ``highlight``-th bar (the true
    class) in a second colour. Returns ``(fig, ax)``."""
    if len(values) != len(classes):
        raise ValueError(f"got {len(values)} values for {len(classes)} classes")
    fig, ax = _axes(ax, figsize=(4.8, 2.6))
    colours = [PALETTE[1] if i == highlight else PALETTE[0] for i in range(len(values))]
    ax.bar(range(len(values)), values, color=colours)
    ax.set_xticks(range(len(values)))
    ax.set_xticklabels(classes, rotation=45, ha="right", fontsize=8)
    ax.set_ylabel(ylabel)
    return fig, ax


def reliability_diagram(bins: Mapping[str, torch.Tensor], ax=None, title: str | None = None, color: str | None = None):
    """Reliability diagram from ``cdn.evaluate.reliability_bins`` (seaborn): the accuracy of each
    confidence bin as a bar over the bin, the bin's mean confidence as a tick, the diagonal of perfect
    calibration, and the fraction of predictions per bin as a grey line. Returns ``(fig, ax)``."""
    sns = _seaborn()
    fig, ax = _axes(ax, figsize=(3.2, 3.2))
    edges = bins["edges"].numpy()
    centres = (edges[:-1] + edges[1:]) / 2
    count = bins["count"].numpy()
    full = count > 0
    colour = color or PALETTE[0]
    acc = {"confidence": centres[full], "accuracy": bins["accuracy"].numpy()[full]}
    sns.histplot(acc, x="confidence", weights="accuracy", bins=list(edges), ax=ax, color=colour, alpha=0.75,
                 edgecolor="white", label="accuracy")
    sns.scatterplot(x=centres[full], y=bins["confidence"].numpy()[full], marker="_", s=120, color="#333333",
                    linewidth=1.5, ax=ax, label="mean confidence")
    ax.plot([0, 1], [0, 1], linestyle="--", color="#999999", linewidth=1)
    sns.lineplot(x=centres[full], y=count[full] / count.sum(), color="#bbbbbb", linewidth=1, ax=ax,
                 label="fraction of images", legend=False)
    if ax.get_legend() is not None:
        ax.get_legend().remove()
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("confidence max p(c | y)")
    ax.set_ylabel("accuracy")
    if title:
        ax.set_title(title)
    return fig, ax


__all__ = ["PALETTE", "STYLE", "accuracy_curves", "bar_by_class", "color_for", "confusion_matrix", "image_grid",
           "image_rows", "metric_vs_sigma", "reliability_diagram", "score_distributions", "sigma_histogram",
           "show_image", "signed_images", "training_curves", "use_style"]


def quiver_field(ax, y: torch.Tensor, target: torch.Tensor, color="k", title: str | None = None,
                 samples: torch.Tensor | None = None, sample_colors=None, scale: float = 1.0):
    """Arrows from each grid point ``y`` (B, 2) to ``target`` (B, 2) (a denoiser's output, so the arrow
    is ``D(y) - y``), drawn to scale (``scale`` = 1: the arrow ends at ``D(y)``), over optional
    ``samples`` of the clean data."""
    y, t = y.detach().cpu().numpy(), target.detach().cpu().numpy()
    if samples is not None:
        ax.scatter(samples[:, 0], samples[:, 1], s=2, c=sample_colors, alpha=0.25, linewidths=0)
    ax.quiver(y[:, 0], y[:, 1], scale * (t[:, 0] - y[:, 0]), scale * (t[:, 1] - y[:, 1]), angles="xy",
              scale_units="xy", scale=1, color=color, width=0.004)
    ax.set_aspect("equal")
    if title:
        ax.set_title(title)
    return ax


def plot_accuracy_vs_time(result: dict, ax=None):
    """Test accuracy against training time (evaluation excluded) of the models of ``race``."""
    if ax is None:
        _, ax = plt.subplots()
    k = result["settings"]["k"]
    labels = {"joint": "GradResNet (joint, one double backward)", "jem": f"JEM on GradResNet (K = {k})",
              "jem-nologenergy": f"JEM on GradResNet without log-energy term (K = {k})",
              "jem-nologenergy-lr1e-4": f"JEM, no log-energy term, lr 1e-4 (K = {k})"}
    for i, (name, m) in enumerate(result["models"].items()):
        t = [p["seconds"] for p in m["curve"]]
        a = [100 * p["accuracy"] for p in m["curve"]]
        ax.plot(t, a, marker="o", color=color_for(labels.get(name, name), i + 1), label=labels.get(name, name))
        if m.get("diverged"):
            ax.plot(t[-1:], a[-1:], marker="x", color="k", markersize=9)
    ax.set_xlabel("training time (s, evaluation excluded)")
    ax.set_ylabel("test accuracy (%)")
    ax.legend()
    return ax.figure, ax


def plot_sweep(sweep: dict, metric: str = "seconds_per_step", axes=None):
    """Time per step (or ``metric``) against batch size, one line per width and case, from the
    ``python -m benchmarks --sweep`` JSON; second panel: joint / cross-entropy step time per width."""
    if axes is None:
        _, axes = plt.subplots(1, 2, figsize=(9.6, 3.4))
    rows = [r for r in sweep["rows"] if r.get(metric)]
    widths = sorted({r["width"] for r in rows})
    for i, w in enumerate(widths):
        for case, style in (("gradresnet-ce", "--"), ("gradresnet-joint", "-")):
            pts = sorted((r["batch"], r[metric]) for r in rows if r["width"] == w and r["case"] == case)
            if pts:
                axes[0].plot(*zip(*pts), style, marker="o", color=PALETTE[i % len(PALETTE)],
                             label=f"width {w}, {'joint' if case.endswith('joint') else 'cross-entropy'}")
        t = {(r["case"], r["batch"]): r[metric] for r in rows if r["width"] == w}
        ratio = sorted((b, t[("gradresnet-joint", b)] / t[("gradresnet-ce", b)]) for (cs, b) in t
                       if cs == "gradresnet-ce" and ("gradresnet-joint", b) in t)
        if ratio:
            axes[1].plot(*zip(*ratio), marker="o", color=PALETTE[i % len(PALETTE)], label=f"width {w}")
    for ax in axes:
        ax.set_xscale("log", base=2)
        ax.set_xlabel("batch size")
    axes[0].set_yscale("log")
    axes[0].set_ylabel("seconds per training step")
    axes[0].legend(fontsize=7)
    axes[1].set_ylabel("joint step / cross-entropy step")
    axes[1].legend()
    axes[0].figure.tight_layout()
    return axes[0].figure, axes


def plot_score_histograms(scores_in: dict, scores_out: dict[str, dict], in_label: str = "in-distribution",
                          bins: int = 40):
    """One panel per score: the density of the in-distribution scores and of each OOD set's on shared
    bins (``cdn.book.plots.score_distributions``, seaborn). Returns the figure."""
    return score_distributions(scores_in, scores_out, in_label=in_label, bins=bins, labels=SCORE_LABELS)
