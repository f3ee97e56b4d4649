"""The data-mollification baseline (cdn.mollify): schedules, transforms, sampler and loss."""
import math

import numpy as np
import pytest
import scipy.fft
import scipy.stats
import torch
import torch.nn.functional as F

from cdn import mollify as M
from cdn.joint import JointModel
from cdn.nets import build_net
from cdn.profiles import get_config
from cdn.train import make_loss

T = torch.linspace(0, 1, 101, dtype=torch.float64)


@pytest.mark.parametrize("power", [0.5, 1.0, 2.0])
def test_label_schedules_have_their_endpoints_and_grow(power):
    for weight in (M.noise_label_weight, M.blur_label_weight):
        g = weight(T, power)
        assert g[0].item() == 0.0
        assert g[-1].item() == pytest.approx(1.0, abs=1e-12)
        assert (g.diff() > 0).all()


def test_noise_label_weight_is_the_snr_formula():
    a, s = M.vp_coefficients(T[1:-1])
    snr = a**2 / s**2
    for p in (0.5, 1.0, 3.0):
        torch.testing.assert_close(M.noise_label_weight(T[1:-1], p), (1 / (1 + snr)) ** p, rtol=1e-10, atol=0)
    torch.testing.assert_close(a**2 + s**2, torch.ones_like(a), rtol=1e-12, atol=0)


def test_vp_noise_endpoints():
    x = torch.rand(3, 3, 8, 8, dtype=torch.float64)
    eps = torch.randn_like(x)
    torch.testing.assert_close(M.vp_noise(x, torch.zeros(3, dtype=torch.float64), eps), x)
    torch.testing.assert_close(M.vp_noise(x, torch.ones(3, dtype=torch.float64), eps), 0.5 + 0.25 * eps)


def test_dct_matrix_is_scipys_orthonormal_dct():
    m = M.dct_matrix(32, dtype=torch.float64)
    x = torch.randn(32, 5, dtype=torch.float64)
    np.testing.assert_allclose((m @ x).numpy(), scipy.fft.dct(x.numpy(), axis=0, norm="ortho"), atol=1e-12)
    torch.testing.assert_close(m @ m.T, torch.eye(32, dtype=torch.float64), atol=1e-12, rtol=0)


def test_heat_blur_keeps_means_and_constants_and_smooths_with_t():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(4, 3, 32, 32, generator=g)
    const = torch.full((1, 3, 32, 32), 0.3)
    torch.testing.assert_close(M.heat_blur(const, torch.tensor([0.7])), const, atol=1e-6, rtol=0)
    spread = []
    for t in (0.0, 0.25, 0.5, 1.0):
        b = M.heat_blur(x, torch.full((4,), t))
        torch.testing.assert_close(b.mean((2, 3)), x.mean((2, 3)), atol=1e-5, rtol=0)
        spread.append(b.std((2, 3)).mean().item())
    assert all(s1 > s2 for s1, s2 in zip(spread, spread[1:]))
    assert spread[-1] < 0.01 * x.std((2, 3)).mean().item()  # t = 1: a scale of the image's size
    # the highest frequency is damped by exp(-lambda tau) with tau = 0.3^2 / 2 at t = 0
    m = M.dct_matrix(32)
    top = torch.zeros(1, 1, 32, 32)
    top[0, 0, 31, 31] = 1.0
    out = m @ M.heat_blur(m.T @ top @ m, torch.zeros(1)) @ m.T
    lam = 2 * (math.pi * 31 / 32) ** 2
    assert out[0, 0, 31, 31].item() == pytest.approx(math.exp(-lam * 0.3**2 / 2), rel=1e-5)


@pytest.mark.parametrize("alpha,beta", [(1, 2), (2, 3)])
def test_beta_sampler_follows_the_beta_law(alpha, beta):
    t = M.beta_sample(20_000, alpha, beta, torch.Generator().manual_seed(1))
    assert scipy.stats.kstest(t.numpy(), scipy.stats.beta(alpha, beta).cdf).pvalue > 1e-3
    # and a wrong law is rejected by the same test, so it can fail
    assert scipy.stats.kstest(t.numpy(), scipy.stats.beta(alpha + 1, beta).cdf).pvalue < 1e-6


def test_beta_sampler_rejects_non_integer_parameters():
    with pytest.raises(ValueError, match="integers"):
        M.beta_sample(3, 1.5, 2)
    with pytest.raises(ValueError, match="t must lie in"):
        M.noise_label_weight(torch.tensor([1.5]))


def test_smoothed_cross_entropy_is_cross_entropy_with_soft_targets():
    g = torch.Generator().manual_seed(2)
    logits, c = torch.randn(16, 10, generator=g), torch.randint(0, 10, (16,), generator=g)
    gamma = torch.rand(16, generator=g)
    torch.testing.assert_close(M.smoothed_cross_entropy(logits, c, gamma),
                               F.cross_entropy(logits, M.smooth_labels(c, 10, gamma)))
    torch.testing.assert_close(M.smoothed_cross_entropy(logits, c, torch.zeros(16)), F.cross_entropy(logits, c))


def test_mollify_at_t0_is_plain_cross_entropy():
    """At t = 0 the noise and clean roles leave the image and the one-hot label unchanged, so the
    loss is the cross-entropy of the network on x."""
    g = torch.Generator().manual_seed(3)
    x, c = torch.rand(8, 3, 32, 32, generator=g), torch.randint(0, 10, (8,), generator=g)
    role = torch.tensor([0, 1] * 4)
    x_m, gamma = M.mollify(x, torch.zeros(8), role, torch.randn(x.shape, generator=g))
    torch.testing.assert_close(x_m, x)
    assert (gamma == 0).all()
    torch.manual_seed(0)
    model = JointModel(build_net("resnet18", 10, 3, 4)).eval()
    logits = model.logits(x_m)
    torch.testing.assert_close(M.smoothed_cross_entropy(logits, c, gamma), F.cross_entropy(logits, c))


def test_mollify_roles_apply_their_transform_and_weight():
    g = torch.Generator().manual_seed(4)
    x = torch.rand(3, 3, 32, 32, generator=g)
    eps = torch.randn(x.shape, generator=g)
    t = torch.tensor([0.0, 0.4, 0.4])
    x_m, gamma = M.mollify(x, t, torch.tensor([0, 1, 2]), eps, noise_power=2.0, blur_power=0.5)
    torch.testing.assert_close(x_m[1:2], M.vp_noise(x[1:2], t[1:2], eps[1:2]))
    torch.testing.assert_close(x_m[2:3], M.heat_blur(x[2:3], t[2:3]))
    torch.testing.assert_close(gamma, torch.stack([torch.tensor(0.0), M.noise_label_weight(t[1], 2.0),
                                                   M.blur_label_weight(t[2], 0.5)]))


def test_roles_are_uniform_and_clean_images_get_t0():
    role, t = M.sample_roles_and_levels(30_000, generator=torch.Generator().manual_seed(5))
    freq = torch.bincount(role, minlength=3).double() / len(role)
    assert (freq - 1 / 3).abs().max() < 4 * math.sqrt(2 / 9 / len(role))  # 4 standard errors
    assert (t[role == 0] == 0).all() and (t[role != 0] > 0).all()


def test_make_loss_dispatches_mollify_and_is_reproducible():
    config = get_config("smoke", "resnet18-mollify")
    loss_fn = make_loss(config)
    assert isinstance(loss_fn, M.MollifyLoss)
    torch.manual_seed(0)
    model = JointModel(build_net("resnet18", 10, 3, 4))
    x, c = torch.rand(6, 3, 32, 32), torch.arange(6)
    losses = [loss_fn(model, x, c, torch.Generator().manual_seed(7))[0] for _ in range(2)]
    assert torch.isfinite(losses[0]) and losses[0].item() == losses[1].item()
    losses[0].backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)

