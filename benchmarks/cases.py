"""The benchmark cases and the function that times one of them (in its own spawned process, so it
lives in an importable module rather than in ``__main__``).

A case is ``(name, architecture, objective, options)``. Objectives: ``ce``, ``joint``, ``mse``
(one ``cdn.train.train_step``, the step ``cdn train`` runs: ``precision`` "auto" as there, bf16 on a
machine with a bf16 unit, and for the joint loss the closed-form second derivatives of
``cdn.nets.second_order`` where ``cdn train`` would use them; option ``reference``: plain float32
autograd instead; option ``precision``: "float32" or "bf16" forced; option ``autograd``: PyTorch's own
second derivatives; option ``conv_autograd``: the closed forms of GroupNorm and GELU only, PyTorch's
convolutions; option ``default_loss``: the loss of the model ``gradresnet`` as ``cdn train`` builds it,
``cdn.train.make_loss``, instead of ``JointLoss()``'s first settings), ``matmul`` (one 2048 x 2048
matrix product in ``options["dtype"]``: the machine's attainable peak, the roofline's ceiling), ``jem`` (one update of ``cdn.experiments.jem.JEMTrainer`` with
``options["k"]`` SGLD steps), ``infer_classify`` / ``infer_denoise`` (per-batch inference),
``joint_func`` (the same joint step written with ``torch.func``, ``cdn.experiments.compiled_loss``),
``data_fast`` / ``data_plain`` (one training batch from a CIFAR-sized uint8 tensor: the batched
path ``cdn.data.fast_batch`` or the per-image ``cdn.experiments.per_image_loader`` DataLoader). Options: ``threads``
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
    ("gradresnet-joint-reference", "gradresnet", "joint", {"reference": True}),
    ("gradresnet-ce-reference", "gradresnet", "ce", {"reference": True}),
    ("gradresnet-joint-float32", "gradresnet", "joint", {"precision": "float32"}),
    ("gradresnet-joint-bf16-autograd", "gradresnet", "joint", {"precision": "bf16", "autograd": True}),
    ("gradresnet-joint-float32-norms-only", "gradresnet", "joint", {"precision": "float32", "conv_autograd": True}),
    ("gradresnet-stage1energy-joint", "gradresnet-stage1energy", "joint", {}),
    ("gradresnet-stage1energy-joint-reference", "gradresnet-stage1energy", "joint", {"reference": True}),
    # the joint model as cdn train trains it (cdn.profiles.JOINT_SETTINGS: cross-entropy on the clean image as well,
    # one more forward and backward pass of the classifier per step)
    ("gradresnet-default-joint", "gradresnet-stage1energy", "joint", {"default_loss": True}),
    ("gradresnet-default-joint-reference", "gradresnet-stage1energy", "joint", {"default_loss": True, "reference": True}),
    ("gradresnet-default-joint-norms-only", "gradresnet-stage1energy", "joint", {"default_loss": True, "conv_autograd": True}),
    ("matmul-float32", None, "matmul", {"dtype": "float32"}),
    ("matmul-bf16", None, "matmul", {"dtype": "bfloat16"}),
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
    # CPU with AMX (or AVX512-BF16 on an AMD CPU) or a GPU, slower on other CPUs (cdn.train.cpu_has_fast_bf16)
    ("gradresnet-ce-float32", "gradresnet", "ce", {"precision": "float32"}),
    ("resnet18-ce-float32", "resnet18", "ce", {"precision": "float32"}),
    ("unet-mse-float32", "unet", "mse", {"precision": "float32"}),
    ("gradresnet-ce-bf16", "gradresnet", "ce", {"precision": "bf16"}),
    ("gradresnet-joint-bf16", "gradresnet", "joint", {"precision": "bf16"}),
    ("resnet18-ce-bf16", "resnet18", "ce", {"precision": "bf16"}),
    ("unet-mse-bf16", "unet", "mse", {"precision": "bf16"}),
]
#: the cases of ``python -m benchmarks --precision``: each training step in float32 and in bf16
PRECISION_CASES = ["gradresnet-ce-float32", "gradresnet-joint-float32", "resnet18-ce-float32", "unet-mse-float32",
                   "gradresnet-ce-bf16", "gradresnet-joint-bf16", "resnet18-ce-bf16", "unet-mse-bf16"]
#: the cases of ``python -m benchmarks --roofline``: the step ``cdn train`` runs and the plain float32 autograd
#: step, the cross-entropy step, and the machine's matrix-product peak in both precisions
ROOFLINE_CASES = ["gradresnet-joint", "gradresnet-joint-reference", "gradresnet-joint-float32-norms-only",
                  "gradresnet-joint-float32", "gradresnet-joint-bf16",
                  "gradresnet-joint-bf16-autograd", "gradresnet-ce", "gradresnet-ce-reference",
                  "gradresnet-stage1energy-joint", "gradresnet-stage1energy-joint-reference", "matmul-float32",
                  "matmul-bf16"]
#: the size of the matrix product of the ``matmul`` cases
MATMUL_N = 2048
#: the training-set size the data cases gather from (CIFAR-10's)
DATA_IMAGES = 50_000


def _one(args) -> dict:
    name, arch, objective, options, width, batch, size, reps, device = args
    import torch

    from cdn.experiments.jem import JEMTrainer
    from cdn.experiments.compiled_loss import joint_loss
    from cdn.data import ImageDataset, epoch_permutation, fast_batch
    from cdn.experiments.efficiency import step_flops
    from cdn.joint import JointModel
    from cdn.losses import CrossEntropyLoss, DenoisingMSELoss, JointLoss, SigmaSampler
    from cdn.nets import build_net
    from cdn.nets import second_order
    from cdn.nets.second_order import use_second_order
    from cdn.experiments.per_image_loader import plain_loader
    from cdn.profiles import get_config
    from cdn.train import autocast_bf16, make_loss, train_step, tune_allocator

    allocator = tune_allocator() if device == "cpu" else "plain"  # as cdn train sets it
    if options.get("threads"):
        torch.set_num_threads(options["threads"])
    second_order.CONV = not options.get("conv_autograd")
    torch.manual_seed(0)
    dev = torch.device(device)
    if objective == "matmul":
        return _matmul(name, options, dev, reps)
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

    training = objective in ("ce", "joint", "mse")
    precision = "float32" if options.get("reference") else options.get("precision", "auto")
    train_config = get_config("smoke", "gradresnet", precision=precision)  # the precision rule and gradient clip
    use_amp = training and autocast_bf16(train_config, dev)
    fast = (training and not options.get("reference") and not options.get("autograd")
            and use_second_order(objective, dev))
    loss_fn = {"ce": CrossEntropyLoss(), "joint": JointLoss(), "mse": DenoisingMSELoss()}.get(objective)
    if options.get("default_loss"):  # the loss of the model gradresnet, as cdn train builds it
        loss_fn = make_loss(get_config("quick", "gradresnet"))

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
        if training:  # the step cdn train runs
            train_step(run_net if objective == "mse" else model, loss_fn, opt, x, c, gen, use_amp=use_amp,
                       fast_second_order=fast, grad_clip=train_config.grad_clip, params=net.parameters())
            return
        sigma = SigmaSampler()(batch, gen, dev)  # joint_func
        loss = func_loss(net, params, x, c, sigma, torch.randn(x.shape, generator=gen, device=dev))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    def sync():
        if dev.type == "cuda":
            torch.cuda.synchronize()

    row = {"case": name, "objective": objective, "threads": torch.get_num_threads(), "allocator": allocator, **options}
    if training:
        row.update(precision="bf16" if use_amp else "float32",
                   second_order=(second_order.DESCRIPTION if second_order.CONV else "closed form (GroupNorm, GELU compiled)") if fast else "autograd",
                   gflop_per_step=step_flops(objective, arch, width, size, batch, getattr(loss_fn, "ce_on", "noisy")) / 1e9)
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
    if training:
        row["gflops"] = row["gflop_per_step"] / med
    return {**row, "seconds_per_step": med, "images_per_s": batch / med, "peak_memory_mib": mem,
            "memory_kind": "cuda max_memory_allocated" if dev.type == "cuda" else "peak RSS of the process"}


def _matmul(name, options, dev, reps) -> dict:
    """The attainable peak: median time of a ``MATMUL_N`` x ``MATMUL_N`` matrix product, ``2 n^3`` FLOPs."""
    import torch

    dtype = getattr(torch, options["dtype"])
    g = torch.Generator(device=dev).manual_seed(0)
    a = torch.randn(MATMUL_N, MATMUL_N, generator=g, device=dev).to(dtype)
    b = torch.randn(MATMUL_N, MATMUL_N, generator=g, device=dev).to(dtype)
    times = []
    for i in range(reps + 2):
        t = time.perf_counter()
        a @ b
        if dev.type == "cuda":
            torch.cuda.synchronize()
        if i >= 2:
            times.append(time.perf_counter() - t)
    med = statistics.median(times)
    return {"case": name, "objective": "matmul", "threads": torch.get_num_threads(), **options, "n": MATMUL_N,
            "seconds_per_step": med, "images_per_s": None, "gflops": 2 * MATMUL_N ** 3 / med / 1e9,
            "peak_memory_mib": None, "first_step_s": None}
