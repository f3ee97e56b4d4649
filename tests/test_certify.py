"""Randomized-smoothing certification (cdn.experiments.certify): the known radius on a constant classifier, the
exact Clopper-Pearson definition, soundness and tightness on a half-space, abstention at p = 1/2,
certified accuracy, and bad input."""
import math

import pytest
import torch
from scipy.stats import binom, norm

from cdn.experiments.certify import (ABSTAIN, certified_accuracy, certify, certify_images, clopper_pearson_lower,
                                     denoised_classifier, max_radius)


def _constant(cls, num_classes=5):
    def base(y):
        logits = torch.zeros(len(y), num_classes, dtype=y.dtype)
        logits[:, cls] = 1.0
        return logits
    return base


def _half_space(w, t):
    """Class 1 iff <w, y> > t (two classes)."""
    def base(y):
        s = y.flatten(1) @ w.flatten() - t
        return torch.stack([torch.zeros_like(s), s], dim=1)
    return base


@pytest.mark.parametrize("sigma", [0.12, 0.5])
@pytest.mark.parametrize("n", [10, 100, 1000])
def test_constant_classifier_certifies_the_known_radius(sigma, n):
    """n out of n in one class: p_lower = alpha^(1/n) (Beta(n, 1) quantile), radius = sigma Phi^-1(p_lower)."""
    alpha = 0.001
    x = torch.rand(3, 4, 4)
    out = certify(_constant(3), x, sigma, n0=7, n=n, alpha=alpha, batch_size=64)
    p_lower = alpha ** (1 / n)
    assert out["prediction"] == 3
    assert out["p_lower"] == pytest.approx(p_lower, rel=1e-12)
    assert out["radius"] == pytest.approx(sigma * norm.ppf(p_lower), rel=1e-9)
    assert out["radius"] == pytest.approx(max_radius(sigma, n, alpha), rel=1e-12)


@pytest.mark.parametrize("k,n", [(1, 10), (37, 50), (480, 500), (999, 1000)])
def test_clopper_pearson_lower_bound_definition(k, n):
    """The lower bound p solves P(Binomial(n, p) >= k) = alpha; k = 0 gives 0."""
    alpha = 0.01
    p = clopper_pearson_lower(k, n, alpha)
    assert binom.sf(k - 1, n, p) == pytest.approx(alpha, rel=1e-6)
    assert clopper_pearson_lower(0, n, alpha) == 0.0


def test_half_space_radius_is_sound_and_nearly_tight():
    """For a half-space the smoothed classifier's exact radius is the distance to the plane; the
    certified radius is below it (w.p. 1 - alpha) and close to it for large n."""
    sigma = 0.25
    w = torch.tensor([[[1.0, -2.0], [0.5, 1.0]]], dtype=torch.float64)
    x = torch.full((1, 2, 2), 0.5, dtype=torch.float64)
    dist = sigma * 1.0                                       # pA = Phi(1)
    t = float((w * x).sum()) - dist * float(w.norm())
    out = certify(_half_space(w, t), x, sigma, n0=100, n=20_000, alpha=0.001, batch_size=5000)
    assert out["prediction"] == 1
    assert 0.9 * dist < out["radius"] <= dist


def test_abstains_at_a_fair_coin():
    """The base classifier splits the noise in half (pA = 1/2): CERTIFY must abstain."""
    w = torch.zeros(1, 2, 2, dtype=torch.float64)
    w[0, 0, 0] = 1.0
    x = torch.full((1, 2, 2), 0.5, dtype=torch.float64)
    out = certify(_half_space(w, 0.5), x, 0.5, n0=20, n=2000, alpha=0.001, batch_size=500)
    assert out == {"prediction": ABSTAIN, "radius": 0.0, "p_lower": out["p_lower"]}
    assert out["p_lower"] <= 0.5


def test_certify_images_and_certified_accuracy():
    x = torch.rand(4, 1, 3, 3)
    c = torch.tensor([2, 1, 2, 0])
    rows = certify_images(_constant(2, 3), x, c, 0.5, n0=5, n=50, alpha=0.01, seed=1)
    r = max_radius(0.5, 50, 0.01)
    assert [row["correct"] for row in rows] == [True, False, True, False]
    assert all(row["radius"] == pytest.approx(r) for row in rows)
    assert certified_accuracy(rows, [0.0, r, math.nextafter(r, 1.0)]) == [0.5, 0.5, 0.0]


def test_denoised_classifier_is_the_classifier_of_the_clamped_denoised_image():
    torch.manual_seed(0)
    clf = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 4))
    shrink = torch.nn.Conv2d(3, 3, 1, bias=False)
    with torch.no_grad():
        shrink.weight.copy_(0.5 * torch.eye(3).view(3, 3, 1, 1))
    y = torch.randn(5, 3, 2, 2) + 0.5
    base = denoised_classifier(shrink, clf)
    torch.testing.assert_close(base(y), clf((0.5 * y).clamp(0, 1)), rtol=0, atol=0)
    torch.testing.assert_close(denoised_classifier(shrink, clf, clamp=False)(y), clf(0.5 * y), rtol=0, atol=0)
    # a denoiser that returns one fixed image makes the smoothed classifier constant, certified at the largest radius
    fixed = torch.rand(1, 3, 2, 2)

    class Constant(torch.nn.Module):
        def forward(self, v):
            return fixed.expand(len(v), -1, -1, -1)

    cls = int(clf(fixed).argmax())
    rows = certify_images(denoised_classifier(Constant(), clf), torch.rand(3, 3, 2, 2), torch.tensor([cls] * 3),
                          0.25, 5, 100, 0.01)
    assert all(r["prediction"] == cls and r["radius"] == pytest.approx(max_radius(0.25, 100, 0.01)) for r in rows)


def test_same_seed_same_certificate():
    w = torch.randn(1, 3, 3, generator=torch.Generator().manual_seed(0))
    x = torch.rand(2, 1, 3, 3, generator=torch.Generator().manual_seed(1))
    base = _half_space(w, float((w * x[0]).sum()) - 0.1)
    a = certify_images(base, x, torch.tensor([1, 1]), 0.25, 10, 200, 0.01, seed=3)
    b = certify_images(base, x, torch.tensor([1, 1]), 0.25, 10, 200, 0.01, seed=3)
    assert a == b


@pytest.mark.parametrize("kwargs,match", [
    (dict(sigma=0.0), "sigma"),
    (dict(sigma=-0.25), "sigma"),
    (dict(n0=0), "n0"),
    (dict(n=2.5), "n must"),
    (dict(alpha=0.0), "alpha"),
    (dict(alpha=0.7), "alpha"),
    (dict(x=torch.full((1, 2, 2), 1.5)), "pixels in"),
    (dict(x=torch.full((1, 2, 2), -0.1)), "pixels in"),
])
def test_bad_certification_input(kwargs, match):
    args = dict(base=_constant(0), x=torch.rand(1, 2, 2), sigma=0.25, n0=5, n=20, alpha=0.01)
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        certify(**args)
