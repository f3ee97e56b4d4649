"""The benchmark cases and the function that times one of them (in its own spawned process, so it
lives in an importable module rather than in ``__main__``).

A case is ``(name, architecture, objective, options)``. Objectives: ``ce``, ``joint``, ``mse``
(training steps of ``cdn.losses``), ``jem`` (one update of ``cdn.baselines.jem.JEMTrainer`` with
``options["k"]`` SGLD steps), ``infer_classify`` / ``infer_denoise`` (per-batch inference),
``joint_func`` (the same joint step written with ``torch.func``, ``cdn.compiled``),
``data_fast`` / ``data_plain`` (one training batch from a CIFAR-sized uint8 tensor: the batched
path ``cdn.data.fast_batch`` or the per-image ``cdn.plain_data`` DataLoader). Options: ``threads``
(torch threads of this case), ``compile`` (``torch.compile`` the network, or for ``joint_func``
the whole loss function; the first step's time,
compilation included, is reported as ``compile_s``; a failure is reported with its error).
"""
from __future__ import annotations

import resource
import statistics
import time

CASES = [  # name, architecture, objective, options
    ("gradresnet-ce", "gradresnet", "ce", {}),
    ("gradresnet-joint", "gradresnet", "joint", {}),
    ("resnet18-ce", "resnet18", "ce", {}),
    ("unet-mse", "unet", "mse", {}),
    ("jem-k5", "gradresnet", "jem", {"k": 5}),
    ("jem-k20", "gradresnet", "jem", {"k": 20}),
    ("classify-forward", "gradresnet", "infer_classify", {}),
    ("denoise-forward-backward", "gradresnet", "infer_denoise", {}),
    ("data-fast", "gradresnet", "data_fast", {}),
    ("data-plain", "gradresnet", "data_plain", {}),
    ("gradresnet-ce-1thread", "gradresnet", "ce", {"threads": 1}),
    ("gradresnet-joint-1thread", "gradresnet", "joint", {"threads": 1}),
    ("gradresnet-ce-compiled", "gradresnet", "ce", {"compile": True}),
    ("gradresnet-joint-compiled", "gradresnet", "joint", {"compile": True}),
    ("gradresnet-joint-func", "gradresnet", "joint_func", {}),
    ("gradresnet-joint-func-compiled", "gradresnet", "joint_func", {"compile": True}),
    # bf16 autocast (the score path of GradResNet stays float32, cdn.nets.resnet.full_precision): fast on a
    # CPU with AMX / AVX512-BF16 or a GPU, emulated and slow on other CPUs (cdn.train.cpu_has_fast_bf16)
    ("gradresnet-ce-bf16", "gradresnet", "ce", {"bf16": True}),
    ("gradresnet-joint-bf16", "gradresnet", "joint", {"bf16": True}),
    ("resnet18-ce-bf16", "resnet18", "ce", {"bf16": True}),
    ("unet-mse-bf16", "unet", "mse", {"bf16": True}),
]
#: the cases of ``python -m benchmarks --precision``: each training step in float32 and in bf16
PRECISION_CASES = ["gradresnet-ce", "gradresnet-joint", "resnet18-ce", "unet-mse",
                   "gradresnet-ce-bf16", "gradresnet-joint-bf16", "resnet18-ce-bf16", "unet-mse-bf16"]
#: the training-set size the data cases gather from (CIFAR-10's)
DATA_IMAGES = 50_000


def _one(args) -> dict:
    name, arch, objective, options, width, batch, size, reps, device = args
    import torch

    from cdn.baselines.jem import JEMTrainer
    from cdn.compiled import joint_loss
    from cdn.data import ImageDataset, epoch_permutation, fast_batch
    from cdn.joint import JointModel
    from cdn.losses import CrossEntropyLoss, DenoisingMSELoss, JointLoss, SigmaSampler
    from cdn.nets import build_net
    from cdn.plain_data import plain_loader
    from cdn.profiles import get_config

    if options.get("threads"):
        torch.set_num_threads(options["threads"])
    torch.manual_seed(0)
    dev = torch.device(device)
    net = build_net(arch, 10, 3, width).to(dev)
    run_net = torch.compile(net) if options.get("compile") and objective != "joint_func" else net
    func_loss = torch.compile(joint_loss) if options.get("compile") else joint_loss
    params = dict(net.named_parameters())
    model = JointModel(run_net)
    opt = torch.optim.AdamW(net.parameters(), 1e-3)
    x = torch.rand(batch, 3, size, size, device=dev)
    c = torch.randint(0, 10, (batch,), device=dev)
    gen = torch.Generator(device=dev).manual_seed(0)
    if objective == "jem":
        jem = JEMTrainer(get_config("quick", "gradresnet", width=width, lr=1e-3), 10, (3, size, size), dev, k=options["k"])
    if objective.startswith("data"):
        images = torch.randint(0, 256, (DATA_IMAGES, 3, size, size), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
        data = ImageDataset(images, torch.randint(0, 10, (DATA_IMAGES,)), [str(i) for i in range(10)], "bench", "random")
        images_dev, labels_dev = data.images.to(dev), data.labels.to(dev)
        perm = epoch_permutation(DATA_IMAGES, 0, 0)
        batches = [perm[i * batch:(i + 1) * batch] for i in range(DATA_IMAGES // batch)]
        loader = iter(plain_loader(data, batches, torch.Generator().manual_seed(0)))
        counter = iter(range(len(batches)))

    def step():
        if objective == "data_fast":
            fast_batch(images_dev, labels_dev, batches[next(counter)].to(dev), gen)
            return
        if objective == "data_plain":
            xb, cb = next(loader)
            xb.to(dev), cb.to(dev)
            return
        if objective == "jem":
            jem.step(x, c)
            return
        if objective.startswith("infer"):
            with torch.no_grad():
                if objective == "infer_classify":
                    model.classify(x)
                else:
                    model.denoise(x, 0.1)
            return
        # the loss under autocast, the backward outside it, as cdn.train does
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=bool(options.get("bf16"))):
            if objective == "ce":
                loss, _ = CrossEntropyLoss()(model, x, c)
            elif objective == "joint":
                loss, _ = JointLoss()(model, x, c, gen)
            elif objective == "joint_func":
                sigma = SigmaSampler()(batch, gen, dev)
                loss = func_loss(net, params, x, c, sigma, torch.randn(x.shape, generator=gen, device=dev))
            else:
                loss, _ = DenoisingMSELoss()(run_net, x, None, gen)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    def sync():
        if dev.type == "cuda":
            torch.cuda.synchronize()

    row = {"case": name, "objective": objective, "threads": torch.get_num_threads(), **options}
    t0 = time.perf_counter()
    try:
        step()
    except Exception as err:  # reported, e.g. torch.compile of a double backward
        return {**row, "error": f"{type(err).__name__}: {err}".strip()[:500], "seconds_per_step": None,
                "images_per_s": None, "peak_memory_mib": None, "first_step_s": time.perf_counter() - t0}
    sync()
    row["first_step_s"] = time.perf_counter() - t0
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
    return {**row, "seconds_per_step": med, "images_per_s": batch / med, "peak_memory_mib": mem,
            "memory_kind": "cuda max_memory_allocated" if dev.type == "cuda" else "peak RSS of the process"}
