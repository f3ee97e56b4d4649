"""Exact checks of the theory chapters (cdn.experiments.tweedie, .jacobian, .generative_discriminative):
Tweedie-Miyasawa on a Gaussian mixture, the
Jacobian of the denoiser (symmetry, finite differences, homogeneity of the bias-free UNet), and the
generative and discriminative estimators converging to the true logistic parameters."""
import numpy as np
import pytest
import torch

from cdn.experiments import generative_discriminative, jacobian, tweedie
from cdn.joint import JointModel
from cdn.mixture import two_moons_like_mixture
from cdn.nets import GradResNet, UNet


@pytest.mark.parametrize("sigma", [0.05, 0.3, 1.0])
def test_mixture_closed_forms_match_tweedie(sigma):
    mix = two_moons_like_mixture(torch.float64)
    y = tweedie.grid2d(2.5, 9)
    f = tweedie.mixture_fields(mix, y, sigma)
    assert torch.allclose(f["tweedie"], f["D"], atol=1e-6, rtol=0)
    assert torch.allclose(f["tweedie_c"], f["D_c"], atol=1e-6, rtol=0)
    # the posterior-weighted conditional denoisers give the unconditional one
    assert torch.allclose((f["posterior"].T[..., None] * f["D_c"]).sum(0), f["D"], atol=1e-6, rtol=0)
    # sigma^2 grad log p(c|y) = D(y, c) - D(y)
    assert torch.allclose(f["class_grad"], f["D_c"] - f["D"][None], atol=1e-6, rtol=0)


def test_mixture_model_learns_the_exact_denoiser():
    mix = two_moons_like_mixture(torch.float64)
    model, log = tweedie.train_mixture_model(mix, steps=300, seed=0)
    assert log[-1]["loss"] < log[0]["loss"]
    rows = tweedie.mixture_denoiser_errors(model, mix, [0.2], n=500)
    r = rows[0]
    assert r["learned D(y)"] < r["noisy"]  # it denoises
    assert r["relative excess"] < 0.5


def _tiny_joint():
    torch.manual_seed(0)
    return JointModel(GradResNet(3, 1, width=4).double().eval())


@pytest.mark.parametrize("c", [None, 1])
def test_joint_jacobian_symmetric_and_matches_finite_differences(c):
    model = _tiny_joint()
    g = torch.Generator().manual_seed(0)
    # 16 x 16: at 8 x 8 the last stage is 1 x 1 and its GroupNorm (one value per group) is undefined
    y = torch.rand(1, 1, 16, 16, generator=g, dtype=torch.float64)
    fn = jacobian.joint_denoiser_fn(model, 0.2, c)
    J = jacobian.jacobian(fn, y, chunk=64)
    assert J.shape == (256, 256)
    assert torch.allclose(J, J.T, atol=1e-10)
    v = torch.randn(1, 1, 16, 16, generator=g, dtype=torch.float64)
    h = 1e-6
    with torch.no_grad():
        fd = (fn(y + h * v) - fn(y - h * v)).flatten() / (2 * h)
    assert torch.allclose(J @ v.flatten(), fd, atol=1e-6, rtol=1e-6)
    jv = jacobian.jacobian_vector(fn, y, v).flatten()
    assert torch.allclose(jv, J @ v.flatten(), atol=1e-10)
    res = jacobian.jacobian_analysis(fn, y, k=3, chunk=128)
    assert res.asymmetry < 1e-10 and abs(res.trace - torch.trace(J).item()) < 1e-8
    assert res.eigenvectors.shape == (3, 1, 16, 16)


def test_homogeneous_unet_is_exactly_locally_linear():
    torch.manual_seed(0)
    net = UNet(1, width=4, depth=2).double().eval()
    g = torch.Generator().manual_seed(1)
    y = torch.rand(2, 1, 8, 8, generator=g, dtype=torch.float64)
    err = jacobian.local_linearity_error(net, y)
    assert err.max() < 1e-8
    J = jacobian.jacobian(net, y[:1], chunk=16)
    assert torch.allclose(J @ y[0].flatten(), net(y[:1]).flatten(), atol=1e-8, rtol=0)


def test_joint_gradresnet_is_not_exactly_homogeneous():
    model = _tiny_joint()
    y = torch.rand(2, 1, 16, 16, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    err = jacobian.local_linearity_error(jacobian.joint_denoiser_fn(model, 0.2), y, symmetric=True)
    err_full = jacobian.local_linearity_error(jacobian.joint_denoiser_fn(model, 0.2), y)
    assert torch.allclose(err, err_full, atol=1e-8)
    assert (err > 1e-6).all()


def test_a_score_of_degree_minus_one_gives_twice_the_correction():
    """D(y) = y + sigma^2 s(y), s homogeneous of degree -1 (here s(y) = -y / ||y||^2 * d, the log-energy
    score with R the identity): J(y) y = y - sigma^2 s(y), so ||D - J y|| / ||D - y|| is exactly 2; and
    a homogeneous map is exactly 0 in both normalisations."""
    y = torch.rand(3, 1, 8, 8, generator=torch.Generator().manual_seed(0), dtype=torch.float64) + 0.1
    d = y[0].numel()

    def shrink(v):
        return v - 0.04 * d * v / v.flatten(1).pow(2).sum(1).view(-1, 1, 1, 1)

    err = jacobian.local_linearity_error(shrink, y, relative_to="correction")
    torch.testing.assert_close(err, torch.full_like(err, 2.0), rtol=1e-9, atol=0)
    err_sym = jacobian.local_linearity_error(shrink, y, symmetric=True, relative_to="correction")
    torch.testing.assert_close(err_sym, err, rtol=1e-9, atol=0)  # J is symmetric here (a gradient field)
    net = UNet(1, width=4, depth=2).double().eval()
    assert jacobian.local_linearity_error(net, y, relative_to="correction").max() < 1e-8
    with pytest.raises(ValueError, match="relative_to"):
        jacobian.local_linearity_error(net, y, relative_to="input")


def test_generative_and_discriminative_estimators_converge():
    problem = generative_discriminative.GaussianProblem.make(d=3, separation=2.0, seed=0)
    w, b = problem.true_params
    theta = np.append(w, b)
    rng = np.random.default_rng(0)
    x, c = problem.sample(200_000, rng)
    for fit in (generative_discriminative.lda_fit, generative_discriminative.logistic_fit):
        w_hat, b_hat = fit(x, c)
        assert np.linalg.norm(np.append(w_hat, b_hat) - theta) < 0.05 * np.linalg.norm(theta)
    # the exact error of the true rule is the Bayes error Phi(-Delta/2) for equal priors
    from scipy.stats import norm
    assert abs(problem.error(w, b) - norm.cdf(-1.0)) < 1e-12
    rows = generative_discriminative.compare_estimators(problem, [50, 2000], reps=4, n_test=2000)
    by = {(r["n"], r["estimator"]): r for r in rows}
    for est in ("generative", "discriminative"):
        assert by[(2000, est)]["excess error"] < by[(50, est)]["excess error"]
        assert by[(2000, est)]["excess error"] >= -1e-12


class _WienerEnergy(torch.nn.Module):
    """``f_c(y) = -a ||y||^2 / 2`` for every class: ``D(y) = (1 - sigma^2 a) y``, the optimal denoiser of
    ``x ~ N(0, s^2 I)`` when ``a = 1 / (s^2 + sigma^2)``."""

    def __init__(self, a: float, num_classes: int = 2):
        super().__init__()
        self.a, self.num_classes = a, num_classes

    def forward(self, y, sigma=None):
        return (-0.5 * self.a * y.pow(2).flatten(1).sum(1))[:, None].repeat(1, self.num_classes)


def test_jacobian_sweep_sure_and_posterior_variance_on_the_wiener_filter():
    """For the optimal (Wiener) denoiser of a Gaussian prior, sigma^2 tr J / d is exactly the MMSE
    s^2 sigma^2 / (s^2 + sigma^2); SURE averages to the measured MSE (Stein), here over 24 images."""
    s, sigma = 0.3, 0.2
    model = JointModel(_WienerEnergy(1 / (s ** 2 + sigma ** 2)).double())
    x = s * torch.randn(24, 3, 4, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    rows = jacobian.jacobian_sweep(model, x, [sigma], k=2)
    mmse = s ** 2 * sigma ** 2 / (s ** 2 + sigma ** 2)
    for r in rows:
        assert r["posterior_variance"] == pytest.approx(mmse, rel=1e-9)
    mse, sure = np.mean([r["mse"] for r in rows]), np.mean([r["sure"] for r in rows])
    assert sure == pytest.approx(mse, rel=0.1) and mse == pytest.approx(mmse, rel=0.15)
