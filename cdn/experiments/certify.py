"""Certified robustness by randomized smoothing (Cohen, Rosenfeld and Kolter, 2019; chapter
"Robustness").

The smoothed classifier of a base classifier ``f`` is ``g(x) = argmax_c P(f(x + sigma eps) = c)``,
``eps ~ N(0, I)``. If the top class has probability ``pA >= pA_lower > 1/2``, then ``g`` is constant on
the L2 ball of radius ``sigma * Phi^-1(pA_lower)`` around ``x`` (Cohen et al., Theorem 1). CERTIFY
estimates it by Monte Carlo: ``n0`` noisy copies select the class ``cA``, ``n`` fresh copies count it,
``pA_lower`` is the one-sided ``(1 - alpha)`` Clopper-Pearson lower bound (scipy), and the procedure
abstains when ``pA_lower <= 1/2``. With probability at least ``1 - alpha`` a returned class and
radius are correct.

The joint model classifies noisy images directly, so its base classifier is simply
``argmax f(x + sigma eps)`` (``JointModel.logits`` at that sigma), without a separate denoiser.
"""
from __future__ import annotations

import math
from typing import Callable

import torch
from scipy.stats import binomtest, norm

from ..joint import JointModel, check_image

ABSTAIN = -1
#: the noise levels of the chapter (Cohen et al. use 0.12, 0.25, 0.5 on CIFAR-10 too)
SIGMAS = (0.12, 0.25, 0.5)

BaseClassifier = Callable[[torch.Tensor], torch.Tensor]


def noisy_classifier(net: torch.nn.Module, sigma: float) -> BaseClassifier:
    """The base classifier ``y -> f(y)`` (logits) of a network that classifies noisy images at noise
    level ``sigma`` (the joint model, or a classifier trained with noise augmentation)."""
    model = net if isinstance(net, JointModel) else JointModel(net)
    model.eval()
    return lambda y: model.logits(y, sigma)


def denoised_classifier(denoiser: torch.nn.Module, classifier: torch.nn.Module, clamp: bool = True) -> BaseClassifier:
    """Denoised smoothing's base classifier (Salman et al. 2020; Carlini et al. 2023 with a diffusion
    model): ``y -> classifier(D(y))``, the logits of a classifier of clean images applied to the output of
    a separate denoiser ``D`` (a module mapping a noisy batch to its estimate), clamped to the [0, 1]
    pixel range the classifier was trained on when ``clamp``. Smoothing it certifies the classifier
    without training it on noise."""
    denoiser.eval()
    model = classifier if isinstance(classifier, JointModel) else JointModel(classifier)
    model.eval()

    def base(y):
        with torch.no_grad():
            d = denoiser(y)
            return model.logits(d.clamp(0, 1) if clamp else d, 0.0)
    return base


def clopper_pearson_lower(k: int, n: int, alpha: float) -> float:
    """The one-sided ``(1 - alpha)`` Clopper-Pearson lower confidence bound on a binomial proportion
    from ``k`` successes out of ``n``: the ``alpha`` quantile of Beta(k, n - k + 1) (0 when k = 0);
    computed as the lower end of scipy's exact two-sided interval at level ``1 - 2 alpha``."""
    if not (isinstance(n, int) and n >= 1 and isinstance(k, int) and 0 <= k <= n):
        raise ValueError(f"need integers 0 <= k <= n with n >= 1, got k={k!r}, n={n!r}")
    if not 0 < alpha < 0.5:
        raise ValueError(f"alpha must be in (0, 0.5), got {alpha!r}")
    return float(binomtest(k, n).proportion_ci(confidence_level=1 - 2 * alpha, method="exact").low)


def max_radius(sigma: float, n: int, alpha: float) -> float:
    """The largest radius CERTIFY can return with ``n`` samples: ``sigma * Phi^-1(alpha^(1/n))``
    (all ``n`` noisy copies in the top class)."""
    return sigma * float(norm.ppf(clopper_pearson_lower(n, n, alpha)))


@torch.no_grad()
def sample_counts(base: BaseClassifier, x: torch.Tensor, sigma: float, num: int, batch_size: int,
                  generator: torch.Generator) -> torch.Tensor:
    """How often ``argmax base(x + sigma eps)`` picks each class over ``num`` Gaussian draws ``eps``
    (drawn from ``generator`` on the CPU): a (C,) integer tensor summing to ``num``."""
    counts = None
    done = 0
    while done < num:
        b = min(batch_size, num - done)
        eps = torch.randn((b, *x.shape), generator=generator, dtype=x.dtype).to(x.device)
        logits = base(x.unsqueeze(0) + sigma * eps)
        pred = logits.argmax(1).cpu()
        hist = torch.bincount(pred, minlength=logits.shape[1])
        counts = hist if counts is None else counts + hist
        done += b
    return counts


def certify(base: BaseClassifier, x: torch.Tensor, sigma: float, n0: int, n: int, alpha: float,
            batch_size: int = 500, generator: torch.Generator | None = None) -> dict:
    """CERTIFY of Cohen et al. (2019) for one image ``x`` (C, H, W) with pixels in [0, 1]:
    ``cA = argmax counts(n0)``, ``pA_lower = ClopperPearsonLower(counts(n)[cA], n, alpha)``; returns
    ``{"prediction": cA, "radius": sigma * Phi^-1(pA_lower), "p_lower"}``, or prediction ``ABSTAIN``
    and radius 0 when ``pA_lower <= 1/2``."""
    if not (isinstance(sigma, (int, float)) and math.isfinite(sigma) and sigma > 0):
        raise ValueError(f"sigma must be a finite number > 0, got {sigma!r}")
    for name, v in (("n0", n0), ("n", n), ("batch_size", batch_size)):
        if not isinstance(v, int) or v < 1:
            raise ValueError(f"{name} must be an integer >= 1, got {v!r}")
    check_image(x.unsqueeze(0), "x")
    if x.min() < 0 or x.max() > 1:
        raise ValueError(f"x must hold pixels in [0, 1], got values in [{x.min().item():.3g}, {x.max().item():.3g}]")
    generator = generator if generator is not None else torch.Generator().manual_seed(0)
    c_a = int(sample_counts(base, x, sigma, n0, batch_size, generator).argmax())
    k = int(sample_counts(base, x, sigma, n, batch_size, generator)[c_a])
    p_lower = clopper_pearson_lower(k, n, alpha)
    if p_lower <= 0.5:
        return {"prediction": ABSTAIN, "radius": 0.0, "p_lower": p_lower}
    return {"prediction": c_a, "radius": sigma * float(norm.ppf(p_lower)), "p_lower": p_lower}


def certify_images(base: BaseClassifier, x: torch.Tensor, c: torch.Tensor, sigma: float, n0: int, n: int,
                   alpha: float, batch_size: int = 500, seed: int = 0) -> list[dict]:
    """``certify`` for each image of the batch ``x`` with labels ``c``; image ``i`` draws its noise
    from a generator seeded by ``(seed, i)``. Each row adds ``label`` and ``correct``."""
    rows = []
    for i in range(len(x)):
        g = torch.Generator().manual_seed(seed * 1_000_003 + i)
        r = certify(base, x[i], sigma, n0, n, alpha, batch_size, g)
        label = int(c[i])
        rows.append({**r, "label": label, "correct": r["prediction"] == label})
    return rows


def certified_accuracy(rows: list[dict], radii) -> list[float]:
    """For each radius r: the fraction of images whose certified prediction is correct with radius
    ``>= r`` (Cohen et al.'s approximate certified test accuracy; abstentions count as wrong)."""
    if not rows:
        raise ValueError("rows is empty: expected the output of certify_images")
    return [sum(r["correct"] and r["radius"] >= rad for r in rows) / len(rows) for rad in radii]
