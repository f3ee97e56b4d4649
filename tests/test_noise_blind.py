"""The noise-blind optimum of denoising score matching (cdn.experiments.noise_blind): exact where it must be, checked against
a least-squares fit on samples, and concentrating on the true noise level as the dimension grows."""
import pytest
import torch

from cdn.experiments import noise_blind as nb


def test_with_one_training_level_the_blind_optimum_is_tweedie():
    mixture = nb.random_mixture(5, seed=1)
    y = mixture.sample(64, torch.Generator().manual_seed(0)) + 0.2 * torch.randn(64, 5, dtype=torch.float64)
    score, post = nb.noise_blind_score(mixture, y, torch.tensor([0.2], dtype=torch.float64))
    assert torch.allclose(y + 0.04 * score, mixture.posterior_mean(y, 0.2), atol=1e-12)
    assert torch.equal(post, torch.ones(64, 1, dtype=torch.float64))


def test_the_blind_optimum_is_the_least_squares_field_of_the_samples():
    """In one dimension, with sigma in {0.1, 0.4}: the s minimising sum (sigma s + eps)^2 over the samples whose y
    falls in a narrow bin is s*(y) at the bin's centre, within sampling error."""
    mixture = nb.random_mixture(1, seed=3)
    sigmas = torch.tensor([0.1, 0.4], dtype=torch.float64)
    g = torch.Generator().manual_seed(0)
    n = 2_000_000
    x = mixture.sample(n, g)
    sig = sigmas[torch.randint(0, 2, (n,), generator=g)][:, None]
    eps = torch.randn(n, 1, generator=g, dtype=torch.float64)
    y = x + sig * eps
    for y0 in (-0.3, 0.0, 0.25):
        inside = (y[:, 0] - y0).abs() < 0.005
        fitted = -(sig[inside] * eps[inside]).sum() / sig[inside].pow(2).sum()
        exact, _ = nb.noise_blind_score(mixture, torch.tensor([[y0]], dtype=torch.float64), sigmas)
        assert fitted.item() == pytest.approx(exact.item(), rel=0.05, abs=0.05), y0


def test_the_posterior_of_the_level_concentrates_with_the_dimension():
    rows = nb.noise_blind_gap([2, 32, 512], 0.1, n=200, grid=50)
    excess = [r["relative excess"] for r in rows]
    sd = [r["sd of log sigma | y"] for r in rows]
    assert excess[0] > 0.1 and excess == sorted(excess, reverse=True) and excess[-1] < 0.02
    assert sd == sorted(sd, reverse=True)
    assert all(r["mse told sigma"] <= r["mse noise-blind optimum"] + 1e-12 for r in rows)


def test_bad_shapes_are_named():
    with pytest.raises(ValueError, match="means must be"):
        nb.IsotropicMixture(torch.zeros(3, 2), torch.ones(2), torch.ones(3) / 3)


def test_the_isotropic_mixture_is_cdn_mixture_with_covariances_tau2_identity():
    """IsotropicMixture keeps O(d) closed forms for d up to 3072; at small d it is cdn.mixture.GaussianMixture with
    covariances tau_c^2 I, to rounding."""
    from cdn.mixture import GaussianMixture

    iso = nb.random_mixture(6, seed=2)
    full = GaussianMixture(iso.means, iso.variances[:, None, None] * torch.eye(6, dtype=iso.means.dtype), iso.weights)
    y = iso.sample(32, torch.Generator().manual_seed(1)) + 0.3 * torch.randn(32, 6, dtype=torch.float64)
    sigma = torch.full((32,), 0.3, dtype=torch.float64)
    assert torch.allclose(iso.log_joint(y, 0.3), full.log_joint(y, sigma), atol=1e-10)
    assert torch.allclose(iso.posterior_mean(y, 0.3), full.posterior_mean(y, sigma), atol=1e-12)
