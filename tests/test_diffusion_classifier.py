"""The denoising readout (cdn.experiments.diffusion_classifier): with the exact denoisers of a Gaussian mixture it makes the
Bayes decision of the class likelihood, and on a network it reports its accuracy and cost."""
import pytest
import torch

from cdn.experiments.diffusion_classifier import conditional_errors, readout_accuracy
from cdn.joint import JointModel
from cdn.mixture import MixtureLogits, two_moons_like_mixture


def test_with_exact_denoisers_the_readout_is_the_likelihood_decision():
    """err_c approximates -log p(x | c) up to a term free of c (the ELBO): argmin_c err_c agrees with
    argmax_c log p(x | c) on nearly every sample (a uniform prior: the mixture's weights are not used)."""
    mixture = two_moons_like_mixture()
    model = JointModel(MixtureLogits(mixture))
    g = torch.Generator().manual_seed(0)
    x, c = mixture.sample(2000, g)
    err = conditional_errors(model, x, (0.02, 0.05, 0.1, 0.2, 0.5), draws=16, generator=g)
    likelihood = mixture.log_joint(x, torch.zeros(len(x), dtype=x.dtype)) - torch.log(mixture.weights)
    assert (err.argmin(1) == likelihood.argmax(1)).double().mean() > 0.98
    assert (err.argmin(1) == c).double().mean() > 0.95


def test_readout_accuracy_on_a_network_counts_its_evaluations():
    from cdn.data import make_synthetic
    from cdn.nets import build_net

    data = make_synthetic("test", size=8, n=40)
    model = JointModel(build_net("gradresnet", data.num_classes, 3, 4)).eval()
    out = readout_accuracy(model, data, sigmas=(0.1, 0.3), draws=2, batch_size=16)
    assert out["images"] == 40 and 0 <= out["readout_accuracy"] <= 1 and 0 <= out["agreement"] <= 1
    assert out["evaluations_readout"] == 2 * 2 * (1 + data.num_classes) and out["evaluations_forward"] == 1


def test_bad_arguments_are_named():
    model = JointModel(MixtureLogits(two_moons_like_mixture()))
    with pytest.raises(ValueError, match="draws >= 1"):
        conditional_errors(model, torch.zeros(2, 2, dtype=torch.float64), (), draws=1)
