"""Sampling from the joint model's denoisers (chapter "Generation and out-of-distribution detection").

The joint model holds a score at every noise level, ``grad_y log p_sigma(y)`` (and, given a class,
``grad_y log p_sigma(y, c)``), so it is a generative model too. Two samplers:

* ``coarse_to_fine``: the stochastic coarse-to-fine ascent of Kadkhodaie & Simoncelli (2021) for
  noise-blind denoisers. From ``y_0 ~ N(0.5, sigma_0^2 I)``, with the residual ``d_t = D(y_{t-1}) -
  y_{t-1}`` and the effective noise level ``sigma_t = ||d_t|| / sqrt(N)``::

      h_t       = h0 t / (1 + h0 (t - 1))
      gamma_t^2 = ((1 - beta h_t)^2 - (1 - h_t)^2) sigma_t^2
      y_t       = y_{t-1} + h_t d_t + gamma_t z_t,     z_t ~ N(0, I)

  until ``sigma_t < sigma_stop``. ``beta = 1`` is deterministic ascent; ``beta < 1`` injects noise.
  Each step shrinks the effective noise by about ``1 - beta h_t``.

* ``edm_sample``: the probability-flow ODE (Heun, Karras et al. 2022, Algorithm 1) or the
  reverse-time SDE (Euler-Maruyama) of the variance-exploding diffusion ``sigma(t) = t``::

      ODE:  dy/dsigma = (y - D(y; sigma)) / sigma
      SDE:  y_{i+1} = y_i + (sigma_i^2 - sigma_{i+1}^2) s_i + sqrt(sigma_i^2 - sigma_{i+1}^2) z,
            s_i = (D(y_i; sigma_i) - y_i) / sigma_i^2

  on the EDM schedule ``sigma_i = (smax^(1/rho) + i/(n-1) (smin^(1/rho) - smax^(1/rho)))^rho``.
  Exact for exact denoisers as the step count grows (tested on a Gaussian mixture).

Class conditioning and guidance (both samplers): with a guidance scale ``w >= 0``,

    D_w(y, c) = D(y) + w (D(y, c) - D(y)) = D(y) + w sigma^2 grad_y log p(c | y)

``w = 0`` is unconditional, ``w = 1`` the class-conditional denoiser ``D(y, c)`` (one backward
pass), ``w > 1`` amplifies the class term (two backward passes).

For a noise-blind net the noise level of ``y`` is not given; its score is about
``-(y - x) / sigma^2`` so ``sigma_hat = sqrt(N) / ||score||`` and the residual is
``D(y) - y = sigma_hat^2 score`` (so that ``||D(y) - y|| / sqrt(N) = sigma_hat``). A
noise-conditioned net (``net.noise_conditioning``) is given the current ``sigma_{t-1}`` instead.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from ..joint import JointModel, check_image


@dataclass
class SampleResult:
    """Samples (B, ...) and, when asked for, a trajectory: ``trajectory`` (T, B, ...) of the iterates
    every ``record_every`` steps (``trajectory_steps``) with their noise levels ``trajectory_sigmas``
    (T, B); ``sigmas`` (B,) the final effective noise levels and ``steps`` (B,) the number of steps
    taken (per sample for ``coarse_to_fine``)."""

    samples: torch.Tensor
    sigmas: torch.Tensor
    steps: torch.Tensor
    trajectory: torch.Tensor | None = None
    trajectory_steps: list[int] = field(default_factory=list)
    trajectory_sigmas: torch.Tensor | None = None


def _check_classes(c, batch: int, num_classes: int, device) -> torch.Tensor | None:
    if c is None:
        return None
    if isinstance(c, int):
        c = torch.full((batch,), c, dtype=torch.long)
    if not isinstance(c, torch.Tensor) or c.dtype not in (torch.int64, torch.int32) or c.shape != (batch,):
        raise ValueError(f"c must be an int or an integer tensor of shape ({batch},), got "
                         f"{getattr(c, 'dtype', type(c).__name__)} {tuple(getattr(c, 'shape', ()))}")
    if (c < 0).any() or (c >= num_classes).any():
        bad = c[(c < 0) | (c >= num_classes)].tolist()[:4]
        raise ValueError(f"unknown class {bad}: c must lie in [0, {num_classes - 1}]")
    return c.long().to(device)


def _check_common(model, shape, guidance, c) -> None:
    if not isinstance(model, JointModel):
        raise ValueError(f"model must be a cdn.joint.JointModel, got {type(model).__name__}")
    if not isinstance(shape, (tuple, list, torch.Size)) or len(shape) < 2 or any(int(s) < 1 for s in shape):
        raise ValueError(f"shape must be (B, C, H, W) or (B, d) with positive sizes, got {shape!r}")
    if not math.isfinite(guidance) or guidance < 0:
        raise ValueError(f"guidance must be a finite number >= 0, got {guidance!r}")


def _num_classes(model: JointModel, shape, device, dtype) -> int:
    y = torch.full(tuple(shape), 0.5, device=device, dtype=dtype)[:1]
    sigma = torch.ones(1, device=device, dtype=dtype) if model.noise_conditioned else None
    with torch.no_grad():
        return model.logits(y, sigma).shape[1]


def guided_score(model: JointModel, y: torch.Tensor, sigma, c: torch.Tensor | None, guidance: float) -> torch.Tensor:
    """``grad_y [log p(y) + w log p(c | y)]``: ``score(y)`` for ``w = 0`` or no class, ``score(y, c)``
    for ``w = 1``, ``(1 - w) score(y) + w score(y, c)`` otherwise. Multiplied by ``sigma^2`` it is
    the residual ``D_w(y, c) - y`` of the guided denoiser."""
    if c is None or guidance == 0:
        return model.score(y, sigma)
    if guidance == 1:
        return model.score(y, sigma, c)
    return (1 - guidance) * model.score(y, sigma) + guidance * model.score(y, sigma, c)


def guided_denoise(model: JointModel, y: torch.Tensor, sigma: torch.Tensor, c=None, guidance: float = 1.0) -> torch.Tensor:
    """``D_w(y, c) = D(y) + w (D(y, c) - D(y))`` at noise level ``sigma`` (shape (B,))."""
    s = guided_score(model, y, sigma, c, guidance)
    return y + sigma.view(-1, *([1] * (y.ndim - 1))) ** 2 * s


def coarse_to_fine(model: JointModel, shape, c=None, guidance: float = 1.0, h0: float = 0.01, beta: float = 0.5,
                   sigma0: float = 1.0, sigma_stop: float = 0.01, max_steps: int = 1000, mean: float = 0.5,
                   generator: torch.Generator | None = None, device=None, dtype=torch.float32,
                   record_every: int | None = None) -> SampleResult:
    """Stochastic coarse-to-fine ascent (Kadkhodaie & Simoncelli 2021, Algorithm 1; formulas in the
    module docstring) from ``y_0 ~ N(mean, sigma0^2 I)`` of ``shape`` (B, C, H, W) or (B, d).

    ``c``: None (unconditional) or a class (int or (B,) tensor) with guidance scale ``guidance``
    (``D(y) + guidance (D(y, c) - D(y))``). Each sample stops on its own when its effective noise
    level falls below ``sigma_stop`` (or after ``max_steps``); its last iterate is returned, denoised
    once more (``y + r``, the Tweedie estimate). ``record_every``: keep the iterates every that many
    steps (and the last) in ``trajectory``. Seeded by ``generator`` (a CPU generator).
    Used in chapter "Generation and out-of-distribution detection".
    """
    _check_common(model, shape, guidance, c)
    for name, v in (("h0", h0), ("beta", beta)):
        if not (0 < v <= 1):
            raise ValueError(f"{name} must lie in (0, 1], got {v!r}")
    if not (0 < sigma_stop < sigma0):
        raise ValueError(f"need 0 < sigma_stop < sigma0, got sigma_stop={sigma_stop!r}, sigma0={sigma0!r}")
    if int(max_steps) <= 0:
        raise ValueError(f"max_steps must be >= 1, got {max_steps!r}")
    if record_every is not None and int(record_every) <= 0:
        raise ValueError(f"record_every must be >= 1, got {record_every!r}")
    device = torch.device(device) if device is not None else next(model.parameters(), torch.empty(0)).device
    shape = tuple(int(s) for s in shape)
    batch, n_dim = shape[0], math.prod(shape[1:])
    c = _check_classes(c, batch, _num_classes(model, shape, device, dtype), device) if c is not None else None
    view = (-1, *([1] * (len(shape) - 1)))

    y = (mean + sigma0 * torch.randn(shape, generator=generator, dtype=dtype)).to(device)
    sigma = torch.full((batch,), float(sigma0), device=device, dtype=dtype)
    active = torch.ones(batch, dtype=torch.bool, device=device)
    steps = torch.zeros(batch, dtype=torch.long)
    out = y.clone()
    traj, traj_sig, traj_steps = [], [], []

    def residual(yy, sig, cc):
        if model.noise_conditioned:
            s = guided_score(model, yy, sig, cc, guidance)
            return sig.view(view) ** 2 * s
        s = guided_score(model, yy, None, cc, guidance)
        norm2 = s.flatten(1).pow(2).sum(1).clamp_min(1e-30)
        return (n_dim / norm2).view(view) * s  # sigma_hat^2 * score, sigma_hat = sqrt(N) / ||score||

    for t in range(1, int(max_steps) + 1):
        idx = active.nonzero().flatten()
        if idx.numel() == 0:
            break
        yy = y[idx]
        r = residual(yy, sigma[idx], None if c is None else c[idx])
        sig_t = r.flatten(1).norm(dim=1) / math.sqrt(n_dim)
        done = sig_t < sigma_stop
        h = h0 * t / (1 + h0 * (t - 1))
        gamma2 = ((1 - beta * h) ** 2 - (1 - h) ** 2) * sig_t ** 2
        z = torch.randn(yy.shape, generator=generator, dtype=dtype).to(device)
        y_new = yy + h * r + gamma2.clamp_min(0).sqrt().view(view) * z
        # finished samples: keep their Tweedie estimate y + r (effective sigma below sigma_stop)
        y_new = torch.where(done.view(view), yy + r, y_new)
        y[idx] = y_new
        sigma[idx] = sig_t
        steps[idx.cpu()] = t
        fin = idx[done]
        out[fin] = y[fin]
        active[fin] = False
        if record_every is not None and (t % int(record_every) == 0 or t == 1):
            traj.append(y.detach().cpu().clone())
            traj_sig.append(sigma.detach().cpu().clone())
            traj_steps.append(t)
    out[active] = y[active]
    if record_every is not None:
        traj.append(out.detach().cpu().clone())
        traj_sig.append(sigma.detach().cpu().clone())
        traj_steps.append(int(steps.max()))
    return SampleResult(out.detach(), sigma.detach().cpu(), steps,
                        torch.stack(traj) if traj else None, traj_steps,
                        torch.stack(traj_sig) if traj_sig else None)


def edm_sigmas(steps: int, sigma_min: float = 0.002, sigma_max: float = 80.0, rho: float = 7.0) -> torch.Tensor:
    """The EDM noise levels ``sigma_0 > ... > sigma_{n-1} = sigma_min`` followed by 0 (``n + 1``
    values): ``sigma_i = (smax^(1/rho) + i/(n-1) (smin^(1/rho) - smax^(1/rho)))^rho`` (Karras et al.
    2022, eq. 5)."""
    if int(steps) <= 0:
        raise ValueError(f"steps must be >= 1, got {steps!r}")
    if not (0 < sigma_min < sigma_max):
        raise ValueError(f"need 0 < sigma_min < sigma_max, got {sigma_min!r}, {sigma_max!r}")
    steps = int(steps)
    i = torch.arange(steps, dtype=torch.float64)
    frac = i / max(steps - 1, 1)
    s = (sigma_max ** (1 / rho) + frac * (sigma_min ** (1 / rho) - sigma_max ** (1 / rho))) ** rho
    return torch.cat([s, torch.zeros(1, dtype=torch.float64)])


def edm_sample(model: JointModel, shape, c=None, guidance: float = 1.0, steps: int = 40, method: str = "heun",
               sigma_min: float = 0.002, sigma_max: float = 80.0, rho: float = 7.0, mean=0.5,
               generator: torch.Generator | None = None, device=None, dtype=torch.float32,
               record_every: int | None = None) -> SampleResult:
    """EDM-style sampling of ``shape`` (B, C, H, W) or (B, d) from ``y_0 ~ N(mean, sigma_max^2 I)``
    along ``edm_sigmas(steps, ...)`` with the (guided) Tweedie denoiser ``D_w(y, c; sigma)``.

    ``method``: ``"heun"`` (probability-flow ODE, second order, Karras et al. 2022, Algorithm 1:
    ``2 steps - 1`` denoiser calls) or ``"euler_maruyama"`` (reverse SDE with injected noise, the last
    step a plain Tweedie denoising). Written for noise-conditioned nets (``net.noise_conditioning``);
    a noise-blind net is given the schedule's sigma in ``D(y) = y + sigma^2 score(y)``. Formulas in the
    module docstring; chapter "Generation and out-of-distribution detection".
    """
    _check_common(model, shape, guidance, c)
    if method not in ("heun", "euler_maruyama"):
        raise ValueError(f"method must be 'heun' or 'euler_maruyama', got {method!r}")
    if record_every is not None and int(record_every) <= 0:
        raise ValueError(f"record_every must be >= 1, got {record_every!r}")
    t_steps = edm_sigmas(steps, sigma_min, sigma_max, rho)
    device = torch.device(device) if device is not None else next(model.parameters(), torch.empty(0)).device
    shape = tuple(int(s) for s in shape)
    batch = shape[0]
    c = _check_classes(c, batch, _num_classes(model, shape, device, dtype), device) if c is not None else None
    mean = torch.as_tensor(mean, dtype=dtype)
    y = (mean + float(t_steps[0]) * torch.randn(shape, generator=generator, dtype=dtype)).to(device)
    traj, traj_sig, traj_steps = [], [], []

    def denoise(yy, s):
        return guided_denoise(model, yy, torch.full((batch,), s, device=device, dtype=dtype), c, guidance)

    n = len(t_steps) - 1
    for i in range(n):
        t_cur, t_next = float(t_steps[i]), float(t_steps[i + 1])
        d_cur = denoise(y, t_cur)
        if method == "heun":
            slope = (y - d_cur) / t_cur
            y_next = y + (t_next - t_cur) * slope
            if t_next > 0:
                slope2 = (y_next - denoise(y_next, t_next)) / t_next
                y_next = y + (t_next - t_cur) * 0.5 * (slope + slope2)
        else:
            if t_next > 0:
                var = t_cur ** 2 - t_next ** 2
                z = torch.randn(shape, generator=generator, dtype=dtype).to(device)
                y_next = y + var / t_cur ** 2 * (d_cur - y) + math.sqrt(var) * z
            else:
                y_next = d_cur
        y = y_next.detach()
        if record_every is not None and ((i + 1) % int(record_every) == 0 or i == 0 or i == n - 1):
            traj.append(y.cpu().clone())
            traj_sig.append(torch.full((batch,), t_next))
            traj_steps.append(i + 1)
    return SampleResult(y, torch.zeros(batch), torch.full((batch,), n, dtype=torch.long),
                        torch.stack(traj) if traj else None, traj_steps,
                        torch.stack(traj_sig) if traj_sig else None)


def sample_accuracy(model: JointModel, samples: torch.Tensor, c: torch.Tensor, sigma=None,
                    batch_size: int = 256) -> float:
    """Fraction of ``samples`` that the model's own classifier assigns to the class ``c`` they were
    drawn for (``argmax_c p(c | y)``): a simple fidelity measure of class-conditional samples."""
    check_image(samples, "samples")
    if not isinstance(c, torch.Tensor) or c.shape != (samples.shape[0],):
        raise ValueError(f"c must be a tensor of shape ({samples.shape[0]},)")
    device = next(model.parameters(), torch.empty(0)).device
    hits = 0
    with torch.no_grad():
        for i in range(0, len(samples), batch_size):
            yb = samples[i:i + batch_size].to(device)
            sig = sigma if sigma is None or not isinstance(sigma, torch.Tensor) else sigma[i:i + batch_size]
            pred = model.classify(yb, sig).argmax(1).cpu()
            hits += int((pred == c[i:i + batch_size].cpu()).sum())
    return hits / len(samples)


__all__ = ["SampleResult", "coarse_to_fine", "edm_sample", "edm_sigmas", "guided_denoise", "guided_score",
           "sample_accuracy"]
