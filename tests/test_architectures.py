"""Every GradResNet variant of ``cdn.nets.VARIANTS`` (chapter 10): the scale-preserving norm, each
head's formula, Tweedie / finite differences / the difference of denoisers / bad input over every
name in ``ARCHITECTURES``, the homogeneity degree of each energy, and bf16 against float32."""
import math

import pytest
import torch

from cdn.experiments.variants import choose_default, homogeneity_degree
from cdn.joint import JointModel
from cdn.nets import ARCHITECTURES, VARIANTS, GradResNet, build_net
from cdn.nets.resnet import ScaleGroupNorm
from cdn.profiles import get_config

CLASSIFIERS = [a for a in ARCHITECTURES if a not in ("unet", "dncnn")]


def _net(arch, seed=0, width=4, cond=False):
    torch.manual_seed(seed)
    return build_net(arch, 5, 3, width, cond).double().eval()


def test_scale_preserving_norm_is_homogeneous_and_evens_out_groups():
    torch.manual_seed(0)
    norm = ScaleGroupNorm(32, homogeneous=True, channels_per_group=8).double()
    h = torch.randn(3, 32, 5, 5, dtype=torch.float64) * torch.linspace(0.1, 10, 32, dtype=torch.float64).view(1, -1, 1, 1)
    out = norm(h)
    for a in (1e-3, 0.37, 5.0, 1e3):
        assert torch.allclose(norm(a * h), a * out, rtol=1e-6, atol=0)
    spread = out.reshape(3, 4, -1).std(2, unbiased=False)
    assert torch.allclose(spread, spread.mean(1, keepdim=True).expand_as(spread), rtol=1e-3)  # groups evened out
    # and the overall scale is the input's (mean spread over the groups), not 1 as in GroupNorm
    h_spread = (h.reshape(3, 4, -1) - h.reshape(3, 4, -1).mean(2, keepdim=True)).pow(2).mean(2).sqrt()
    assert torch.allclose(spread.mean(1), h_spread.mean(1), rtol=1e-4)
    plain = ScaleGroupNorm(32).double()
    assert not torch.allclose(plain(3 * h), 3 * plain(h))


@pytest.mark.parametrize("arch", [v for v in VARIANTS if VARIANTS[v]["norm"] != "batch"])
def test_each_head_is_its_formula(arch):
    """softmax(f) and logsumexp(f) equal the head's formula computed from the features phi."""
    net = _net(arch, width=8)
    y = torch.rand(3, 3, 16, 16, dtype=torch.float64)
    phi = net.features(y)
    d = y[0].numel()
    lin = phi @ net.fc.weight.T
    head = VARIANTS[arch]["head"]
    if head == "linear":
        f = lin
    elif head == "logenergy":
        r = torch.nn.functional.conv2d(y, net.energy_conv.weight, padding=1)
        f = lin - d / 2 * torch.log(r.pow(2).flatten(1).mean(1) + 1e-8)[:, None]
    elif head == "quadratic":
        f = lin - net.log_s.exp() * phi.pow(2).mean(1, keepdim=True) / 2
    elif head in ("stage1energy", "stagesenergy", "stage4energy"):  # each stage's output map, caught at its last block
        maps = []
        hooks = [stage[-1].register_forward_hook(lambda m, i, o: maps.append(o)) for stage in net.stages]
        net(y)
        for h in hooks:
            h.remove()
        used = {"stage1energy": maps[:1], "stagesenergy": maps, "stage4energy": maps[3:]}[head]
        logs = sum(torch.log(h.pow(2).flatten(1).mean(1) + 1e-8) for h in used) / len(used)
        f = lin - d / 2 * logs[:, None]
    else:
        f = lin - d / 2 * torch.log(phi.pow(2).mean(1, keepdim=True) + 1e-12)
    out = net(y)
    assert torch.allclose(torch.softmax(out, 1), torch.softmax(f, 1), atol=1e-12)
    assert torch.allclose(torch.logsumexp(out, 1), torch.logsumexp(f, 1), rtol=1e-12, atol=1e-9)
    if VARIANTS[arch]["side_connections"] == "concat":
        assert phi.shape[1] == int(11.5 * 8)  # w/2 + w + 2w + 8w features


@pytest.mark.parametrize("arch", CLASSIFIERS)
def test_tweedie_and_finite_differences_for_every_architecture(arch):
    """D(y) - y = sigma^2 grad_y logsumexp f(y), with the gradient checked against central finite
    differences in float64 along random directions, for D(y) and D(y, c)."""
    model = JointModel(_net(arch))
    g = torch.Generator().manual_seed(0)
    y = torch.rand(2, 3, 16, 16, generator=g, dtype=torch.float64)
    c = torch.tensor([1, 3])
    sigma, h = 0.1, 1e-6
    for cls in (None, c):
        d = model.denoise(y, sigma, cls)

        def energy(z):
            f = model.logits(z)
            return torch.logsumexp(f, 1) if cls is None else f.gather(1, cls.view(-1, 1)).squeeze(1)

        for _ in range(2):
            v = torch.randn(y.shape, generator=g, dtype=torch.float64)
            fd = (energy(y + h * v) - energy(y - h * v)) / (2 * h)
            lhs = ((d - y) / sigma ** 2 * v).flatten(1).sum(1)
            assert torch.allclose(lhs, fd, rtol=1e-5, atol=1e-6 * max(1.0, fd.abs().max().item())), arch


@pytest.mark.parametrize("arch", CLASSIFIERS)
def test_difference_of_denoisers_for_every_architecture(arch):
    model = JointModel(_net(arch, seed=1))
    y = torch.rand(3, 3, 8, 8, dtype=torch.float64)
    c = torch.tensor([0, 2, 4])
    lhs = model.class_gradient(y, None, c)
    rhs = (model.denoise(y, 0.2, c) - model.denoise(y, 0.2)) / 0.2 ** 2
    scale = max(1.0, lhs.abs().max().item())
    assert torch.allclose(lhs, rhs, atol=1e-9 * scale, rtol=1e-6)


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_bad_input_for_every_architecture(arch):
    net = _net(arch)
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)|divisible"):
        net(torch.rand(2, 1, 16, 16, dtype=torch.float64))
    if arch in ("unet", "dncnn"):
        return
    model = JointModel(net)
    y = torch.rand(2, 3, 16, 16, dtype=torch.float64)
    with pytest.raises(ValueError, match="NaN"):
        model.denoise(y * float("nan"), 0.1)
    with pytest.raises(ValueError, match="sigma"):
        model.denoise(y, -0.1)
    with pytest.raises(ValueError, match="dtype"):
        model.denoise(y.float(), 0.1)


@pytest.mark.parametrize("head, degree", [("quadratic", 1.0), ("logquad", -1.0), ("logenergy", -1.0)])
def test_homogeneity_degree_of_each_energy(head, degree):
    """With the class term switched off (w = 0) and ReLU (exactly homogeneous features of degree 1):
    a quadratic energy gives a score of degree 1, the log energies of degree -1; on pure noise."""
    torch.manual_seed(0)
    net = GradResNet(5, 3, 8, variant="gradresnet-homog-quadratic", head=head, activation="relu").double().eval()
    with torch.no_grad():
        net.fc.weight.zero_()
    model = JointModel(net)
    got = homogeneity_degree(model, (3, 16, 16), sigma=1.0, scales=(0.5, 3.0), n=4)  # stabilisers (1e-8) negligible
    assert got["degree"] == pytest.approx(degree, abs=1e-6)
    assert got["cosine"] == pytest.approx(1.0, abs=1e-9)


def test_homogeneity_degree_sees_a_class_term():
    """The preact network's class term is scale-dependent: its degree is not an integer."""
    model = JointModel(_net("gradresnet-preact-quadratic", width=8))
    got = homogeneity_degree(model, (3, 16, 16), n=4)
    assert min(abs(got["degree"] - k) for k in (-1, 0, 1)) > 1e-3


@pytest.mark.parametrize("arch", ["gradresnet-preact-logenergy", "gradresnet-homog-quadratic",
                                  "gradresnet-homog-logquad"])
def test_bf16_joint_step_score_matches_float32(arch):
    """Same weights, one joint step's score under bf16 autocast against float32: the relative error
    of sigma * score (the quantity DSM compares with -eps) stays below 5% at every sigma, with the
    score path in float32; with it autocast too (``score_in_float32=False``) the error is larger."""
    torch.manual_seed(0)
    net = build_net(arch, 10, 3, 8)
    model = JointModel(net)
    x = torch.rand(8, 3, 32, 32)
    g = torch.Generator().manual_seed(0)
    errors = {}
    for keep in (True, False):
        net.score_in_float32 = keep
        for sigma in (1e-3, 1e-2, 1e-1):
            y = x + sigma * torch.randn(x.shape, generator=g)
            s32 = model.score(y, sigma)
            with torch.autocast("cpu", dtype=torch.bfloat16):
                s16 = model.score(y, sigma)
            assert s16.dtype == torch.float32
            errors[(keep, sigma)] = ((s16 - s32).norm() / s32.norm()).item()
    assert max(errors[(True, s)] for s in (1e-3, 1e-2, 1e-1)) < 0.05, errors
    assert sum(errors[(False, s)] for s in (1e-3, 1e-2, 1e-1)) > sum(errors[(True, s)] for s in (1e-3, 1e-2, 1e-1))


def test_choose_default_applies_the_rule():
    def row(arch, acc, psnr, precision="float32", cond=False):
        return {"arch": arch, "clean_accuracy": acc, "psnr_D(y)_0.1": psnr, "precision": precision,
                "noise_conditioning": cond}

    rows = [row("a", 0.50, 26.0), row("b", 0.495, 27.0), row("c", 0.40, 30.0), row("d", 0.60, 31.0, "bf16"),
            row("e", 0.6, 35.0, cond=True)]
    assert choose_default(rows) == "b"      # c is 10 points below the best; d is bf16; e is conditioned
    rows[1]["clean_accuracy"] = 0.48
    assert choose_default(rows) == "a"      # b now more than 1 point below
    with pytest.raises(ValueError):
        choose_default([row("d", 0.6, 31.0, "bf16")])
    # the amended rule: within 1 point and 0.5 dB, the best at 64x64
    rows = [row("a", 0.50, 27.0), row("b", 0.495, 26.8), row("f", 0.499, 26.0), row("c", 0.40, 30.0)]
    assert choose_default(rows) == "a"
    assert choose_default(rows, at_64={"a": 0.2, "b": 0.3, "f": 0.9}) == "b"   # f is 1 dB below the best
    assert choose_default(rows, at_64={"a": 0.4, "b": 0.3}) == "a"
    with pytest.raises(ValueError, match="64x64"):
        choose_default(rows, at_64={"a": 0.4})


def test_bf16_keeps_small_noise_visible_to_a_high_pass_energy():
    """Why the score path stays float32: a trained log-energy filter R is high-pass (R x = 0 on smooth
    images), so R y = sigma R eps. In bf16 the input y = x + sigma eps is rounded to 8 bits of
    mantissa (steps of 2^-8 near 0.6, about 4 sigma for sigma = 1e-3), so R sees rounding error as
    much as noise; R computed in float32 sees the noise exactly."""
    torch.manual_seed(0)
    net = build_net("gradresnet-preact-logenergy", 10, 3, 8)
    lap = torch.tensor([[0., -1., 0.], [-1., 4., -1.], [0., -1., 0.]])
    with torch.no_grad():
        net.energy_conv.weight.zero_()
        for k in range(net.energy_conv.weight.shape[0]):
            net.energy_conv.weight[k, k % 3] = lap
    model = JointModel(net)
    x = torch.full((4, 3, 32, 32), 0.6)
    y = x + 1e-3 * torch.randn(x.shape, generator=torch.Generator().manual_seed(1))
    s32 = model.score(y, 1e-3)
    errors = {}
    for keep in (True, False):
        net.score_in_float32 = keep
        with torch.autocast("cpu", dtype=torch.bfloat16):
            errors[keep] = ((model.score(y, 1e-3) - s32).norm() / s32.norm()).item()
    assert errors[True] < 1e-3, errors                 # measured 2.3e-4
    assert errors[False] > 30 * errors[True], errors   # measured 6.4e-2: 280 times larger


def test_auto_precision_takes_bf16_only_where_the_hardware_has_it(monkeypatch):
    """'auto' is bf16 on a GPU or a CPU whose flags name a bf16 unit, float32 on other CPUs; the
    explicit precisions ignore the hardware."""
    from cdn import train as T

    def cpuinfo(vendor, flags):
        return f"processor\t: 0\nvendor_id\t: {vendor}\nflags\t\t: fpu sse2 avx2 fma {flags}\n"

    amx = cpuinfo("GenuineIntel", "avx512f avx512_bf16 amx_bf16 amx_tile")
    amd_avx = cpuinfo("AuthenticAMD", "avx512f avx512_bf16")
    intel_avx = cpuinfo("GenuineIntel", "avx512f avx512_bf16 avx512_fp16")  # measured slower than float32
    plain = cpuinfo("AuthenticAMD", "avx512f")
    assert T.cpu_has_fast_bf16(amx) and T.cpu_has_fast_bf16(amd_avx)
    assert not T.cpu_has_fast_bf16(intel_avx) and not T.cpu_has_fast_bf16(plain)
    assert not T.cpu_has_fast_bf16("no flags line at all")
    assert not T.cpu_has_fast_bf16("flags\t\t: avx512_bf16\n")  # no vendor: not counted
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    # a head whose energy is one convolution of y (the score path stays float32 under autocast); the default
    # joint model's stage-1 energy is float32 under 'auto' everywhere (tests/test_precision.py)
    model = "gradresnet-logenergy"
    for has, expected in ((True, True), (False, False)):
        monkeypatch.setattr(T, "cpu_has_fast_bf16", lambda cpuinfo=None, has=has: has)
        assert T.autocast_bf16(get_config("smoke", model), cpu) is expected
        assert T.autocast_bf16(get_config("smoke", model, precision="float32"), cpu) is False
        assert T.autocast_bf16(get_config("smoke", model, precision="bf16"), cpu) is True
        assert T.autocast_bf16(get_config("smoke", model), cuda) is True
