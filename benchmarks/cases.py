"""The benchmark cases and the function that times one of them (in its own spawned process, so it
lives in an importable module rather than in ``__main__``)."""
from __future__ import annotations

import resource
import statistics
import time

CASES = [  # name, architecture, objective
    ("gradresnet-ce", "gradresnet", "ce"),
    ("gradresnet-joint", "gradresnet", "joint"),
    ("resnet18-ce", "resnet18", "ce"),
    ("unet-mse", "unet", "mse"),
    ("jem-sgld-k5", "gradresnet", "jem5"),
    ("jem-sgld-k20", "gradresnet", "jem20"),
    ("classify-forward", "gradresnet", "infer_classify"),
    ("denoise-forward-backward", "gradresnet", "infer_denoise"),
]


def _one(args) -> dict:
    name, arch, objective, width, batch, size, reps, device = args
    import torch

    from cdn.joint import JointModel
    from cdn.losses import CrossEntropyLoss, DenoisingMSELoss, JointLoss
    from cdn.nets import build_net

    torch.manual_seed(0)
    dev = torch.device(device)
    net = build_net(arch, 10, 3, width).to(dev)
    model = JointModel(net)
    opt = torch.optim.AdamW(net.parameters(), 1e-3)
    x = torch.rand(batch, 3, size, size, device=dev)
    c = torch.randint(0, 10, (batch,), device=dev)

    def step():
        if objective.startswith("infer"):
            with torch.no_grad():
                if objective == "infer_classify":
                    model.classify(x)
                else:
                    model.denoise(x, 0.1)
            return
        if objective == "ce":
            loss, _ = CrossEntropyLoss()(model, x, c)
        elif objective == "joint":
            loss, _ = JointLoss()(model, x, c)
        elif objective == "mse":
            loss, _ = DenoisingMSELoss()(net, x)
        else:  # JEM: K SGLD steps from noise, then CE + contrastive energy loss
            k = int(objective[3:])
            xs = torch.rand_like(x) * 2 - 1
            for _ in range(k):
                g = model.score(xs)
                xs = (xs + 1.0 * g + 0.01 * torch.randn_like(xs)).detach()
            ce, _ = CrossEntropyLoss()(model, x, c)
            loss = ce - model.log_marginal(x).mean() + model.log_marginal(xs).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    def sync():
        if dev.type == "cuda":
            torch.cuda.synchronize()

    for _ in range(2):
        step()
    sync()
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        step()
        sync()
        times.append(time.perf_counter() - t)
    med = statistics.median(times)
    mem = (torch.cuda.max_memory_allocated() / 2**20 if dev.type == "cuda"
           else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    return {"case": name, "seconds_per_step": med, "images_per_s": batch / med, "peak_memory_mib": mem,
            "memory_kind": "cuda max_memory_allocated" if dev.type == "cuda" else "peak RSS of the process"}
