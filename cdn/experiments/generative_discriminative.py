"""Generative against discriminative classifiers on two Gaussian classes (chapter "Generative and
discriminative"): LDA (the generative fit) against logistic regression, their excess risk against the
number of samples, and the asymptotic variances (Efron 1975; Ng and Jordan 2002)."""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch


# ---------------------------------------------------------------------- Tweedie on a mixture --


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
