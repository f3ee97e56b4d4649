"""OOD metrics and sets of cdn.experiments.ood: AUROC of a perfect separator is 1, of identical distributions
about 0.5; FPR at 95% TPR against hand-computed cases; the offline OOD sets have the right shapes
and properties; the scores come from one forward/backward pass of the joint model."""
import pytest
import torch

from cdn.experiments import ood
from cdn.joint import JointModel
from cdn.mixture import MixtureLogits, two_moons_like_mixture
from cdn.nets import GradResNet


def test_auroc_perfect_and_reversed_separator():
    s_in, s_out = torch.linspace(1, 2, 50), torch.linspace(-2, 0.5, 80)
    assert ood.auroc(s_in, s_out) == 1.0
    assert ood.auroc(s_out, s_in) == 0.0
    assert ood.fpr_at_tpr(s_in, s_out) == 0.0
    assert ood.fpr_at_tpr(s_out, s_in) == 1.0


def test_auroc_identical_distributions_is_half():
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(5000, generator=g), torch.randn(5000, generator=g)
    assert ood.auroc(a, b) == pytest.approx(0.5, abs=0.02)
    assert ood.fpr_at_tpr(a, b) == pytest.approx(0.95, abs=0.02)


def test_auroc_gaussian_shift_closed_form():
    # scores N(d, 1) against N(0, 1): AUROC = Phi(d / sqrt 2)
    g = torch.Generator().manual_seed(1)
    d = 1.0
    a, b = d + torch.randn(20000, generator=g), torch.randn(20000, generator=g)
    expected = 0.5 * (1 + torch.erf(torch.tensor(d / 2))).item()  # Phi(d/sqrt2) = (1 + erf(d/2)) / 2
    assert ood.auroc(a, b) == pytest.approx(expected, abs=0.01)
    # FPR at 95% TPR: threshold d - 1.645, FPR = 1 - Phi(d - 1.645)
    fpr = 1 - 0.5 * (1 + torch.erf(torch.tensor((d - 1.6449) / 2 ** 0.5))).item()
    assert ood.fpr_at_tpr(a, b) == pytest.approx(fpr, abs=0.015)


def test_metric_bad_input():
    with pytest.raises(ValueError, match="at least one"):
        ood.auroc(torch.tensor([]), torch.tensor([1.0]))
    with pytest.raises(ValueError, match="NaN"):
        ood.auroc(torch.tensor([float("nan")]), torch.tensor([1.0]))
    with pytest.raises(ValueError, match="tpr"):
        ood.fpr_at_tpr(torch.tensor([1.0]), torch.tensor([0.0]), tpr=1.5)


def test_log_px_separates_mixture_from_far_points():
    """With exact log p(y) of a 2-D mixture, points far from it are detected perfectly."""
    mix = two_moons_like_mixture(torch.float64)
    model = JointModel(MixtureLogits(mix))
    g = torch.Generator().manual_seed(2)
    x_in, _ = mix.sample(500, g)
    x_out = 6.0 + torch.randn(500, 2, generator=g, dtype=torch.float64)
    lp_in = model.log_marginal(x_in, 0.01)
    lp_out = model.log_marginal(x_out, 0.01)
    assert ood.auroc(lp_in, lp_out) == 1.0


def test_ood_scores_match_model():
    torch.manual_seed(0)
    model = JointModel(GradResNet(num_classes=4, in_channels=3, width=4)).eval()
    x = torch.rand(6, 3, 16, 16)
    sc = ood.ood_scores(model, x, sigma=0.0, batch_size=4)
    assert set(sc) == set(ood.SCORES) and all(v.shape == (6,) for v in sc.values())
    with torch.no_grad():
        assert torch.allclose(sc["log_px"], model.log_marginal(x), atol=1e-5)
        assert torch.allclose(sc["msp"], model.classify(x).exp().max(1).values, atol=1e-6)
    assert torch.allclose(sc["neg_score_norm"], -model.score(x).flatten(1).norm(dim=1), atol=1e-5)
    # noise is seeded
    a = ood.ood_scores(model, x, sigma=0.05, generator=torch.Generator().manual_seed(0))
    b = ood.ood_scores(model, x, sigma=0.05, generator=torch.Generator().manual_seed(0))
    assert torch.equal(a["log_px"], b["log_px"])
    with pytest.raises(ValueError, match="sigma"):
        ood.ood_scores(model, x, sigma=-1.0)
    with pytest.raises(ValueError, match="shape"):
        ood.ood_scores(model, torch.rand(3, 16))


def test_ood_sets_shapes_and_properties():
    x = torch.rand(20, 3, 32, 32)
    u = ood.uniform_noise(10, 32, 3, seed=0)
    gn = ood.gaussian_noise(10, 32, 3, seed=0)
    d = ood.digits_ood(10, 32, 3, seed=0)
    for t in (u, gn, d):
        assert t.shape == (10, 3, 32, 32) and t.min() >= 0 and t.max() <= 1
    assert torch.equal(u, ood.uniform_noise(10, 32, 3, seed=0)) and not torch.equal(u, ood.uniform_noise(10, 32, 3, seed=1))
    assert ood.digits_ood(5, 16, 1).shape == (5, 1, 16, 16)
    s = ood.shuffle_pixels(x, seed=0)
    assert s.shape == x.shape and not torch.equal(s, x)
    # the same pixels (colour triplets) in another order
    for i in range(3):
        a = x[i].reshape(3, -1).T.tolist()
        b = s[i].reshape(3, -1).T.tolist()
        assert sorted(map(tuple, a)) == sorted(map(tuple, b))
    sets = ood.ood_sets(x, 8, seed=0)
    for name, t in sets.items():
        assert t.shape[1:] == (3, 32, 32), name
    assert {"digits (coloured)", "uniform noise", "Gaussian noise", "pixels shuffled"} <= set(sets)
