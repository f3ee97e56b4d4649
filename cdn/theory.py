"""The computations of the theory chapters ("Tweedie-Miyasawa", "The Jacobian of the denoiser",
"Generative against discriminative classifiers", "GradResNet as a UNet"), kept out of the notebooks.

* Tweedie on a 2-D Gaussian mixture: exact vector fields ``D(y)``, ``D(y, c)`` and
  ``sigma^2 grad log p(c | y)`` on a grid (``mixture_fields``); a tiny noise-conditioned MLP
  (``MixtureMLP``) trained as a joint model with ``cdn.losses.JointLoss`` on samples of the mixture
  (``train_mixture_model``), and its error against the exact denoiser (``mixture_denoiser_errors``).
* Jacobian of a denoiser ``D``: the full matrix by batched vector-Jacobian products (``jacobian``),
  ``J(y) v`` (``jacobian_vector``), the local-linearity error ``||D(y) - J(y) y|| / ||D(y)||``
  (``local_linearity_error``), the spectrum and effective dimension ``trace J`` (``jacobian_analysis``).
* Generative against discriminative: two Gaussian classes with a shared covariance, the plug-in
  (LDA) estimator of the posterior's logistic parameters against logistic regression by Newton's
  method, their exact test error, NLL and ECE, and the asymptotic variance of logistic regression
  (``GaussianProblem``, ``lda_fit``, ``logistic_fit``, ``compare_estimators``).
* Costs of GradResNet: parameter counts and the time of a forward, a denoising (forward + backward)
  and a training (double backward) pass (``parameter_counts``, ``pass_times``).
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
from torch import nn

from .joint import JointModel
from .losses import JointLoss, SigmaSampler, add_noise
from .mixture import GaussianMixture, MixtureLogits

# ---------------------------------------------------------------------- Tweedie on a mixture --


def grid2d(lim: float = 2.5, n: int = 21, dtype=torch.float64) -> torch.Tensor:
    """Points of a regular ``n`` x ``n`` grid on ``[-lim, lim]^2``, shape (n*n, 2)."""
    t = torch.linspace(-lim, lim, n, dtype=dtype)
    gx, gy = torch.meshgrid(t, t, indexing="xy")
    return torch.stack([gx.reshape(-1), gy.reshape(-1)], dim=1)


def mixture_fields(mixture: GaussianMixture, y: torch.Tensor, sigma: float) -> dict[str, torch.Tensor]:
    """Exact fields of the noisy mixture at points ``y`` (B, 2) and noise level ``sigma``:
    ``posterior`` p(c|y) (B, C); ``D`` = E[x|y] in closed form (B, d); ``D_c`` = E[x|y,c] (C, B, d);
    ``tweedie`` = y + sigma^2 grad log p(y) by autograd through the exact density (B, d);
    ``tweedie_c`` the same with log p(y, c) (C, B, d); ``class_grad`` = sigma^2 grad log p(c|y) by
    autograd (C, B, d), to compare with ``D_c - D``."""
    model = JointModel(MixtureLogits(mixture))
    b, C = y.shape[0], mixture.num_classes
    sig = torch.full((b,), float(sigma), dtype=y.dtype)
    out = {"posterior": model.classify(y, sig).exp(), "D": mixture.posterior_mean(y, sig),
           "tweedie": model.denoise(y, sig)}
    out["D_c"] = torch.stack([mixture.posterior_mean(y, sig, torch.full((b,), k)) for k in range(C)])
    out["tweedie_c"] = torch.stack([model.denoise(y, sig, torch.full((b,), k)) for k in range(C)])
    out["class_grad"] = torch.stack([sigma ** 2 * model.class_gradient(y, sig, torch.full((b,), k))
                                     for k in range(C)])
    return out


class MixtureMLP(nn.Module):
    """A small noise-conditioned "classifier" of 2-D points: ``f(y, sigma) = g(y, log sigma) /
    (sigma^2 + tau)`` with ``g`` a GELU MLP. The division is a fixed preconditioning (our choice): the
    score of data of variance ``v`` blurred by noise ``sigma`` scales as ``1 / (v + sigma^2)``, so ``g``
    only has to learn quantities of order one."""

    noise_conditioning = True

    def __init__(self, num_classes: int = 3, dim: int = 2, width: int = 64, depth: int = 3, tau: float = 0.1):
        super().__init__()
        layers, cin = [], dim + 1
        for _ in range(depth):
            layers += [nn.Linear(cin, width), nn.GELU()]
            cin = width
        layers.append(nn.Linear(cin, num_classes))
        self.mlp = nn.Sequential(*layers)
        self.tau = tau

    def forward(self, y: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        s = sigma.to(y.dtype).view(-1, 1)
        h = torch.cat([y, torch.log(s.clamp_min(1e-4))], dim=1)
        return self.mlp(h) / (s ** 2 + self.tau)


def train_mixture_model(mixture: GaussianMixture, steps: int = 2000, batch_size: int = 256, lr: float = 3e-3,
                        sigma_min: float = 0.05, sigma_max: float = 1.0, width: int = 64, seed: int = 0,
                        lam: float = 1.0) -> tuple[JointModel, list[dict]]:
    """Train a ``MixtureMLP`` joint model on fresh samples of ``mixture`` with ``JointLoss``
    (cross-entropy plus denoising score matching, sigma log-uniform on [sigma_min, sigma_max]), Adam
    with a cosine schedule, float32. Returns the model (eval mode) and the loss log (every 10 steps)."""
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    net = MixtureMLP(mixture.num_classes, mixture.dim, width)
    model = JointModel(net)
    loss_fn = JointLoss(SigmaSampler(sigma_min, sigma_max), lam=lam)
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    log = []
    for step in range(steps):
        x, c = mixture.sample(batch_size, g)
        loss, terms = loss_fn(model, x.float(), c, g)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if step % 10 == 0 or step == steps - 1:
            log.append({"step": step, "loss": loss.item(), **{k: v.item() for k, v in terms.items()}})
    return model.eval(), log


def mixture_denoiser_errors(model: JointModel, mixture: GaussianMixture, sigmas, n: int = 2000,
                            seed: int = 0) -> list[dict]:
    """For each sigma, on ``n`` fresh noisy samples: the MSE per coordinate of the noisy input, of the
    exact denoiser E[x|y] and of the learned ``D(y)`` against the clean ``x``, and the distance
    ``||D(y) - E[x|y]||^2`` (per coordinate) of learned to exact, for ``D(y)`` and for ``D(y, c)`` with
    the true class; ``relative excess`` is ``||D(y) - E[x|y]||^2 / ||E[x|y] - x||^2`` (the learned
    denoiser's excess MSE over the optimum, as a fraction of the optimum); plus the accuracies of the exact and learned posteriors."""
    g = torch.Generator().manual_seed(seed)
    rows = []
    for s in sigmas:
        x, c = mixture.sample(n, g)
        sig = torch.full((n,), float(s), dtype=x.dtype)
        y, _ = add_noise(x, sig, g)
        exact = mixture.posterior_mean(y, sig)
        exact_c = mixture.posterior_mean(y, sig, c)
        learned = model.denoise(y.float(), sig.float()).double()
        learned_c = model.denoise(y.float(), sig.float(), c).double()
        mse = lambda a, b: (a - b).pow(2).mean().item()  # noqa: E731
        rows.append({"sigma": float(s), "noisy": mse(y, x), "exact D(y)": mse(exact, x),
                     "learned D(y)": mse(learned, x), "learned vs exact D(y)": mse(learned, exact),
                     "learned vs exact D(y,c)": mse(learned_c, exact_c),
                     "relative excess": mse(learned, exact) / mse(exact, x),
                     "exact accuracy": (mixture.log_joint(y, sig).argmax(1) == c).double().mean().item(),
                     "learned accuracy": (model.logits(y.float(), sig.float()).argmax(1) == c).double().mean().item()})
    return rows


def learned_fields(model: JointModel, y: torch.Tensor, sigma: float, num_classes: int) -> dict[str, torch.Tensor]:
    """The learned model's ``D`` (B, d), ``D_c`` (C, B, d) and ``posterior`` (B, C) at points ``y``."""
    yf = y.float()
    sig = torch.full((y.shape[0],), float(sigma))
    return {"D": model.denoise(yf, sig).double(),
            "D_c": torch.stack([model.denoise(yf, sig, torch.full((y.shape[0],), k)).double()
                                for k in range(num_classes)]),
            "posterior": model.classify(yf, sig).exp().double()}


# --------------------------------------------------------------------------------- Jacobian --

def jacobian(fn: Callable[[torch.Tensor], torch.Tensor], y: torch.Tensor, chunk: int = 256) -> torch.Tensor:
    """The Jacobian ``J[i, j] = d fn(y)_i / d y_j`` of a map ``fn`` from (B, ...) to (B, ...) at one
    input ``y`` of shape (1, ...), as a (d, d) matrix, row by row: ``chunk`` copies of ``y`` go through
    ``fn`` in one batch and one backward pass returns ``chunk`` rows (the network must treat the images
    of a batch independently: no BatchNorm in training mode). ``fn`` must be differentiable in ``y``
    (for a joint model: ``lambda y: model.denoise(y, sigma, c, create_graph=True)``)."""
    if y.shape[0] != 1:
        raise ValueError(f"y must hold one input, shape (1, ...), got {tuple(y.shape)}")
    d = y[0].numel()
    rows = []
    for start in range(0, d, chunk):
        k = min(chunk, d - start)
        yk = y.detach().expand(k, *y.shape[1:]).clone().requires_grad_(True)
        with torch.enable_grad():
            out = fn(yk).reshape(k, d)
            sel = torch.zeros(k, d, dtype=out.dtype, device=out.device)
            sel[torch.arange(k), torch.arange(start, start + k)] = 1
            (g,) = torch.autograd.grad(out, yk, grad_outputs=sel)
        rows.append(g.reshape(k, d).detach())
    return torch.cat(rows)


def jacobian_vector(fn: Callable[[torch.Tensor], torch.Tensor], y: torch.Tensor, v: torch.Tensor,
                    transpose: bool = False) -> torch.Tensor:
    """``J(y) v`` (or ``J(y)^T v`` with ``transpose``) for a batch ``y``, ``v`` of the same shape, by
    the double-backward trick (no full Jacobian)."""
    with torch.enable_grad():
        yy = y.detach().requires_grad_(True)
        out = fn(yy)
        if transpose:
            (g,) = torch.autograd.grad(out, yy, grad_outputs=v)
            return g.detach()
        u = torch.zeros_like(out, requires_grad=True)
        (g,) = torch.autograd.grad(out, yy, grad_outputs=u, create_graph=True)
        (jv,) = torch.autograd.grad(g, u, grad_outputs=v)
    return jv.detach()


def local_linearity_error(fn: Callable[[torch.Tensor], torch.Tensor], y: torch.Tensor,
                          symmetric: bool = False, relative_to: str = "output") -> torch.Tensor:
    """``||D(y) - J(y) y|| / ||D(y)||`` per image of a batch ``y`` (zero for a homogeneous map,
    ``D(a y) = a D(y)``); with ``relative_to="correction"``, ``/ ||D(y) - y||`` instead (exactly 2 for
    ``D = y + sigma^2 s`` with ``s`` homogeneous of degree -1, chapter "What the referees asked").
    ``symmetric``: ``J`` is known to be symmetric (a joint model's ``J = I + sigma^2 H``), so
    ``J y = J^T y`` costs one backward pass fewer."""
    if relative_to not in ("output", "correction"):
        raise ValueError(f"relative_to must be 'output' or 'correction', got {relative_to!r}")
    with torch.no_grad():
        d = fn(y).detach() if not symmetric else None
    if symmetric:
        with torch.enable_grad():
            yy = y.detach().requires_grad_(True)
            out = fn(yy)
            (jy,) = torch.autograd.grad(out, yy, grad_outputs=y.detach())
        d, jy = out.detach(), jy.detach()
    else:
        jy = jacobian_vector(fn, y, y)
    ref = d if relative_to == "output" else d - y.detach()
    return (d - jy).flatten(1).norm(dim=1) / ref.flatten(1).norm(dim=1)


def joint_denoiser_fn(model: JointModel, sigma: float, c: int | None = None) -> Callable[[torch.Tensor], torch.Tensor]:
    """``y -> D(y)`` (or ``D(y, c)``) of a joint model at a fixed ``sigma``, differentiable in ``y``
    (``create_graph=True``), for ``jacobian`` and ``local_linearity_error``."""
    def fn(y):
        cc = None if c is None else torch.full((y.shape[0],), int(c), device=y.device, dtype=torch.long)
        return model.denoise(y, sigma, cc, create_graph=True)
    return fn


@dataclass
class JacobianResult:
    """The eigen-decomposition of one (symmetrised) Jacobian: ``eigenvalues`` in decreasing order,
    ``eigenvectors`` as images (k, C, H, W) for the first ``k``, ``trace``, ``asymmetry`` =
    ||J - J^T|| / ||J|| (Frobenius), ``seconds`` to compute J and ``eig_seconds`` for the eigh."""

    eigenvalues: torch.Tensor
    eigenvectors: torch.Tensor
    trace: float
    asymmetry: float
    seconds: float
    eig_seconds: float


def jacobian_analysis(fn: Callable[[torch.Tensor], torch.Tensor], y: torch.Tensor, k: int = 8,
                      chunk: int = 256) -> JacobianResult:
    """Full Jacobian of ``fn`` at one image ``y`` (1, C, H, W), its asymmetry, and the eigenvalues
    and first ``k`` eigenvectors of its symmetric part (``torch.linalg.eigh`` in float64)."""
    t0 = time.perf_counter()
    J = jacobian(fn, y, chunk).double()
    t1 = time.perf_counter()
    asym = ((J - J.T).norm() / J.norm()).item()
    vals, vecs = torch.linalg.eigh(0.5 * (J + J.T))
    order = torch.argsort(vals, descending=True)
    vals, vecs = vals[order], vecs[:, order[:k]]
    t2 = time.perf_counter()
    return JacobianResult(vals, vecs.T.reshape(k, *y.shape[1:]).float(), float(torch.trace(J)), asym, t1 - t0, t2 - t1)


def eigenvector_images(vectors: torch.Tensor) -> torch.Tensor:
    """Eigenvectors (k, C, H, W) rescaled for display: each to [0, 1] with 0.5 at zero."""
    m = vectors.flatten(1).abs().amax(1).clamp_min(1e-12).view(-1, *([1] * (vectors.ndim - 1)))
    return 0.5 + 0.5 * vectors / m


# ------------------------------------------------------------- generative vs discriminative --

@dataclass
class GaussianProblem:
    """Two classes ``x | c ~ N(mu_c, Sigma)`` in R^d with prior ``p(c = 1) = pi1``. The posterior is
    logistic, ``p(c = 1 | x) = sigmoid(w.x + b)``, with ``w = Sigma^{-1}(mu1 - mu0)`` and
    ``b = -(mu1 Sigma^{-1} mu1 - mu0 Sigma^{-1} mu0)/2 + log(pi1 / (1 - pi1))``."""

    mu0: np.ndarray
    mu1: np.ndarray
    cov: np.ndarray
    pi1: float = 0.5

    @classmethod
    def make(cls, d: int = 5, separation: float = 2.0, seed: int = 0, pi1: float = 0.5) -> "GaussianProblem":
        """A problem with a random covariance (eigenvalues in [0.5, 2]) and Mahalanobis distance
        ``separation`` between the class means."""
        rng = np.random.default_rng(seed)
        q, _ = np.linalg.qr(rng.standard_normal((d, d)))
        cov = q @ np.diag(np.linspace(0.5, 2.0, d)) @ q.T
        u = rng.standard_normal(d)
        u *= separation / math.sqrt(u @ np.linalg.solve(cov, u))
        return cls(-u / 2, u / 2, cov, pi1)

    @property
    def dim(self) -> int:
        return len(self.mu0)

    @property
    def true_params(self) -> tuple[np.ndarray, float]:
        w = np.linalg.solve(self.cov, self.mu1 - self.mu0)
        b = -0.5 * (self.mu1 @ np.linalg.solve(self.cov, self.mu1) - self.mu0 @ np.linalg.solve(self.cov, self.mu0))
        return w, b + math.log(self.pi1 / (1 - self.pi1))

    def sample(self, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        c = (rng.random(n) < self.pi1).astype(np.int64)
        z = rng.standard_normal((n, self.dim)) @ np.linalg.cholesky(self.cov).T
        return np.where(c[:, None] == 1, self.mu1, self.mu0) + z, c

    def error(self, w: np.ndarray, b: float) -> float:
        """The exact test error of the rule ``c = 1 iff w.x + b > 0``: w.x + b is Gaussian given c."""
        from scipy.stats import norm

        s = math.sqrt(max(w @ self.cov @ w, 1e-300))
        e1 = norm.cdf(-(w @ self.mu1 + b) / s)  # class 1 predicted 0
        e0 = norm.sf(-(w @ self.mu0 + b) / s)   # class 0 predicted 1
        return float(self.pi1 * e1 + (1 - self.pi1) * e0)


def lda_fit(x: np.ndarray, c: np.ndarray) -> tuple[np.ndarray, float]:
    """The generative estimator: maximum likelihood of the joint ``p(x, c)`` (class means, pooled
    covariance, class frequencies), read out as the logistic parameters of its posterior."""
    n = len(c)
    m0, m1 = x[c == 0].mean(0), x[c == 1].mean(0)
    r = np.where(c[:, None] == 1, x - m1, x - m0)
    cov = r.T @ r / n
    w = np.linalg.solve(cov, m1 - m0)
    p1 = c.mean()
    b = -0.5 * (m1 @ np.linalg.solve(cov, m1) - m0 @ np.linalg.solve(cov, m0)) + math.log(p1 / (1 - p1))
    return w, float(b)


def logistic_fit(x: np.ndarray, c: np.ndarray, ridge: float = 1e-6, iters: int = 50) -> tuple[np.ndarray, float]:
    """The discriminative estimator: maximum likelihood of the conditional ``p(c | x)``, logistic
    regression by Newton's method (a tiny ridge keeps it defined when the classes are separable)."""
    n, d = x.shape
    X = np.hstack([x, np.ones((n, 1))])
    theta = np.zeros(d + 1)
    for _ in range(iters):
        p = 1 / (1 + np.exp(-np.clip(X @ theta, -30, 30)))
        grad = X.T @ (p - c) / n + ridge * theta
        H = (X * (p * (1 - p))[:, None]).T @ X / n + ridge * np.eye(d + 1)
        step = np.linalg.solve(H, grad)
        theta -= step
        if np.abs(step).max() < 1e-10:
            break
    return theta[:d], float(theta[d])


def _nll_ece(w, b, x, c, bins: int = 15) -> tuple[float, float]:
    """NLL and ECE (torchmetrics, ``bins`` bins of the max-probability confidence, as in
    ``cdn.evaluate``) of the linear classifier ``p(c=1 | x) = sigmoid(x w + b)``."""
    from torchmetrics.functional.classification import multiclass_calibration_error

    z = x @ w + b
    p1 = 1 / (1 + np.exp(-np.clip(z, -30, 30)))
    nll = float(np.mean(np.logaddexp(0, -z) * c + np.logaddexp(0, z) * (1 - c)))
    probs = torch.from_numpy(np.stack([1 - p1, p1], axis=1)).float()
    ece = multiclass_calibration_error(probs, torch.from_numpy(np.asarray(c)).long(), 2, n_bins=bins).item()
    return nll, float(ece)


def logistic_fisher_inverse(problem: GaussianProblem, n_mc: int = 200_000, seed: int = 0) -> np.ndarray:
    """``I^{-1}`` with ``I = E[p(1-p) x~ x~^T]`` (x~ = (x, 1)) at the true parameters, by Monte Carlo:
    the asymptotic covariance of ``sqrt(n)`` times the logistic-regression error (well specified)."""
    x, _ = problem.sample(n_mc, np.random.default_rng(seed))
    w, b = problem.true_params
    X = np.hstack([x, np.ones((n_mc, 1))])
    p = 1 / (1 + np.exp(-(X @ np.append(w, b))))
    return np.linalg.inv((X * (p * (1 - p))[:, None]).T @ X / n_mc)


def compare_estimators(problem: GaussianProblem, ns, reps: int = 20, n_test: int = 20_000, seed: int = 0) -> list[dict]:
    """For each training size n and each estimator (``generative`` = LDA, ``discriminative`` =
    logistic regression), averaged over ``reps`` training sets: the exact test error, its excess over
    the Bayes error, test NLL and ECE (on ``n_test`` fresh samples), and ``n * E||theta_hat -
    theta||^2`` (the scaled parameter error, whose limit is the trace of the asymptotic covariance)."""
    rng = np.random.default_rng(seed)
    w_true, b_true = problem.true_params
    theta_true = np.append(w_true, b_true)
    bayes = problem.error(w_true, b_true)
    x_test, c_test = problem.sample(n_test, rng)
    rows = []
    for n in ns:
        acc = {m: [] for m in ("generative", "discriminative")}
        for _ in range(reps):
            while True:
                x, c = problem.sample(int(n), rng)
                if 2 <= c.sum() <= n - 2:
                    break
            for name, fit in (("generative", lda_fit), ("discriminative", logistic_fit)):
                w, b = fit(x, c)
                nll, ece = _nll_ece(w, b, x_test, c_test)
                acc[name].append((problem.error(w, b), nll, ece, float(np.sum((np.append(w, b) - theta_true) ** 2))))
        for name, vals in acc.items():
            v = np.array(vals)
            rows.append({"n": int(n), "estimator": name, "error": v[:, 0].mean(), "excess error": v[:, 0].mean() - bayes,
                         "nll": v[:, 1].mean(), "ece": v[:, 2].mean(), "n * param mse": n * v[:, 3].mean(),
                         "bayes error": bayes})
    return rows


# ------------------------------------------------------------------------------ costs --

def parameter_counts(net: nn.Module) -> dict[str, int]:
    """Parameters per top-level child of ``net`` and in total."""
    out = {name: sum(p.numel() for p in child.parameters()) for name, child in net.named_children()}
    out = {k: v for k, v in out.items() if v}
    out["total"] = sum(p.numel() for p in net.parameters())
    return out


def pass_times(net: nn.Module, shape: tuple[int, ...], num_classes: int, repeats: int = 3, seed: int = 0) -> dict[str, float]:
    """Median wall time (s) on the CPU of: a forward pass (logits), a forward + backward pass to the
    input (a denoising ``D(y)``), a cross-entropy training step (forward + backward to the
    parameters) and a joint training step (``JointLoss``: forward, backward with ``create_graph``,
    backward through it: the double backward), for a batch of random inputs of ``shape``."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(shape, generator=g)
    c = torch.randint(0, num_classes, (shape[0],), generator=g)
    model = JointModel(net).train()
    joint = JointLoss()

    def fwd():
        with torch.no_grad():
            model.logits(x)

    def den():
        model.denoise(x, 0.1)

    def ce_step():
        net.zero_grad(set_to_none=True)
        torch.nn.functional.cross_entropy(model.logits(x), c).backward()

    def joint_step():
        net.zero_grad(set_to_none=True)
        joint(model, x, c, g)[0].backward()

    out = {}
    for name, f in (("forward", fwd), ("denoise (forward + backward)", den), ("cross-entropy step", ce_step),
                    ("joint step (double backward)", joint_step)):
        f()  # warm-up
        ts = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            f()
            ts.append(time.perf_counter() - t0)
        out[name] = float(np.median(ts))
    net.zero_grad(set_to_none=True)
    net.eval()
    return out


__all__ = ["GaussianProblem", "JacobianResult", "MixtureMLP", "compare_estimators", "eigenvector_images", "grid2d",
           "jacobian", "jacobian_analysis", "jacobian_vector", "joint_denoiser_fn", "lda_fit", "learned_fields",
           "local_linearity_error", "logistic_fisher_inverse", "logistic_fit", "mixture_denoiser_errors",
           "mixture_fields", "parameter_counts", "pass_times", "train_mixture_model"]


# ------------------------------------------------------------------------------ figures --

#: per-profile sizes of the theory chapters (smoke: seconds; quick: the 2-core machine)
THEORY_SETTINGS = {
    "smoke": dict(mixture_steps=150, grid=11, n_eval=500, jac_crop=16, jac_sigmas=(0.1,), jac_full=None,
                  jac_images=1, ll_images=4, gd_ns=(20, 100, 1000), gd_reps=4, gd_test=5000, fisher_mc=20_000,
                  ablation_overrides={}, ablation_models=("gradresnet-logenergy", "gradresnet-relu"), timing_repeats=1,
                  blind_dims=(2, 32, 512), blind_n=50),
    "quick": dict(mixture_steps=2000, grid=13, n_eval=4000, jac_crop=16, jac_sigmas=(0.02, 0.05, 0.1, 0.2, 0.4),
                  jac_full=32, jac_images=2, ll_images=32, gd_ns=(20, 50, 100, 300, 1000, 3000), gd_reps=100,
                  gd_test=50_000, fisher_mc=400_000,
                  # the GradResNet ablation trains five models: a shortened schedule on the 2-core machine
                  ablation_overrides=dict(steps=100, warmup_steps=10, test_size=500, checkpoint_every=50),
                  # one-switch ablations of the architecture they were built from (the 3x3 log-energy head)
                  ablation_models=("gradresnet-logenergy", "gradresnet-relu", "gradresnet-batchnorm",
                                   "gradresnet-noside", "gradresnet-nologenergy"),
                  timing_repeats=3, blind_dims=(2, 8, 32, 128, 512, 3072), blind_n=300),
}
THEORY_SETTINGS["paper"] = dict(THEORY_SETTINGS["quick"], ablation_overrides={})
# the cpu profile: quick's sizes, and quick's ablation runs themselves (ablation_profile): five models of the
# profile's own recipe would take its whole 3-hour budget again
THEORY_SETTINGS["cpu"] = dict(THEORY_SETTINGS["quick"], ablation_profile="quick")
for _name, _settings in THEORY_SETTINGS.items():
    _settings.setdefault("ablation_profile", _name)


def theory_settings(profile: str) -> dict:
    """The sizes the theory chapters use in ``profile`` (``THEORY_SETTINGS``); ``ablation_profile`` is the
    profile whose runs chapter 10's ablation trains or reuses (``quick`` for a ``cpu`` build)."""
    if profile not in THEORY_SETTINGS:
        raise ValueError(f"unknown profile {profile!r}; expected one of {', '.join(THEORY_SETTINGS)}")
    return dict(THEORY_SETTINGS[profile])


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


def jacobian_sweep(model: JointModel, x: torch.Tensor, sigmas, c: torch.Tensor | None = None, k: int = 8,
                   seed: int = 0, chunk: int = 256) -> list[dict]:
    """For each clean image of ``x`` (B, C, H, W) and each sigma: one noisy ``y`` (fixed seed), the full
    Jacobian of ``D(y)`` (and, when ``c`` (B,) is given, of ``D(y, c)``) and its analysis. Returns rows
    ``{"image", "sigma", "denoiser", "result": JacobianResult, "mse": ||D(y) - x||^2 / d,
    "posterior_variance": sigma^2 trace(J) / d, "sure": (||D(y) - y||^2 + 2 sigma^2 trace(J)) / d - sigma^2}``.
    ``posterior_variance`` equals the expected MSE for the optimal denoiser only (``J = Cov[x | y] / sigma^2``);
    ``sure``, Stein's unbiased risk estimate, has the expected MSE as its expectation for any (weakly
    differentiable) denoiser, computed from ``y`` alone."""
    g = torch.Generator().manual_seed(seed)
    rows = []
    for i in range(x.shape[0]):
        xi = x[i:i + 1]
        for s in sigmas:
            y = xi + float(s) * torch.randn(xi.shape, generator=g)
            for name, cls in (("D(y)", None), ("D(y,c)", None if c is None else int(c[i]))):
                if name == "D(y,c)" and cls is None:
                    continue
                fn = joint_denoiser_fn(model, float(s), cls)
                res = jacobian_analysis(fn, y, k, chunk)
                d = xi[0].numel()
                out = fn(y).detach()
                mse = (out - xi).pow(2).mean().item()
                sure = ((out - y).pow(2).sum().item() + 2 * float(s) ** 2 * res.trace) / d - float(s) ** 2
                rows.append({"image": i, "sigma": float(s), "denoiser": name, "result": res, "mse": mse,
                             "posterior_variance": float(s) ** 2 * res.trace / d, "sure": sure})
    return rows
