"""Tweedie-Miyasawa on a Gaussian mixture (chapter "Tweedie"): the exact fields ``E[x | y]``, the score and
the class posteriors in closed form (``cdn.mixture``), a small joint model trained on the mixture, and its
denoising error against the exact one."""
from __future__ import annotations


import torch
from torch import nn

from ..joint import JointModel
from ..losses import JointLoss, SigmaSampler, add_noise
from ..mixture import GaussianMixture, MixtureLogits
from ..train import train_step

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
    with a cosine schedule, float32, each step ``cdn.train.train_step``. Returns the model (eval mode) and the loss log (every 10 steps)."""
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
        loss, terms = train_step(model, loss_fn, opt, x.float(), c, g)
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
