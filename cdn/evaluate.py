"""Evaluation as a function of the noise level (chapters "Classification" and "Denoising").

* classification: accuracy, NLL ``-log p(c | y)`` and ECE (torchmetrics, 15 bins) on ``y = x + sigma eps``;
* denoising: PSNR ``10 log10(1 / mean((D(y) - x)^2))`` per image (D clipped to [0, 1]), averaged
  over images, for ``D(y)``, ``D(y, true c)``, ``D(y, wrong c)``, a denoise-only baseline and the
  noisy input itself.

Noise is drawn from a generator seeded by ``(seed, sigma index, batch index)``: every model sees the
same noisy images. Under ``torch.distributed`` (an initialised process group, e.g. at the end of
``torchrun -m cdn train``) each rank evaluates every W-th batch and the results are gathered, so every
rank returns the metrics of the whole test set, equal to one process's up to summation order.
"""
from __future__ import annotations


from typing import Callable

import torch
import torch.nn.functional as F

from . import distributed
from .data import ImageDataset
from .joint import JointModel, upcast
from .nets.resnet import FEATURE_ENERGY_HEADS

DEFAULT_SIGMAS = (0.0, 0.02, 0.05, 0.1, 0.2, 0.4, 0.8)
DENOISE_SIGMAS = (0.02, 0.05, 0.1, 0.2, 0.4)


def _noise(shape, sigma_index: int, batch_index: int, seed: int, device) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed * 7919 + sigma_index * 104729 + batch_index)
    return torch.randn(shape, generator=g).to(device)


def psnr(x_hat: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Per-image PSNR in dB for pixels in [0, 1]: ``10 log10(1 / mse)`` with ``x_hat`` clipped."""
    mse = (x_hat.clamp(0, 1) - x).pow(2).flatten(1).mean(1)
    return 10 * torch.log10(1 / mse.clamp_min(1e-12))


def classify_flip(model: JointModel, y: torch.Tensor, sigma=None) -> torch.Tensor:
    """Test-time flips: ``log_softmax`` of the mean of ``log p(c | y)`` and ``log p(c | y flipped left to
    right)``, a normalised log-probability (``Config.tta_flip``, chapters "Training the joint model" and
    "Classification"). Equals ``model.classify(y)`` on images that are their own mirror image."""
    logp = (upcast(model.classify(y, sigma)) + upcast(model.classify(y.flip(-1), sigma))) / 2
    return torch.log_softmax(logp, dim=1)


@torch.no_grad()
def classification_vs_sigma(model: JointModel, data: ImageDataset, sigmas=DEFAULT_SIGMAS, batch_size: int = 250,
                            seed: int = 0, device=None, tta_flip: bool = False) -> list[dict]:
    """For each sigma: ``{"sigma", "accuracy", "nll", "ece"}`` of ``argmax p(c | x + sigma eps)``; with
    ``tta_flip`` the probabilities are those of ``classify_flip``."""
    device = device or next(model.parameters()).device
    model.eval()
    info = distributed.current()
    num_batches = -(-len(data) // batch_size)
    rows = []
    for si, sigma in enumerate(sigmas):
        mine = {}
        for bi in distributed.my_batches(num_batches, info):
            x = data.to_float(slice(bi * batch_size, (bi + 1) * batch_size), device)
            y = x + sigma * _noise(x.shape, si, bi, seed, device)
            mine[bi] = (classify_flip(model, y, sigma) if tta_flip else model.classify(y, sigma)).float().cpu()
        gathered = {bi: lp for part in distributed.gather_objects(mine, info) for bi, lp in part.items()}
        logp = torch.cat([gathered[bi] for bi in range(num_batches)])
        rows.append({"sigma": float(sigma), **classification_metrics(logp, data.labels, data.num_classes)})
    return rows


def classification_metrics(logp: torch.Tensor, labels: torch.Tensor, num_classes: int, n_bins: int = 15) -> dict:
    """``{"accuracy", "nll", "ece"}`` of log-probabilities ``logp`` (N, K): the fraction with
    ``argmax = label``, the mean of ``-log p(label)``, and the expected calibration error of
    torchmetrics, ``sum_b (n_b / N) |acc_b - conf_b|`` over ``n_bins`` equal bins of the confidence
    ``max_c p(c)`` (chapters "Classification" and "Corruptions and calibration")."""
    # imported here: torchmetrics takes longer to import than torch, and most users of cdn.evaluate never need it
    from torchmetrics.functional.classification import multiclass_calibration_error

    logp = upcast(logp)  # float64 stays float64
    return {"accuracy": (logp.argmax(1) == labels).double().mean().item(), "nll": F.nll_loss(logp, labels).item(),
            "ece": multiclass_calibration_error(logp.exp(), labels, num_classes, n_bins=n_bins).item()}


def reliability_bins(confidence: torch.Tensor, correct: torch.Tensor, n_bins: int = 15) -> dict[str, torch.Tensor]:
    """The reliability diagram's bins, those of torchmetrics' ECE: ``n_bins`` equal intervals
    ``[b/n_bins, (b+1)/n_bins)`` of the confidence (torchmetrics gives a confidence of exactly 1 a bin
    of its own; here it joins the last bin); per bin ``count``, mean ``confidence`` and ``accuracy``
    (NaN for empty bins), so that ``ECE = sum_b count_b / N |accuracy_b - confidence_b|``."""
    if confidence.shape != correct.shape or confidence.ndim != 1:
        raise ValueError(f"confidence and correct must be 1-d of equal length, got {tuple(confidence.shape)} "
                         f"and {tuple(correct.shape)}")
    conf, corr = confidence.double(), correct.double()
    edges = torch.linspace(0, 1, n_bins + 1, dtype=torch.float64)
    idx = (torch.bucketize(conf, edges, right=True) - 1).clamp(0, n_bins - 1)
    count = torch.zeros(n_bins, dtype=torch.float64).index_add_(0, idx, torch.ones_like(conf))
    sum_conf = torch.zeros(n_bins, dtype=torch.float64).index_add_(0, idx, conf)
    sum_corr = torch.zeros(n_bins, dtype=torch.float64).index_add_(0, idx, corr)
    return {"edges": edges, "count": count, "confidence": sum_conf / count, "accuracy": sum_corr / count}


Denoiser = Callable[[torch.Tensor, float, torch.Tensor], torch.Tensor]


def joint_denoisers(model: JointModel, num_classes: int) -> dict[str, Denoiser]:
    """The three denoisers of a joint model: ``D(y)``, ``D(y, true c)``, ``D(y, wrong c)`` (the wrong
    class is ``(c + 1) mod C``)."""
    return {
        "D(y)": lambda y, s, c: model.denoise(y, s),
        "D(y,c)": lambda y, s, c: model.denoise(y, s, c),
        "D(y,wrong c)": lambda y, s, c: model.denoise(y, s, (c + 1) % num_classes),
    }


def _part_denoiser(model: JointModel, part: str) -> Denoiser:
    def denoise(y, sigma, c):
        s = model.score_parts(y, sigma).get(part)
        return y if s is None else y + float(sigma) ** 2 * s
    return denoise


def decomposed_denoisers(model: JointModel, num_classes: int) -> dict[str, Denoiser]:
    """The denoisers that tell which part of a joint model denoises: ``D(y)``, ``y + sigma^2`` times the
    gradient of the class-independent energy alone (``"energy alone"``; ``y`` itself for a net without
    one) and of the features' ``logsumexp`` alone (``"features alone"``), and ``D(y, true c)``,
    ``D(y, wrong c)`` (``JointModel.score_parts``: the two parts sum to the score); for an energy built from
    the network's stage feature maps, also ``"stem energy alone"`` (``stem_energy_denoiser``)."""
    out = {"D(y)": lambda y, s, c: model.denoise(y, s), "energy alone": _part_denoiser(model, "energy"),
           "features alone": _part_denoiser(model, "features")}
    net = model.net
    # the stem is the part of h_1 that skips every block; h_4's skips pass strided convolutions too
    if getattr(net, "head", None) in ("stage1energy", "stagesenergy") and getattr(net, "block", None) == "preact":
        out["stem energy alone"] = stem_energy_denoiser(net)
    out.update({k: v for k, v in joint_denoisers(model, num_classes).items() if k != "D(y)"})
    return out


def stem_energy_denoiser(net) -> Denoiser:
    """The ablation that tells a stage energy from the shortcut it may fall back to: the energy of the
    stage-1 head computed from the stem alone, ``-(d/2) log mean(stem(y)^2)`` (one 3x3 convolution of
    ``y``, the part of ``h_1`` that skips every block), as a denoiser ``y + sigma^2 grad_y``. Where its
    PSNR is that of the whole ``D(y)``, the blocks add nothing and the energy is the old shortcut."""
    def denoise(y, sigma, c):
        with torch.enable_grad():
            y_in = y.detach().requires_grad_(True)
            h = net.stem(y_in)
            energy = -0.5 * y[0].numel() * torch.log(h.pow(2).flatten(1).mean(1) + 1e-8)
            (g,) = torch.autograd.grad(energy.sum(), y_in)
        return y + float(sigma) ** 2 * g
    return denoise


@torch.no_grad()
def score_part_sizes(model: JointModel, data: ImageDataset, sigmas=DENOISE_SIGMAS, batch_size: int = 250,
                     seed: int = 0, device=None) -> list[dict]:
    """For each sigma, the size of each part of the score against the noise it must remove: the mean
    over images of ``||sigma^2 s_part(y)|| / ||y - x||`` (1 for a part that would remove all of the noise
    along it; an ideal denoiser's whole score gives about ``||D*(y) - y|| / ||y - x||``, close to 1 at
    small sigma), for ``"features"``, ``"energy"`` (when the net has one) and the whole score ``"score"``."""
    device = device or "cpu"
    num_batches = -(-len(data) // batch_size)
    rows = []
    for si, sigma in enumerate(sigmas):
        sums: dict[str, float] = {}
        for bi in range(num_batches):
            x = data.to_float(slice(bi * batch_size, (bi + 1) * batch_size), device)
            noise = sigma * _noise(x.shape, si, bi, seed, device)
            parts = model.score_parts(x + noise, sigma)
            parts["score"] = sum(parts.values())
            size = noise.flatten(1).norm(dim=1)
            for k, v in parts.items():
                sums[k] = sums.get(k, 0.0) + (sigma ** 2 * v.float().flatten(1).norm(dim=1) / size).sum().item()
        rows.append({"sigma": float(sigma), **{k: v / len(data) for k, v in sums.items()}})
    return rows


def psnr_vs_sigma(denoisers: dict[str, Denoiser], data: ImageDataset, sigmas=DENOISE_SIGMAS, batch_size: int = 250,
                  seed: int = 0, device=None) -> list[dict]:
    """For each sigma: ``{"sigma", "noisy": PSNR of y, name: PSNR of each denoiser}``, mean over images."""
    device = device or "cpu"
    info = distributed.current()
    num_batches = -(-len(data) // batch_size)
    rows = []
    for si, sigma in enumerate(sigmas):
        sums = {name: 0.0 for name in ["noisy", *denoisers]}
        for bi in distributed.my_batches(num_batches, info):
            start = bi * batch_size
            x = data.to_float(slice(start, start + batch_size), device)
            c = data.labels[start:start + batch_size].to(device)
            y = x + sigma * _noise(x.shape, si, bi, seed, device)
            sums["noisy"] += psnr(y, x).sum().item()
            for name, d in denoisers.items():
                with torch.no_grad():
                    sums[name] += psnr(d(y, sigma, c).float(), x).sum().item()
        parts = distributed.gather_objects(sums, info)
        rows.append({"sigma": float(sigma), **{k: sum(p[k] for p in parts) / len(data) for k in sums}})
    return rows


#: noise bands of ``dsm_gradient_by_band``: the noise no denoiser can find (below 0.01, under 3 grey levels),
#: the middle, and the levels the book measures denoisers at
SIGMA_BANDS = ((0.0, 0.01), (0.01, 0.1), (0.1, float("inf")))


def dsm_gradient_by_band(model, x: torch.Tensor, sigma: torch.Tensor, eps: torch.Tensor, bands=SIGMA_BANDS,
                         weighting: str = "inv_sigma2") -> list[dict]:
    """Which noise levels drive a denoiser's training: for each band ``[lo, hi)`` of ``sigma``, the mean loss of its
    images and the norm of the parameter gradient of their share of the batch loss
    ``(1/B) sum_{i in band} w(sigma_i) ||D(y_i) - x_i||^2 / d``, ``y = x + sigma eps``, ``w = 1/sigma^2``
    (``weighting='inv_sigma2'``) or 1 (``'none'``). ``model`` is a ``JointModel`` (``D = y + sigma^2 score``, the
    score kept differentiable) or a denoiser module (``D = model(y)``); it runs in its present mode on the whole
    batch, so in training mode batch statistics mix the bands as they do in training."""
    if weighting not in ("inv_sigma2", "none"):
        raise ValueError(f"weighting must be 'inv_sigma2' or 'none', got {weighting!r}")
    s = sigma.view(-1, 1, 1, 1).to(x.dtype)
    y = x + s * eps
    if isinstance(model, JointModel):
        params = [p for p in model.net.parameters() if p.requires_grad]
        d = y + s ** 2 * model.score(y.detach().requires_grad_(True), None, create_graph=True)
    else:
        params = [p for p in model.parameters() if p.requires_grad]
        d = model(y)
    w = 1 / sigma.to(x.dtype) ** 2 if weighting == "inv_sigma2" else torch.ones_like(sigma, dtype=x.dtype)
    per_image = w * (d - x).pow(2).flatten(1).mean(1)
    rows = []
    for lo, hi in bands:
        mask = (sigma >= lo) & (sigma < hi)
        grads = torch.autograd.grad((per_image * mask).sum() / len(x), params, retain_graph=True, allow_unused=True)
        norm = torch.sqrt(sum(g.pow(2).sum() for g in grads if g is not None)).item()
        rows.append({"band": f"[{lo:g}, {hi:g})", "images": int(mask.sum()),
                     "loss": per_image[mask].mean().item() if mask.any() else None, "gradient norm": norm})
    return rows
