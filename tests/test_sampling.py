"""Samplers of cdn.experiments.sampling against exact Gaussian mixtures: the EDM-style ODE/SDE samplers and the
coarse-to-fine ascent reproduce the mixture (means, covariances, class proportions); the class term
puts samples in the requested component; bad inputs raise clear errors."""
import pytest
import torch

from cdn.joint import JointModel
from cdn.mixture import GaussianMixture, MixtureLogits, two_moons_like_mixture
from cdn.nets import GradResNet
from cdn.experiments.sampling import coarse_to_fine, edm_sample, edm_sigmas, sample_accuracy

F64 = torch.float64


@pytest.fixture(scope="module")
def mixture():
    return two_moons_like_mixture(F64)


def _responsibilities(mix, x):
    return torch.softmax(mix.log_joint(x, torch.zeros(len(x), dtype=F64)), 1)


def _moments(mix):
    mean = mix.weights @ mix.means
    second = (mix.weights[:, None, None] * (mix.covs + mix.means[:, :, None] * mix.means[:, None, :])).sum(0)
    return mean, second - mean[:, None] * mean[None, :]


@pytest.mark.parametrize("method,steps", [("heun", 40), ("euler_maruyama", 200)])
def test_edm_samples_match_mixture(mixture, method, steps):
    model = JointModel(MixtureLogits(mixture))
    res = edm_sample(model, (4000, 2), steps=steps, method=method, sigma_max=20.0, mean=0.0,
                     generator=torch.Generator().manual_seed(0), dtype=F64)
    x = res.samples
    mean, cov = _moments(mixture)
    assert torch.allclose(x.mean(0), mean, atol=0.06)
    assert torch.allclose(torch.cov(x.T), cov, atol=0.06)
    # E_{x ~ p}[p(c | x)] = pi_c exactly: the class proportions of the samples
    assert torch.allclose(_responsibilities(mixture, x).mean(0), mixture.weights, atol=0.03)


@pytest.mark.parametrize("k", [0, 2])
def test_edm_conditional_samples_match_component(mixture, k):
    model = JointModel(MixtureLogits(mixture))
    res = edm_sample(model, (2000, 2), c=k, guidance=1.0, steps=40, sigma_max=20.0, mean=0.0,
                     generator=torch.Generator().manual_seed(1), dtype=F64)
    x = res.samples
    assert torch.allclose(x.mean(0), mixture.means[k], atol=0.04)
    assert torch.allclose(torch.cov(x.T), mixture.covs[k], atol=0.03)


def test_guidance_sharpens_class(mixture):
    model = JointModel(MixtureLogits(mixture))
    frac = []
    for w in (0.0, 1.0, 4.0):
        res = edm_sample(model, (1000, 2), c=1, guidance=w, steps=30, sigma_max=20.0, mean=0.0,
                         generator=torch.Generator().manual_seed(2), dtype=F64)
        frac.append(float((_responsibilities(mixture, res.samples).argmax(1) == 1).double().mean()))
    assert frac[0] < 0.45 and frac[1] > 0.9 and frac[2] >= frac[1]


def test_edm_reproducible_and_trajectory(mixture):
    model = JointModel(MixtureLogits(mixture))
    kw = dict(steps=10, method="euler_maruyama", sigma_max=5.0, mean=0.0, dtype=F64, record_every=3)
    a = edm_sample(model, (64, 2), generator=torch.Generator().manual_seed(3), **kw)
    b = edm_sample(model, (64, 2), generator=torch.Generator().manual_seed(3), **kw)
    assert torch.equal(a.samples, b.samples)
    assert a.trajectory.shape[1:] == (64, 2) and a.trajectory_steps[-1] == 10
    s = edm_sigmas(10, 0.002, 5.0)
    assert s[0] == pytest.approx(5.0) and s[-2] == pytest.approx(0.002) and s[-1] == 0 and (s.diff() < 0).all()


def _low_rank_mixture(d=16):
    g = torch.Generator().manual_seed(0)
    means = torch.rand(3, d, generator=g, dtype=F64)
    u = torch.randn(3, d, 2, generator=g, dtype=F64) * 0.15
    covs = u @ u.transpose(1, 2) + 1e-4 * torch.eye(d, dtype=F64)
    return GaussianMixture(means, covs, torch.tensor([0.5, 0.3, 0.2], dtype=F64))


def test_coarse_to_fine_matches_low_dimensional_mixture():
    """Kadkhodaie-Simoncelli assume the residual measures the noise, true for data near
    low-dimensional sets (like images): a mixture of rank-2 Gaussians in R^16."""
    mix = _low_rank_mixture()
    model = JointModel(MixtureLogits(mix))
    res = coarse_to_fine(model, (2000, 16), generator=torch.Generator().manual_seed(2), dtype=F64)
    x = res.samples
    assert (res.sigmas < 0.01).all() and (res.steps > 1).all()
    p = _responsibilities(mix, x)
    assert torch.allclose(p.mean(0), mix.weights, atol=0.06)
    assert torch.allclose(x.mean(0), mix.weights @ mix.means, atol=0.05)
    lab = p.argmax(1)
    for k in range(3):
        xs = x[lab == k]
        assert torch.allclose(xs.mean(0), mix.means[k], atol=0.06)
        assert torch.allclose(torch.cov(xs.T), mix.covs[k], atol=0.06)


def test_coarse_to_fine_class_conditional_lands_in_component():
    mix = _low_rank_mixture()
    model = JointModel(MixtureLogits(mix))
    c = torch.tensor([0, 1, 2] * 100)
    res = coarse_to_fine(model, (300, 16), c=c, generator=torch.Generator().manual_seed(4), dtype=F64,
                         record_every=5)
    assert (_responsibilities(mix, res.samples).argmax(1) == c).double().mean() > 0.97
    # the trajectory's effective noise level decreases from about sigma0 to below sigma_stop
    assert res.trajectory.shape[1:] == (300, 16)
    med = res.trajectory_sigmas.median(1).values
    assert med[0] > 0.3 and med[-1] < 0.01 and (med.diff() <= 0).all()


def test_coarse_to_fine_noise_blind_image_net():
    torch.manual_seed(0)
    model = JointModel(GradResNet(num_classes=3, in_channels=3, width=4)).eval()
    res = coarse_to_fine(model, (4, 3, 16, 16), c=torch.tensor([0, 1, 2, 0]), guidance=2.0, max_steps=5,
                         generator=torch.Generator().manual_seed(0), record_every=2)
    assert res.samples.shape == (4, 3, 16, 16) and torch.isfinite(res.samples).all()
    assert (res.steps <= 5).all()
    acc = sample_accuracy(model, res.samples, torch.tensor([0, 1, 2, 0]))
    assert 0.0 <= acc <= 1.0


@pytest.mark.parametrize("kwargs,match", [
    (dict(c=3), "unknown class"),
    (dict(c=-1), "unknown class"),
    (dict(c=torch.tensor([0, 1])), "shape"),
    (dict(c=0, guidance=-0.5), "guidance"),
    (dict(steps=0), "steps"),
    (dict(steps=-3), "steps"),
    (dict(method="ddim"), "method"),
])
def test_edm_bad_input(mixture, kwargs, match):
    model = JointModel(MixtureLogits(mixture))
    with pytest.raises(ValueError, match=match):
        edm_sample(model, (4, 2), dtype=F64, **kwargs)


@pytest.mark.parametrize("kwargs,match", [
    (dict(c=5), "unknown class"),
    (dict(c=0, guidance=-1.0), "guidance"),
    (dict(max_steps=0), "max_steps"),
    (dict(h0=0.0), "h0"),
    (dict(sigma_stop=2.0), "sigma_stop"),
])
def test_coarse_to_fine_bad_input(mixture, kwargs, match):
    model = JointModel(MixtureLogits(mixture))
    with pytest.raises(ValueError, match=match):
        coarse_to_fine(model, (4, 2), dtype=F64, **kwargs)


@pytest.mark.parametrize("shape", [(4,), (0, 2), "abc"])
def test_bad_shape(mixture, shape):
    model = JointModel(MixtureLogits(mixture))
    with pytest.raises(ValueError, match="shape"):
        edm_sample(model, shape, dtype=F64)
