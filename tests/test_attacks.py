"""Attacks (cdn.experiments.attacks): the threat model is respected, the loss goes up, the exact optimum and the
exact robust accuracy are reached on a linear model, bad input is refused, and the adversarial
gradient is a difference of denoisers."""
import pytest
import torch
from torch import nn

from cdn.experiments.attacks import (Classifier, NoiseAveraged, accuracy_curve, attack, cross_entropy,
                                     denoiser_difference, robust_accuracy)
from cdn.joint import JointModel
from cdn.nets import GradResNet


def _tiny_net(seed=0, dtype=torch.float32):
    torch.manual_seed(seed)
    return GradResNet(num_classes=4, in_channels=3, width=4).to(dtype).eval()


def _images(n=6, seed=0, size=8):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 3, size, size, generator=g)
    x[0, 0, 0, 0], x[1, 0, 0, 0] = 0.0, 1.0  # pixels on the box edges
    return x, torch.randint(0, 4, (n,), generator=g)


def _norm(d, norm):
    d = d.flatten(1)
    return d.abs().amax(1) if norm == "Linf" else d.norm(dim=1)


@pytest.mark.parametrize("norm,eps", [("Linf", 8 / 255), ("L2", 0.5)])
@pytest.mark.parametrize("method", ["pgd", "apgd", "square"])
@pytest.mark.parametrize("noisy", [False, True])
def test_attack_stays_in_ball_and_box(norm, eps, method, noisy):
    net = _tiny_net()
    model = NoiseAveraged(net, 0.1, draws=2) if noisy else Classifier(net)
    x, c = _images()
    adv = attack(model, x, c, eps, norm, method, steps=5, restarts=2, n_queries=10, eot_iter=2)
    assert adv.shape == x.shape
    assert (_norm(adv - x, norm) <= eps * (1 + 1e-5)).all()
    assert adv.min() >= 0 and adv.max() <= 1


def test_pgd_raises_the_loss():
    model = Classifier(_tiny_net(1))
    x, c = _images(8, seed=1)
    for norm, eps in (("Linf", 4 / 255), ("L2", 0.25)):
        adv = attack(model, x, c, eps, norm, "pgd", steps=10)
        before, after = cross_entropy(model, x, c), cross_entropy(model, adv, c)
        assert (after > before).all(), (norm, before, after)


# ---------------------------------------------------------------- an exactly linear model --

def _linear_problem(eps, n=64, d=48, seed=0):
    """logits = W x + b on flattened (n, 3, 4, 4) images in [eps, 1 - eps] (so the [0, 1] box never
    binds at the optimum)."""
    g = torch.Generator().manual_seed(seed)
    lin = nn.Linear(d, 2)
    with torch.no_grad():
        lin.weight.copy_(torch.randn(2, d, generator=g) * 0.5)
        lin.bias.copy_(torch.randn(2, generator=g))
    model = nn.Sequential(nn.Flatten(), lin).eval()
    x = eps + (1 - 2 * eps) * torch.rand(n, 3, 4, 4, generator=g)
    c = torch.randint(0, 2, (n,), generator=g)
    sign = (2 * c - 1).float()                      # +1 for class 1, -1 for class 0
    dw = (lin.weight[1] - lin.weight[0]).detach()
    db = (lin.bias[1] - lin.bias[0]).detach()
    margin = sign * (x.flatten(1) @ dw + db)        # logit of c minus logit of the other class
    return model, x, c, margin, sign, dw, db


def _optimum(margin, dw, eps, norm):
    """The worst-case margin over the eps ball: margin - eps ||w_c - w_other||_dual."""
    return margin - eps * (dw.abs().sum() if norm == "Linf" else dw.norm())


@pytest.mark.parametrize("norm,eps,random_start", [("Linf", 0.05, True), ("Linf", 0.05, False), ("L2", 0.3, False)])
def test_pgd_reaches_the_optimum_of_a_linear_model(norm, eps, random_start):
    """(From a random start the L2 iterates only approach the optimum: their angle to it shrinks
    geometrically but never vanishes, so L2 is tested from x itself.)"""
    model, x, c, margin, sign, dw, db = _linear_problem(eps)
    adv = attack(model, x, c, eps, norm, "pgd", steps=10, random_start=random_start)
    reached = sign * (adv.flatten(1) @ dw + db)
    assert torch.allclose(reached, _optimum(margin, dw, eps, norm), atol=1e-4)


@pytest.mark.parametrize("norm,eps", [("Linf", 0.03), ("L2", 0.3)])
@pytest.mark.parametrize("method", ["pgd", "apgd"])
def test_robust_accuracy_of_a_linear_model_is_exact(norm, eps, method):
    """An image is robust iff its worst-case margin is positive; the attack must find exactly those."""
    model, x, c, margin, sign, dw, db = _linear_problem(eps, n=200, seed=1)
    worst = _optimum(margin, dw, eps, norm)
    keep = worst.abs() > 0.05                       # no image within float error of the boundary
    x, c, margin, worst = x[keep], c[keep], margin[keep], worst[keep]
    assert 0 < (worst > 0).sum() < (margin > 0).sum()  # the attack has something to do, and not all of it
    out = robust_accuracy(model, x, c, eps, norm, methods=(method,), steps=100)
    assert out["clean"] == pytest.approx((margin > 0).float().mean().item())
    assert out["accuracy"] == pytest.approx((worst > 0).float().mean().item())


# ------------------------------------------------------------------------------ bad input --

@pytest.mark.parametrize("kwargs,match", [
    (dict(eps=-0.1), "eps"),
    (dict(eps=float("nan")), "eps"),
    (dict(norm="L1"), "norm"),
    (dict(norm="linf"), "norm"),
    (dict(method="fgsm"), "method"),
    (dict(steps=0), "steps"),
])
def test_bad_attack_arguments(kwargs, match):
    x, c = _images(2)
    args = dict(eps=0.1, norm="Linf", method="pgd", steps=2)
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        attack(Classifier(_tiny_net()), x, c, **args)


@pytest.mark.parametrize("bad", ["above", "below", "labels"])
def test_bad_attack_images(bad):
    x, c = _images(2)
    if bad == "above":
        x = x + 1.0
    elif bad == "below":
        x = x - 0.5
    else:
        c = c.float()
    with pytest.raises(ValueError, match="must"):
        robust_accuracy(Classifier(_tiny_net()), x, c, 0.1, "L2")


def test_noise_averaged_needs_a_positive_sigma():
    with pytest.raises(ValueError, match="sigma"):
        NoiseAveraged(_tiny_net(), 0.0, 4)
    with pytest.raises(ValueError, match="draws"):
        NoiseAveraged(_tiny_net(), 0.1, 0)


def test_noise_averaged_is_a_log_probability_that_tends_to_the_classifier():
    net = _tiny_net(dtype=torch.float64)
    x, _ = _images(3)
    x = x.double()
    out = NoiseAveraged(net, 1e-7, draws=3)(x)
    assert torch.allclose(out.logsumexp(1), torch.zeros(3, dtype=torch.float64), atol=1e-12)
    assert torch.allclose(out, JointModel(net).classify(x), atol=1e-5)


# ------------------------------------------------------------------ difference of denoisers --

@pytest.mark.parametrize("sigma", [0.05, 0.5])
def test_adversarial_gradient_is_a_difference_of_denoisers_float64(sigma):
    """grad_y log p(c|y) (autograd) = (D(y,c) - D(y)) / sigma^2 to float64 error, and both equal a
    central finite difference of log p(c|y) along a random direction."""
    model = JointModel(_tiny_net(2, torch.float64))
    y, c = _images(3, seed=2)
    y = y.double()
    out = denoiser_difference(model, y, sigma, c)
    assert (out["relative_error"] < 1e-10).all()
    v = torch.randn(y.shape, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    h = 1e-5
    with torch.no_grad():
        logp = lambda z: model.classify(z).gather(1, c.view(-1, 1)).squeeze(1)  # noqa: E731
        fd = (logp(y + h * v) - logp(y - h * v)) / (2 * h)
    directional = (out["diff"] * v).flatten(1).sum(1)
    assert torch.allclose(directional, fd, rtol=1e-6, atol=1e-9)
    assert fd.abs().min() > 1e-4  # not trivially zero


def test_accuracy_curve_never_rises_and_starts_at_clean_accuracy():
    model = Classifier(_tiny_net(4))
    x, _ = _images(12, seed=4)
    c = model(x).argmax(1)  # every image correct at eps = 0
    rows = accuracy_curve(model, x, c, [0.5, 0.0, 0.1, 1.0], "L2", steps=3)
    assert [r["eps"] for r in rows] == [0.0, 0.1, 0.5, 1.0]
    assert rows[0]["accuracy"] == 1.0
    acc = [r["accuracy"] for r in rows]
    assert acc == sorted(acc, reverse=True) and acc[-1] < 1.0
    for a, b in zip(rows, rows[1:]):  # robust at a larger eps implies robust at the smaller one
        assert all(rb <= ra for ra, rb in zip(a["robust"], b["robust"]))


SMALL = dict(steps=2, restarts=1, eot_images=4, square_images=4, large_linf=1.0, large_l2=20.0, strong_steps=4,
             strong_restarts=2, square_queries=10)


def test_attack_curves_and_masking_checks_cover_every_model_norm_and_attack():
    from cdn.experiments.attacks import CHECK_EPS, GRIDS, attack_curves, masking_checks, masking_verdicts

    net = _tiny_net()
    x, c = _images(n=6)
    c = Classifier(net)(x).argmax(1)  # every image starts correct
    classifiers = {"plain": Classifier(net)}
    averaged = {"averaged": NoiseAveraged(net, 0.1, draws=2)}
    curves = attack_curves(classifiers, averaged, x, c, SMALL, seed=0, grids={"Linf": (0.0, 2 / 255), "L2": (0.0, 0.25)})
    assert set(curves) == {"plain", "averaged"} and set(curves["plain"]) == set(GRIDS)
    assert curves["plain"]["Linf"][0]["accuracy"] == 1.0 and len(curves["averaged"]["L2"][0]["robust"]) == 4
    checks = masking_checks(classifiers, averaged, x, c, SMALL, seed=0)
    # a budget that covers the whole box turns every image into any other: nothing stays correct
    assert checks["large"] == {"plain": {"Linf": 0.0, "L2": 0.0}, "averaged": {"Linf": 0.0, "L2": 0.0}}
    rows = checks["strength"]
    assert len(rows) == len(CHECK_EPS) * 5  # PGD and APGD, weak and strong, and Square, per norm
    assert {(r["method"], r["steps"], r["restarts"]) for r in rows} == {
        ("pgd", 2, 1), ("pgd", 4, 2), ("apgd", 2, 1), ("apgd", 4, 2), ("square", None, None)}
    v = masking_verdicts(checks)
    assert v["largest_at_large_budget"] == 0.0 and v["settings"] == 4 and v["cases"] == 2


def test_masking_verdicts_find_a_rise_and_a_square_win():
    from cdn.experiments.attacks import masking_verdicts

    def row(method, steps, acc):
        return dict(label="m", norm="Linf", eps=0.01, method=method, steps=steps, restarts=1, accuracy=acc)

    checks = {"large": {"m": {"Linf": 0.1, "L2": 0.0}},
              "strength": [row("pgd", 10, 0.5), row("pgd", 20, 0.6), row("apgd", 10, 0.4), row("apgd", 20, 0.4),
                           row("square", None, 0.3)]}
    v = masking_verdicts(checks)
    assert v["largest_at_large_budget"] == 0.1
    assert len(v["rises"]) == 1 and v["rises"][0][:3] == ("m", "Linf", "pgd") and abs(v["rises"][0][3] - 0.1) < 1e-12
    assert v["square_wins"] == [("m", "Linf")] and v["mean_square"] == 0.3 and v["mean_best_white_box"] == 0.4
