"""Adversarial attacks on the book's classifiers (chapter "Robustness").

The attacks themselves come from torchattacks: PGD (Madry et al. 2018; ``PGD`` and ``PGDL2``),
APGD (Croce and Hein 2020, the parameter-free attack of AutoAttack) and the black-box Square attack
(Andriushchenko et al. 2020). This module only

* adapts the models: ``Classifier`` gives the logits ``f(x)`` of a network (the joint model read as
  a classifier at sigma = 0), ``NoiseAveraged`` the noise-averaged classifier
  ``log (1/K) sum_k softmax f(x + sigma eps_k)`` with fresh noise at every call, so that every
  gradient the attack takes is a Monte-Carlo average over noise (expectation over transformation);
* checks the input (pixels in [0, 1], eps >= 0, norm 'Linf' or 'L2') and runs PGD with random
  restarts (torchattacks' ``MultiAttack`` of independent random starts);
* measures robust accuracy against eps, and reads the adversarial gradient as a difference of
  denoisers: ``grad_y log p(c | y) = (D(y, c) - D(y)) / sigma^2``.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
try:
    import torchattacks
except ImportError as e:  # not a pyproject dependency: see the note there
    raise ImportError("cdn.experiments.attacks needs torchattacks: `pip install --no-deps 'torchattacks>=3.5,<4'` "
                      "(make setup does it; --no-deps because its metadata pins an old requests)") from e
from torch import nn

from ..joint import JointModel, check_image

NORMS = ("Linf", "L2")
METHODS = ("pgd", "apgd", "square")
#: the eps grids of the chapter's curves (pixels in [0, 1])
LINF_EPS = (0.0, 1 / 255, 2 / 255, 4 / 255, 8 / 255)
L2_EPS = (0.0, 0.25, 0.5, 1.0)
GRIDS = {"Linf": LINF_EPS, "L2": L2_EPS}
#: the budgets of the checks against gradient masking (chapter "Robustness")
CHECK_EPS = {"Linf": 2 / 255, "L2": 0.25}


# ------------------------------------------------------------------------------- adapters --

class Classifier(nn.Module):
    """The logits ``f(x)`` of ``net`` on clean images ``x`` in [0, 1] (the joint model classifying at
    sigma = 0; a noise-conditioned net gets sigma = 0)."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.model = net if isinstance(net, JointModel) else JointModel(net)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.logits(x, 0.0 if self.model.noise_conditioned else None)


class NoiseAveraged(nn.Module):
    """The noise-averaged classifier ``log (1/K) sum_k softmax f(x + sigma eps_k)`` with ``K = draws``
    fresh Gaussian draws at every call (from torch's global generator: seed it for reproducibility).

    Its gradient is the Monte-Carlo gradient of the smoothed soft classifier: attacking it is the
    expectation-over-transformation attack on a model that classifies noisy inputs (Athalye et al.
    2018; Salman et al. 2019)."""

    def __init__(self, net: nn.Module, sigma: float, draws: int):
        super().__init__()
        if not (isinstance(sigma, (int, float)) and math.isfinite(sigma) and sigma > 0):
            raise ValueError(f"sigma must be a finite number > 0, got {sigma!r}")
        if not (isinstance(draws, int) and draws >= 1):
            raise ValueError(f"draws must be an integer >= 1, got {draws!r}")
        self.model = net if isinstance(net, JointModel) else JointModel(net)
        self.sigma, self.draws = float(sigma), draws

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b = x.shape[0]
        y = x.unsqueeze(0) + self.sigma * torch.randn((self.draws, *x.shape), device=x.device, dtype=x.dtype)
        logp = self.model.classify(y.flatten(0, 1), self.sigma).view(self.draws, b, -1)
        return torch.logsumexp(logp, dim=0) - math.log(self.draws)


# ------------------------------------------------------------------------------- checks --

def check_attack_input(x: torch.Tensor, c: torch.Tensor, eps: float, norm: str) -> None:
    """Raise ``ValueError`` unless ``x`` is a (B, C, H, W) float batch with pixels in [0, 1], ``c`` a
    (B,) integer label tensor, ``eps`` a finite number >= 0 and ``norm`` one of 'Linf', 'L2'."""
    if norm not in NORMS:
        raise ValueError(f"norm must be one of {NORMS}, got {norm!r}")
    if not isinstance(eps, (int, float)) or not math.isfinite(eps) or eps < 0:
        raise ValueError(f"eps must be a finite number >= 0, got {eps!r}")
    check_image(x, "x")
    if x.ndim != 4:
        raise ValueError(f"x must have shape (B, C, H, W), got {tuple(x.shape)}")
    if x.min() < 0 or x.max() > 1:
        raise ValueError(f"x must hold pixels in [0, 1], got values in [{x.min().item():.3g}, {x.max().item():.3g}]")
    if not isinstance(c, torch.Tensor) or c.dtype not in (torch.int64, torch.int32) or c.shape != (x.shape[0],):
        raise ValueError(f"c must be an integer tensor of shape ({x.shape[0]},), got "
                         f"{getattr(c, 'dtype', type(c).__name__)} {tuple(getattr(c, 'shape', ()))}")


# ------------------------------------------------------------------------------- attacks --

def attack(model: nn.Module, x: torch.Tensor, c: torch.Tensor, eps: float, norm: str = "Linf",
           method: str = "apgd", steps: int = 10, restarts: int = 1, eot_iter: int = 1, n_queries: int = 1000,
           seed: int = 0, targeted: bool = False, random_start: bool = True) -> torch.Tensor:
    """Adversarial examples ``x_adv`` with ``||x_adv - x||_norm <= eps`` and pixels in [0, 1] that
    raise the cross-entropy of ``model`` (any module mapping images in [0, 1] to logits).

    ``method``: 'pgd' (torchattacks PGD / PGDL2, step ``2.5 eps / steps``, uniform random start,
    ``restarts`` independent starts keeping the first that fools the model; ``random_start=False``
    starts at ``x``), 'apgd' (torchattacks
    APGD-CE with ``restarts`` and ``eot_iter`` gradient averages per step) or 'square' (black-box,
    ``n_queries`` queries). ``targeted`` (PGD only) moves towards the classes ``c`` instead.
    Seeded by ``seed`` (torch's global generator, which torchattacks uses)."""
    check_attack_input(x, c, eps, norm)
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    for name, v in (("steps", steps), ("restarts", restarts), ("eot_iter", eot_iter), ("n_queries", n_queries)):
        if not isinstance(v, int) or v < 1:
            raise ValueError(f"{name} must be an integer >= 1, got {v!r}")
    if targeted and (method != "pgd" or restarts != 1):
        raise ValueError(f"targeted attacks are implemented with method='pgd' and restarts=1, got {method!r}, "
                         f"restarts={restarts}")
    if eps == 0:
        return x.detach().clone()
    torch.manual_seed(seed)
    c = c.long()
    if method == "apgd":
        atk = torchattacks.APGD(model, norm=norm, eps=eps, steps=steps, n_restarts=restarts, seed=seed,
                                loss="ce", eot_iter=eot_iter)
    elif method == "square":
        atk = torchattacks.Square(model, norm=norm, eps=eps, n_queries=n_queries, n_restarts=1, seed=seed,
                                  loss="margin")
    else:
        pgd = torchattacks.PGD if norm == "Linf" else torchattacks.PGDL2
        starts = [pgd(model, eps=eps, alpha=2.5 * eps / steps, steps=steps, random_start=random_start)
                  for _ in range(restarts)]
        if targeted:
            for a in starts:
                a.set_mode_targeted_by_label(quiet=True)
        atk = starts[0] if restarts == 1 else torchattacks.MultiAttack(starts)
    return atk(x, c).detach()


@torch.no_grad()
def predict(model: nn.Module, x: torch.Tensor, batch_size: int = 500) -> torch.Tensor:
    """``argmax`` of ``model``'s logits on ``x``, in batches."""
    model.eval()
    return torch.cat([model(x[i:i + batch_size]).argmax(1) for i in range(0, len(x), batch_size)])


def robust_accuracy(model: nn.Module, x: torch.Tensor, c: torch.Tensor, eps: float, norm: str = "Linf",
                    methods=("pgd", "apgd"), seed: int = 0, candidates: torch.Tensor | None = None, **kwargs) -> dict:
    """Accuracy of ``model`` on ``x`` under each attack of ``methods`` in turn, each run only on the
    images that are still classified correctly (AutoAttack's protocol): ``{"eps", "norm", "clean",
    <method>: accuracy after the attacks up to it, "accuracy": after all of them, "robust": per-image
    booleans}``. An image counts as robust only if no attack fooled it; ``candidates`` (booleans)
    marks the images still robust at a smaller eps (the others are already fooled at this eps, since
    the smaller ball lies inside this one); ``kwargs`` go to ``attack``."""
    check_attack_input(x, c, eps, norm)
    torch.manual_seed(seed)
    correct = predict(model, x) == c
    if candidates is not None:
        correct &= torch.as_tensor(candidates, dtype=torch.bool, device=correct.device)
    out = {"eps": float(eps), "norm": norm, "clean": correct.float().mean().item()}
    for method in methods:
        idx = correct.nonzero().flatten()
        if eps > 0 and len(idx):
            adv = attack(model, x[idx], c[idx], eps, norm, method, seed=seed, **kwargs)
            torch.manual_seed(seed + 1)
            correct[idx] = predict(model, adv) == c[idx]
        out[method] = correct.float().mean().item()
    out["accuracy"] = correct.float().mean().item()
    out["robust"] = correct.tolist()
    return out


def accuracy_curve(model: nn.Module, x: torch.Tensor, c: torch.Tensor, eps_list, norm: str = "Linf",
                   **kwargs) -> list[dict]:
    """``robust_accuracy`` for each eps of ``eps_list`` in increasing order (a curve of the chapter),
    each attacking only the images still robust at the previous eps: an adversarial example in the
    smaller ball is one in the larger, so the curve never rises."""
    rows, robust = [], None
    for eps in sorted(float(e) for e in eps_list):
        rows.append(robust_accuracy(model, x, c, eps, norm, candidates=robust, **kwargs))
        robust = rows[-1]["robust"]
    return rows


def attack_curves(classifiers: dict[str, nn.Module], averaged: dict[str, nn.Module], x: torch.Tensor,
                  c: torch.Tensor, sizes: dict, seed: int = 0, grids: dict | None = None) -> dict:
    """The chapter's curves: for every classifier, ``accuracy_curve`` over ``grids`` (default ``GRIDS``) under PGD then
    APGD with ``sizes["steps"]`` steps and ``sizes["restarts"]`` restarts; for every noise-averaged classifier, APGD
    alone on the first ``sizes["eot_images"]`` images. Returns ``{label: {norm: curve rows}}``."""
    grids = GRIDS if grids is None else grids
    out = {label: {norm: accuracy_curve(model, x, c, grid, norm, steps=sizes["steps"], restarts=sizes["restarts"],
                                        seed=seed) for norm, grid in grids.items()}
           for label, model in classifiers.items()}
    n = sizes["eot_images"]
    out.update({label: {norm: accuracy_curve(model, x[:n], c[:n], grid, norm, methods=("apgd",), steps=sizes["steps"],
                                             seed=seed) for norm, grid in grids.items()}
                for label, model in averaged.items()})
    return out


def masking_checks(classifiers: dict[str, nn.Module], averaged: dict[str, nn.Module], x: torch.Tensor,
                   c: torch.Tensor, sizes: dict, seed: int = 0) -> dict:
    """The three checks against gradient masking (Athalye et al. 2018; Carlini et al. 2019) on the first
    ``sizes["square_images"]`` images: ``large``, ``{label: {norm: accuracy}}`` under APGD then PGD at the budgets
    ``sizes["large_linf"]``, ``sizes["large_l2"]`` (every model, noise-averaged ones included: it must be 0);
    ``strength``, a list of rows ``{label, norm, eps, method, steps, restarts, accuracy}`` for PGD and APGD with the
    chapter's steps and with ``strong_steps`` x ``strong_restarts``, and ``method = "square"`` for Square with
    ``square_queries`` queries, at ``CHECK_EPS`` (a stronger attack must not leave more images correct, Square must
    not beat the white-box attacks)."""
    n = sizes["square_images"]
    xs, cs = x[:n], c[:n]
    large = {label: {norm: robust_accuracy(model, xs, cs, sizes[f"large_{norm.lower()}"], norm, methods=("apgd", "pgd"),
                                           steps=sizes["steps"], seed=seed)["accuracy"] for norm in NORMS}
             for label, model in {**classifiers, **averaged}.items()}
    strength = []
    for label, model in classifiers.items():
        for norm, eps in CHECK_EPS.items():
            for method in ("pgd", "apgd"):
                for steps, restarts in ((sizes["steps"], 1), (sizes["strong_steps"], sizes["strong_restarts"])):
                    acc = robust_accuracy(model, xs, cs, eps, norm, methods=(method,), steps=steps, restarts=restarts,
                                          seed=seed + 1)["accuracy"]
                    strength.append(dict(label=label, norm=norm, eps=eps, method=method, steps=steps,
                                         restarts=restarts, accuracy=acc))
            acc = robust_accuracy(model, xs, cs, eps, norm, methods=("square",), n_queries=sizes["square_queries"],
                                  seed=seed)["accuracy"]
            strength.append(dict(label=label, norm=norm, eps=eps, method="square", steps=None, restarts=None,
                                 accuracy=acc))
    return {"large": large, "strength": strength}


def masking_verdicts(checks: dict) -> dict:
    """What ``masking_checks`` found: ``largest_at_large_budget`` (check 1 passes at 0); ``rises``, the settings
    (label, norm, method) where the stronger run of an attack left more images correct than the weaker one, with the
    rise, out of ``settings`` (check 2); ``square_wins``, the (label, norm) where Square's accuracy is below the best
    white-box attack's, out of ``cases``, and the mean accuracy under each (check 3)."""
    rows = checks["strength"]
    by = {}
    for r in rows:
        by.setdefault((r["label"], r["norm"]), []).append(r)
    rises, settings, square_wins, square, white = [], 0, [], [], []
    for (label, norm), group in by.items():
        for method in ("pgd", "apgd"):
            runs = sorted((r for r in group if r["method"] == method), key=lambda r: (r["steps"], r["restarts"]))
            settings += 1
            if runs[-1]["accuracy"] > runs[0]["accuracy"]:
                rises.append((label, norm, method, runs[-1]["accuracy"] - runs[0]["accuracy"]))
        best = min(r["accuracy"] for r in group if r["method"] != "square")
        sq = next(r["accuracy"] for r in group if r["method"] == "square")
        square.append(sq)
        white.append(best)
        if sq < best:
            square_wins.append((label, norm))
    return {"largest_at_large_budget": max(v for accs in checks["large"].values() for v in accs.values()),
            "rises": rises, "settings": settings, "square_wins": square_wins, "cases": len(by),
            "mean_square": sum(square) / len(square), "mean_best_white_box": sum(white) / len(white)}


# --------------------------------------------------------------- difference of denoisers --

def denoiser_difference(model: JointModel, y: torch.Tensor, sigma: float, c: torch.Tensor) -> dict:
    """The adversarial gradient two ways: ``grad`` = ``grad_y log p(c | y)`` by autograd on the
    log-softmax, ``diff`` = ``(D(y, c) - D(y)) / sigma^2`` from the two Tweedie denoisers, and
    ``relative_error`` = ``||grad - diff|| / ||grad||`` per image (zero up to float error)."""
    if not (isinstance(sigma, (int, float)) and math.isfinite(sigma) and sigma > 0):
        raise ValueError(f"sigma must be a finite number > 0 (the identity divides by sigma^2), got {sigma!r}")
    grad = model.class_gradient(y, sigma, c)
    diff = (model.denoise(y, sigma, c) - model.denoise(y, sigma)) / sigma ** 2
    rel = (grad - diff).flatten(1).norm(dim=1) / grad.flatten(1).norm(dim=1)
    return {"grad": grad, "diff": diff, "relative_error": rel}


def cross_entropy(model: nn.Module, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """Per-image cross-entropy ``-log softmax(model(x))_c`` (the loss the attacks raise)."""
    with torch.no_grad():
        return F.cross_entropy(model(x), c.long(), reduction="none")
