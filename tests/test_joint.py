"""Exact checks of the joint model: Tweedie-Miyasawa on a Gaussian mixture against closed forms,
autograd scores against finite differences, and the difference-of-denoisers identity."""
import pytest
import torch

from cdn.joint import JointModel
from cdn.mixture import MixtureLogits, two_moons_like_mixture
from cdn.nets import GradResNet


@pytest.fixture
def mixture():
    return two_moons_like_mixture(torch.float64)


@pytest.mark.parametrize("conditional", [False, True])
@pytest.mark.parametrize("sigma", [0.05, 0.3, 1.0])
def test_tweedie_matches_closed_form(mixture, sigma, conditional):
    """D(y) = E[x | y] and D(y, c) = E[x | y, c] of the exact mixture, to 1e-5 in float64."""
    g = torch.Generator().manual_seed(int(conditional))
    x, c = mixture.sample(256, g)
    y = x + sigma * torch.randn(x.shape, generator=g, dtype=torch.float64)
    model = JointModel(MixtureLogits(mixture))
    sig = torch.full((256,), sigma, dtype=torch.float64)
    cls = c if conditional else None
    denoised = model.denoise(y, sigma, cls)
    assert torch.allclose(denoised, mixture.posterior_mean(y, sig, cls), atol=1e-5, rtol=0)
    # and it really denoises: closer to x than y is, on average
    assert (denoised - x).pow(2).mean() < (y - x).pow(2).mean()


def test_tweedie_per_image_sigma(mixture):
    g = torch.Generator().manual_seed(2)
    x, _ = mixture.sample(64, g)
    sig = torch.linspace(0.01, 2.0, 64, dtype=torch.float64)
    y = x + sig[:, None] * torch.randn(x.shape, generator=g, dtype=torch.float64)
    model = JointModel(MixtureLogits(mixture))
    assert torch.allclose(model.denoise(y, sig), mixture.posterior_mean(y, sig), atol=1e-5, rtol=0)


def test_classify_is_exact_posterior(mixture):
    g = torch.Generator().manual_seed(3)
    x, _ = mixture.sample(32, g)
    sig = torch.full((32,), 0.4, dtype=torch.float64)
    model = JointModel(MixtureLogits(mixture))
    lj = mixture.log_joint(x, sig)
    assert torch.allclose(model.classify(x, sig).exp(), torch.softmax(lj, 1), atol=1e-12)
    assert torch.allclose(model.log_marginal(x, sig), torch.logsumexp(lj, 1), atol=1e-12)


def _small_net(seed=0, **kw):
    torch.manual_seed(seed)
    return GradResNet(5, 3, 4, **kw).double()


@pytest.mark.parametrize("conditional", [False, True])
def test_score_matches_finite_differences(conditional):
    model = JointModel(_small_net()).eval()
    g = torch.Generator().manual_seed(0)
    y = torch.rand(2, 3, 16, 16, generator=g, dtype=torch.float64)
    c = torch.tensor([1, 3]) if conditional else None
    score = model.score(y, c=c)

    def energy(z):
        logits = model.logits(z)
        return logits.gather(1, c.view(-1, 1)).squeeze(1) if conditional else torch.logsumexp(logits, 1)

    h = 1e-6  # the net is strongly curved (instance-like GroupNorm at width 4): small h, float64
    for k in range(3):  # random directions
        v = torch.randn(y.shape, generator=g, dtype=torch.float64)
        fd = (energy(y + h * v) - energy(y - h * v)) / (2 * h)
        assert torch.allclose((score * v).flatten(1).sum(1), fd, rtol=1e-6, atol=1e-8)
    for idx in [(0, 0, 0, 0), (1, 2, 5, 7), (0, 1, 3, 3)]:  # single pixels
        e = torch.zeros_like(y)
        e[idx] = 1
        fd = (energy(y + h * e) - energy(y - h * e)) / (2 * h)
        assert abs(score[idx].item() - fd[idx[0]].item()) < 1e-6 * max(1.0, abs(fd[idx[0]].item()))


def test_score_is_batched_per_image():
    """The score of an image does not depend on the other images of the batch (GroupNorm)."""
    model = JointModel(_small_net()).eval()
    y = torch.rand(4, 3, 16, 16, dtype=torch.float64)
    together = model.score(y)
    alone = torch.cat([model.score(y[i:i + 1]) for i in range(4)])
    assert torch.allclose(together, alone, atol=1e-12)


@pytest.mark.parametrize("sigma", [0.05, 0.5])
def test_difference_of_denoisers_identity(sigma):
    model = JointModel(_small_net(1)).eval()
    y = torch.rand(3, 3, 8, 8, dtype=torch.float64)
    c = torch.tensor([0, 2, 4])
    lhs = model.class_gradient(y, None, c)
    rhs = (model.denoise(y, sigma, c) - model.denoise(y, sigma)) / sigma ** 2
    assert torch.allclose(lhs, rhs, atol=1e-9, rtol=1e-7)
    assert lhs.abs().max() > 1e-6  # not trivially zero


def test_denoise_under_no_grad_train_and_eval_and_sizes():
    net = _small_net()
    model = JointModel(net)
    for mode in (True, False):
        net.train(mode)
        for size in (8, 32, 64):
            y = torch.rand(2, 3, size, size, dtype=torch.float64)
            with torch.no_grad():
                d = model.denoise(y, 0.1)
            assert d.shape == y.shape and not d.requires_grad
            d2 = model.denoise(y, torch.tensor([0.1, 0.1], dtype=torch.float64))
            assert torch.allclose(d, d2)


def test_denoise_create_graph_reaches_parameters():
    net = _small_net()
    model = JointModel(net)
    y = torch.rand(2, 3, 8, 8, dtype=torch.float64)
    d = model.denoise(y, 0.1, create_graph=True)
    (d.pow(2).sum()).backward()
    grads = [p.grad for p in net.parameters() if p.grad is not None]
    assert grads and sum(gr.abs().sum().item() for gr in grads) > 0


def test_noise_conditioned_net_needs_sigma():
    model = JointModel(_small_net(noise_conditioning=True))
    y = torch.rand(2, 3, 8, 8, dtype=torch.float64)
    with pytest.raises(ValueError, match="sigma"):
        model.classify(y)
    assert model.classify(y, 0.1).shape == (2, 5)
    # the conditioning changes the output once its weights are non-zero
    for m in model.net.modules():
        if getattr(m, "cond", None) is not None:
            torch.nn.init.normal_(m.cond.weight, std=0.5)
    assert not torch.allclose(model.logits(y, 0.01), model.logits(y, 1.0))
