"""Out-of-distribution detection with the joint model (chapter "Generation and out-of-distribution
detection").

Three scores, each larger for images the model finds more typical of its training data:

* ``log_px``: ``log p_sigma(y) = logsumexp_c f(y)_c`` (up to a constant) at a small noise level
  ``sigma``, ``y = x + sigma eps``;
* ``msp``: the maximum softmax probability ``max_c p(c | y)`` (Hendrycks & Gimpel, 2017);
* ``neg_score_norm``: ``-|| grad_y log p_sigma(y) ||``, minus the norm of the score (a typical image
  sits near a mode of the smoothed density, where the score is small).

All three come from one forward and one backward pass (``JointModel.logits_and_score``).
Detection quality: AUROC (in-distribution as the positive class) and the false positive rate at
95% true positive rate, both from ``sklearn.metrics``.

The out-of-distribution sets are built offline at the in-distribution image size: a resized Tiny
ImageNet subset, scikit-learn's digits resized and coloured, uniform noise, clipped Gaussian noise,
and in-distribution images with their pixels shuffled.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from ..data import load
from ..joint import JointModel, check_image

SCORES = ("log_px", "msp", "neg_score_norm")
SCORE_LABELS = {"log_px": "log p(y)", "msp": "max softmax p(c|y)", "neg_score_norm": "-||∇ log p(y)||"}


def ood_scores(model: JointModel, images: torch.Tensor, sigma: float = 0.01, batch_size: int = 128,
               generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
    """The scores of ``SCORES`` for images (N, C, H, W) in [0, 1]: noise of level ``sigma`` is added
    (seeded by ``generator``), then ``log p(y)``, ``max_c p(c | y)`` and ``-||score(y)||`` are read
    from one forward and backward pass per batch. Returns ``{name: (N,) tensor}`` on the CPU."""
    check_image(images, "images")
    if images.ndim != 4:
        raise ValueError(f"images must have shape (N, C, H, W), got {tuple(images.shape)}")
    if not (sigma >= 0):
        raise ValueError(f"sigma must be >= 0, got {sigma!r}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    device = next(model.parameters(), torch.empty(0)).device
    out = {k: [] for k in SCORES}
    for i in range(0, len(images), batch_size):
        x = images[i:i + batch_size].float()
        y = x + sigma * torch.randn(x.shape, generator=generator) if sigma > 0 else x
        y = y.to(device)
        logits, score = model.logits_and_score(y, sigma)
        logits = logits.float()
        out["log_px"].append(torch.logsumexp(logits, 1).cpu())
        out["msp"].append(torch.softmax(logits, 1).max(1).values.cpu())
        out["neg_score_norm"].append(-score.flatten(1).float().norm(dim=1).cpu())
    return {k: torch.cat(v) for k, v in out.items()}


def _scores_and_labels(score_in, score_out):
    s_in = np.asarray(torch.as_tensor(score_in, dtype=torch.float64).flatten())
    s_out = np.asarray(torch.as_tensor(score_out, dtype=torch.float64).flatten())
    if s_in.size == 0 or s_out.size == 0:
        raise ValueError("need at least one in-distribution and one out-of-distribution score")
    if not (np.isfinite(s_in).all() and np.isfinite(s_out).all()):
        raise ValueError("scores contain NaN or infinite values")
    return np.concatenate([s_in, s_out]), np.concatenate([np.ones(s_in.size), np.zeros(s_out.size)])


def auroc(score_in, score_out) -> float:
    """Area under the ROC curve of detecting in-distribution samples (positive) by a larger score:
    1 for a perfect separator, 0.5 for indistinguishable scores (``sklearn.metrics.roc_auc_score``)."""
    from sklearn.metrics import roc_auc_score

    s, y = _scores_and_labels(score_in, score_out)
    return float(roc_auc_score(y, s))


def fpr_at_tpr(score_in, score_out, tpr: float = 0.95) -> float:
    """False positive rate (fraction of out-of-distribution samples accepted) at the threshold that
    accepts ``tpr`` of the in-distribution samples (``sklearn.metrics.roc_curve``); lower is better."""
    from sklearn.metrics import roc_curve

    if not (0 < tpr <= 1):
        raise ValueError(f"tpr must lie in (0, 1], got {tpr!r}")
    s, y = _scores_and_labels(score_in, score_out)
    fpr, tprs, _ = roc_curve(y, s)
    return float(fpr[np.searchsorted(tprs, tpr, side="left")])


def ood_table(scores_in: dict, scores_out: dict[str, dict]):
    """A pandas DataFrame with one row per (OOD set, score) and columns AUROC and FPR@95%TPR;
    ``scores_in`` is ``{score: (N,)}`` and ``scores_out`` ``{set: {score: (M,)}}``."""
    import pandas as pd

    rows = []
    for name, sc in scores_out.items():
        for k in scores_in:
            rows.append({"OOD set": name, "score": SCORE_LABELS.get(k, k),
                         "AUROC": auroc(scores_in[k], sc[k]), "FPR@95%TPR": fpr_at_tpr(scores_in[k], sc[k])})
    return pd.DataFrame(rows).set_index(["OOD set", "score"])


# ------------------------------------------------------------------------------ OOD sets --

def _resize(x: torch.Tensor, size: int) -> torch.Tensor:
    if x.shape[-1] == size and x.shape[-2] == size:
        return x
    return F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True).clamp(0, 1)


def _channels(x: torch.Tensor, channels: int) -> torch.Tensor:
    if x.shape[1] == channels:
        return x
    if channels == 1:
        return x.mean(1, keepdim=True)
    return x.expand(-1, channels, -1, -1)


def tiny_imagenet_ood(n: int, size: int = 32, channels: int = 3, data_dir=None, seed: int = 0) -> torch.Tensor:
    """``n`` Tiny ImageNet test (val) images, a seeded class-balanced subset, resized to ``size`` x
    ``size`` (anti-aliased bilinear), as floats in [0, 1]. Raises ``FileNotFoundError`` without the data."""

    ds = load("tiny-imagenet", "test", data_dir, n, seed)
    return _channels(_resize(ds.to_float(), size), channels)


def digits_ood(n: int, size: int = 32, channels: int = 3, seed: int = 0) -> torch.Tensor:
    """``n`` of scikit-learn's 8x8 digits (shipped with the package) resized to ``size`` and
    coloured: each image gets a random background and foreground colour, ``bg (1 - v) + fg v``."""
    from sklearn.datasets import load_digits

    g = torch.Generator().manual_seed(seed)
    imgs = torch.from_numpy(load_digits().images).float().div(16).unsqueeze(1)
    idx = torch.randperm(len(imgs), generator=g)[:n]
    if n > len(imgs):
        idx = torch.randint(0, len(imgs), (n,), generator=g)
    v = _resize(imgs[idx], size)
    bg = torch.rand(len(idx), channels, 1, 1, generator=g)
    fg = torch.rand(len(idx), channels, 1, 1, generator=g)
    return (bg * (1 - v) + fg * v).clamp(0, 1)


def uniform_noise(n: int, size: int = 32, channels: int = 3, seed: int = 0) -> torch.Tensor:
    """``n`` images of i.i.d. uniform pixels in [0, 1]."""
    return torch.rand(n, channels, size, size, generator=torch.Generator().manual_seed(seed))


def gaussian_noise(n: int, size: int = 32, channels: int = 3, seed: int = 0, mean: float = 0.5,
                   std: float = 0.25) -> torch.Tensor:
    """``n`` images of i.i.d. Gaussian pixels ``N(mean, std^2)`` clipped to [0, 1]."""
    g = torch.Generator().manual_seed(seed)
    return (mean + std * torch.randn(n, channels, size, size, generator=g)).clamp(0, 1)


def shuffle_pixels(images: torch.Tensor, seed: int = 0) -> torch.Tensor:
    """The images (N, C, H, W) with their pixel positions shuffled, a new seeded permutation per image
    (the colour of each pixel is kept): same colour histogram, no spatial structure."""
    check_image(images, "images")
    g = torch.Generator().manual_seed(seed)
    n, c, h, w = images.shape
    flat = images.reshape(n, c, h * w)
    perm = torch.argsort(torch.rand(n, h * w, generator=g), dim=1)
    return flat.gather(2, perm[:, None, :].expand(-1, c, -1)).reshape(n, c, h, w)


def ood_sets(in_dist: torch.Tensor, n: int, seed: int = 0, data_dir=None) -> dict[str, torch.Tensor]:
    """The offline out-of-distribution sets at the size and channels of ``in_dist`` (N, C, H, W), ``n``
    images each: Tiny ImageNet (skipped with a message when its data is missing), coloured digits,
    uniform noise, Gaussian noise and ``in_dist`` with shuffled pixels."""
    check_image(in_dist, "in_dist")
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    _, c, h, w = in_dist.shape
    out = {}
    try:
        out["Tiny ImageNet (resized)"] = tiny_imagenet_ood(n, h, c, data_dir, seed)
    except FileNotFoundError as err:
        print(f"Tiny ImageNet left out: {err}")
    out["digits (coloured)"] = digits_ood(n, h, c, seed)
    out["uniform noise"] = uniform_noise(n, h, c, seed)
    out["Gaussian noise"] = gaussian_noise(n, h, c, seed)
    out["pixels shuffled"] = shuffle_pixels(in_dist[:n], seed)
    return out




__all__ = ["SCORES", "SCORE_LABELS", "auroc", "digits_ood", "fpr_at_tpr", "gaussian_noise", "ood_scores", "ood_sets",
           "ood_table", "shuffle_pixels", "tiny_imagenet_ood", "uniform_noise"]
