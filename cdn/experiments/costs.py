"""The cost of one network: parameter counts and the wall time of a forward pass, a backward pass and the
joint model's double backward (chapter "Efficiency")."""
from __future__ import annotations

import time

import numpy as np
import torch
from torch import nn

from ..joint import JointModel
from ..losses import JointLoss

# ---------------------------------------------------------------------- Tweedie on a mixture --


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
