"""Losses: sigma sampling, the DSM identity, and the joint objective's terms."""
import math

import pytest
import torch

from cdn.joint import JointModel
from cdn.losses import CrossEntropyLoss, DenoisingMSELoss, JointLoss, SigmaSampler, add_noise, dsm_per_image
from cdn.mixture import MixtureLogits, two_moons_like_mixture
from cdn.nets import GradResNet, UNet


def test_log_uniform_sampler_range_and_median():
    s = SigmaSampler(1e-3, 1.0)(200_000, torch.Generator().manual_seed(0))
    assert s.min() >= 1e-3 and s.max() <= 1.0
    # log-uniform: log sigma is uniform, its median is the geometric mean
    assert abs(s.median().item() - math.sqrt(1e-3)) / math.sqrt(1e-3) < 0.05


def test_clean_fraction():
    s = SigmaSampler(0.01, 1.0, clean_fraction=0.25)(100_000, torch.Generator().manual_seed(0))
    assert abs((s == 0).float().mean().item() - 0.25) < 0.01


@pytest.mark.parametrize("kw", [dict(sigma_min=0), dict(sigma_min=2, sigma_max=1), dict(distribution="beta"),
                                dict(clean_fraction=1.0)])
def test_sampler_rejects_bad_settings(kw):
    with pytest.raises(ValueError):
        SigmaSampler(**kw)


def test_dsm_equals_weighted_denoising_error():
    """||sigma * score + eps||^2 = ||D(y) - x||^2 / sigma^2 for D(y) = y + sigma^2 score."""
    g = torch.Generator().manual_seed(0)
    x = torch.rand(4, 3, 8, 8, generator=g, dtype=torch.float64)
    sigma = torch.tensor([0.05, 0.1, 0.5, 1.0], dtype=torch.float64)
    y, eps = add_noise(x, sigma, g)
    score = torch.randn(x.shape, generator=g, dtype=torch.float64)
    d = y + sigma.view(-1, 1, 1, 1) ** 2 * score
    expected = ((d - x) ** 2).flatten(1).mean(1) / sigma ** 2
    assert torch.allclose(dsm_per_image(score, eps, sigma), expected, atol=1e-12)
    assert torch.allclose(dsm_per_image(score, eps, sigma, "none"), expected * sigma ** 2, atol=1e-12)


def test_dsm_is_minimised_by_the_exact_score():
    """On a Gaussian mixture the exact model's DSM loss is below a perturbed model's."""
    mix = two_moons_like_mixture()
    exact = JointModel(MixtureLogits(mix))
    g = torch.Generator().manual_seed(0)
    x, c = mix.sample(4000, g)
    loss_fn = JointLoss(SigmaSampler(0.1, 1.0), lam=1.0)
    _, t_exact = loss_fn(exact, x, c, torch.Generator().manual_seed(1))
    wrong = JointModel(MixtureLogits(type(mix)(mix.means * 1.3, mix.covs, mix.weights)))
    _, t_wrong = loss_fn(wrong, x, c, torch.Generator().manual_seed(1))
    assert t_exact["dsm"] < t_wrong["dsm"]


def test_joint_loss_terms_and_gradients():
    torch.manual_seed(0)
    net = GradResNet(4, 3, 4)
    model = JointModel(net)
    x, c = torch.rand(8, 3, 16, 16), torch.randint(0, 4, (8,))
    for kw in (dict(), dict(dsm_conditional=True), dict(ce_on="both"), dict(ce_on="clean"),
               dict(sampler=SigmaSampler(clean_fraction=0.5))):
        loss, terms = JointLoss(**kw)(model, x, c, torch.Generator().manual_seed(0))
        assert torch.isfinite(loss) and set(terms) == {"ce", "dsm", "acc"}
        assert torch.allclose(loss, terms["ce"] + terms["dsm"])
        net.zero_grad()
        loss.backward()
        assert all(p.grad is not None for p in net.parameters())
    with pytest.raises(ValueError):
        JointLoss(ce_on="sometimes")


def test_baseline_losses():
    torch.manual_seed(0)
    x, c = torch.rand(8, 3, 16, 16), torch.randint(0, 4, (8,))
    loss, terms = CrossEntropyLoss(SigmaSampler(0.01, 0.5, "uniform"))(JointModel(GradResNet(4, 3, 4)), x, c)
    assert torch.isfinite(loss) and "acc" in terms
    loss, terms = DenoisingMSELoss()(UNet(3, 4), x)
    assert torch.isfinite(loss) and loss > 0


def test_cross_entropy_on_clean_and_noisy_images_is_the_mean_of_the_two():
    import torch.nn.functional as F

    torch.manual_seed(0)
    x, c = torch.rand(8, 3, 16, 16), torch.randint(0, 4, (8,))
    model = JointModel(GradResNet(4, 3, 4)).eval()
    sampler = SigmaSampler(0.01, 0.5, "uniform")
    both, _ = CrossEntropyLoss(sampler, also_clean=True)(model, x, c, torch.Generator().manual_seed(1))
    noisy, _ = CrossEntropyLoss(sampler)(model, x, c, torch.Generator().manual_seed(1))
    clean = F.cross_entropy(model.logits(x).float(), c)
    torch.testing.assert_close(both, (noisy + clean) / 2)
    with pytest.raises(ValueError, match="needs a sampler"):
        CrossEntropyLoss(None, also_clean=True)
    from cdn.profiles import get_config
    from cdn.train import make_loss

    assert make_loss(get_config("smoke", "gradresnet-ce-noisy", ce_on="both")).also_clean
    assert not make_loss(get_config("smoke", "gradresnet-ce-noisy", ce_on="noisy")).also_clean
    # the baseline sees what the joint model's cross-entropy sees (cdn.profiles.JOINT_SETTINGS: clean and noisy)
    assert make_loss(get_config("smoke", "gradresnet-ce-noisy")).also_clean == (get_config("smoke").ce_on == "both")
    with pytest.raises(ValueError, match="gradresnet-ce"):
        make_loss(get_config("smoke", "gradresnet-ce-noisy", ce_on="clean"))


def test_log_normal_sampler_is_edms_on_the_unit_pixel_scale():
    """ln sigma ~ N(-1.2 - ln 2, 1.2^2), clipped: median exp(-1.2 - ln 2) = 0.151, and
    P(sigma < 0.03) = Phi((ln 0.03 + 1.2 + ln 2) / 1.2) = 0.089 (log-uniform on [1e-3, 1]: 0.49)."""
    from scipy.stats import norm

    n = 200_000
    s = SigmaSampler(1e-3, 1.0, "log_normal")(n, torch.Generator().manual_seed(0))
    assert s.min() >= 1e-3 and s.max() <= 1.0
    assert s.median().item() == pytest.approx(math.exp(-1.2) / 2, rel=0.02)
    p = norm.cdf((math.log(0.03) + 1.2 + math.log(2)) / 1.2)
    assert abs((s < 0.03).double().mean().item() - p) < 4 * math.sqrt(p * (1 - p) / n)
    assert (s == 1.0).double().mean().item() == pytest.approx(1 - norm.cdf((0 + 1.2 + math.log(2)) / 1.2), abs=0.005)


def test_dsm_conditional_objective_is_conditional_score_matching_alone():
    """``gradresnet-dsm-cond``: the loss is lam times the DSM of D(y, true c), with no cross-entropy, and its
    parameter gradient is that of the DSM term alone."""
    from cdn import get_config
    from cdn.nets import build_net
    from cdn.train import make_loss

    cfg = get_config("smoke", "gradresnet-dsm-cond", "synthetic")
    loss_fn = make_loss(cfg)
    assert isinstance(loss_fn, JointLoss) and loss_fn.dsm_conditional and loss_fn.ce_weight == 0.0
    torch.manual_seed(0)
    model = JointModel(build_net(cfg.arch, 4, 3, 4, False))
    x, c = torch.rand(6, 3, 8, 8), torch.tensor([0, 1, 2, 3, 0, 1])
    loss, terms = loss_fn(model, x, c, torch.Generator().manual_seed(1))
    torch.testing.assert_close(loss, cfg.lam * terms["dsm"])
    ce, dsm, _ = JointLoss(SigmaSampler(cfg.sigma_min, cfg.sigma_max), dsm_conditional=True).parts(
        model, x, c, torch.Generator().manual_seed(1))
    params = list(model.parameters())
    for a, b in zip(torch.autograd.grad(loss, params, allow_unused=True),
                    torch.autograd.grad(cfg.lam * dsm, params, allow_unused=True)):
        if a is None or b is None:
            assert a is None and b is None
        else:
            torch.testing.assert_close(a, b)
