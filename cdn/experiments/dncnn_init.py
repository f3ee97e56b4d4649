"""Why the bias-free DnCNN starts at the identity (chapter "What the referees asked").

With PyTorch's default initialisation the residual ``R(y)`` of a DnCNN (``D(y) = y - R(y)``) is as large as
the image, and the first steps shrink it by driving the last layer's ReLUs to zero; without biases or a
centred normalisation nothing revives them, and ``D`` stays near the identity. ``init_probe`` trains the
network of ``cdn.profiles`` (model ``dncnn``: DnCNN-B's noise levels, unweighted MSE) for a few steps from either
initialisation and measures the share of the last ReLU layer still active and the loss against the identity's.
"""
from __future__ import annotations

import torch

from ..losses import add_noise
from ..profiles import get_config
from ..train import make_loss, make_net, make_optimizer, train_step


def init_probe(images: torch.Tensor, steps: int, zero_last: bool, lr: float = 1e-3, width: int = 16,
               batch: int = 32, seed: int = 0) -> dict[str, float]:
    """Train a bias-free DnCNN on batches of ``images`` (N, C, H, W) in [0, 1] for ``steps`` steps of ``batch`` at
    ``lr`` (``cdn.train.train_step``), its last convolution at zero (``zero_last``, the package's initialisation)
    or PyTorch's default. Measured on the first ``batch`` images with noise of a fixed seed, in evaluation mode:
    ``last_relu_active``, the fraction of the last ReLU layer's outputs that are > 0, and ``loss_over_identity``,
    ``sum ||D(y) - x||^2 / sum ||y - x||^2`` (1: the identity; 0: a perfect denoiser)."""
    if images.ndim != 4 or len(images) < 2 * batch:
        raise ValueError(f"need images of shape (N, C, H, W) with N >= 2 * batch = {2 * batch}, got {tuple(images.shape)}")
    if steps < 0:
        raise ValueError(f"steps must be >= 0, got {steps}")
    config = get_config("quick", "dncnn", width=width, batch_size=batch, lr=lr, seed=seed, steps=max(steps, 1))
    net = make_net(config, 1, images.shape[1])
    if not zero_last:
        net.residual[-1].reset_parameters()  # PyTorch's default initialisation of the last convolution
    loss_fn, optimizer = make_loss(config), make_optimizer(net, config, images.device)
    generator = torch.Generator().manual_seed(seed)
    held_out, pool = images[:batch], images[batch:]
    net.train()
    for _ in range(steps):
        idx = torch.randint(len(pool), (batch,), generator=generator)
        train_step(net, loss_fn, optimizer, pool[idx], None, generator, lr=lr, params=net.parameters())
    net.eval()
    active = []
    hook = net.residual[-2].register_forward_hook(lambda m, i, out: active.append((out > 0).float().mean().item()))
    try:
        sigma = loss_fn.sampler(batch, torch.Generator().manual_seed(seed + 1), images.device)
        y, _ = add_noise(held_out, sigma, torch.Generator().manual_seed(seed + 2))
        with torch.no_grad():
            d = net(y)
    finally:
        hook.remove()
    return {"last_relu_active": active[0],
            "loss_over_identity": float((d - held_out).pow(2).sum() / (y - held_out).pow(2).sum())}
