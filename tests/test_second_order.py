"""The closed-form second derivatives of cdn.nets.second_order against PyTorch's autograd: exact in float64
(gradcheck and gradgradcheck against finite differences, and the same numbers as F.group_norm / F.gelu),
and the joint loss's gradient of a whole network in float32."""
import json

import pytest
import torch
import torch.nn.functional as F

from cdn.nets import second_order as so


@pytest.mark.parametrize("groups,shape", [(2, (3, 4, 5, 5)), (4, (2, 4, 3, 3)), (1, (2, 6, 4, 4))])
def test_group_norm_first_and_second_derivatives_are_exact(groups, shape):
    g = torch.Generator().manual_seed(0)
    x = (torch.randn(shape, generator=g, dtype=torch.float64) * 2 + 0.5).requires_grad_(True)
    fn = lambda t: so.group_norm(t, groups, 1e-5)
    assert torch.allclose(fn(x), F.group_norm(x, groups, eps=1e-5), atol=1e-12)
    assert torch.autograd.gradcheck(fn, (x,))
    assert torch.autograd.gradgradcheck(fn, (x,))


def test_gelu_first_and_second_derivatives_are_exact():
    x = (torch.randn(40, generator=torch.Generator().manual_seed(1), dtype=torch.float64) * 3).requires_grad_(True)
    assert torch.equal(so.gelu(x), F.gelu(x))
    assert torch.autograd.gradcheck(so.gelu, (x,))
    assert torch.autograd.gradgradcheck(so.gelu, (x,))


def test_second_derivatives_match_pytorchs_double_backward():
    """The gradient of a score-matching-like loss, ||grad_x <v, layer(x)>||^2, taken through each layer."""
    g = torch.Generator().manual_seed(2)
    x = torch.randn(2, 8, 6, 6, generator=g, dtype=torch.float64, requires_grad=True)
    v = torch.randn(2, 8, 6, 6, generator=g, dtype=torch.float64)
    for ours, theirs in ((lambda t: so.group_norm(t, 4), lambda t: F.group_norm(t, 4)), (so.gelu, F.gelu)):
        grads = []
        for layer in (ours, theirs):
            (s,) = torch.autograd.grad((v * layer(x)).sum(), x, create_graph=True)
            (gx,) = torch.autograd.grad((s.pow(2) * v).sum(), x)
            grads.append(gx)
        assert torch.allclose(grads[0], grads[1], rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("stride,padding,kernel,bias", [(1, 1, 3, False), (2, 1, 3, True), (2, 0, 1, False)])
def test_convolution_first_and_second_derivatives_are_exact(stride, padding, kernel, bias):
    g = torch.Generator().manual_seed(3)
    x = torch.randn(2, 3, 7, 7, generator=g, dtype=torch.float64, requires_grad=True)
    w = torch.randn(4, 3, kernel, kernel, generator=g, dtype=torch.float64, requires_grad=True)
    b = torch.randn(4, generator=g, dtype=torch.float64, requires_grad=True) if bias else None
    inputs = (x, w, b) if bias else (x, w)
    fn = lambda x, w, b=None: so.conv2d(x, w, b, stride, padding)
    assert torch.allclose(fn(*inputs), F.conv2d(x, w, b, stride, padding), atol=1e-12)
    assert torch.autograd.gradcheck(fn, inputs)
    assert torch.autograd.gradgradcheck(fn, inputs)


def test_convolution_double_backward_matches_pytorchs_for_the_weights():
    """The gradient of ||grad_x <v, conv(x)>||^2 with respect to x and to the weight, through ours and PyTorch's."""
    g = torch.Generator().manual_seed(4)
    x = torch.randn(2, 3, 6, 6, generator=g, dtype=torch.float64, requires_grad=True)
    w = torch.randn(5, 3, 3, 3, generator=g, dtype=torch.float64, requires_grad=True)
    v = torch.randn(2, 5, 3, 3, generator=g, dtype=torch.float64)
    grads = []
    for conv in (so.conv2d, F.conv2d):
        out = conv(x, w, None, 2, 1)
        (s,) = torch.autograd.grad((v * torch.tanh(out)).sum(), x, create_graph=True)
        grads.append(torch.autograd.grad((s.pow(2)).sum(), (x, w)))
    for ours, theirs in zip(*grads):
        assert torch.allclose(ours, theirs, rtol=1e-10, atol=1e-12)


def test_input_gradient_only_skips_the_weight_gradient_and_keeps_the_input_gradient():
    x = torch.randn(2, 3, 5, 5, dtype=torch.float64, requires_grad=True)
    w = torch.randn(4, 3, 3, 3, dtype=torch.float64, requires_grad=True)
    (full,) = torch.autograd.grad(so.conv2d(x, w, None, 1, 1).pow(2).sum(), x)
    with so.input_gradient_only():
        (only,) = torch.autograd.grad(so.conv2d(x, w, None, 1, 1).pow(2).sum(), x)
        weight_grad = torch.autograd.grad(so.conv2d(x, w, None, 1, 1).sum(), w, allow_unused=True)[0]
    assert torch.equal(full, only)
    assert weight_grad is None  # the point of the switch: no weight gradient is computed inside it


def test_the_convolution_module_keeps_nn_conv2d_parameters_and_falls_back_outside_the_switch():
    torch.manual_seed(0)
    ours, theirs = so.Conv2d(3, 4, 3, 2, 1), torch.nn.Conv2d(3, 4, 3, 2, 1)
    theirs.load_state_dict(ours.state_dict())
    x = torch.randn(2, 3, 8, 8)
    assert isinstance(ours, torch.nn.Conv2d) and ours.state_dict().keys() == theirs.state_dict().keys()
    assert torch.equal(ours(x), theirs(x))
    with so.second_order_layers():
        assert torch.allclose(ours(x), theirs(x), atol=1e-6)
    with pytest.raises(ValueError, match="padding as numbers"):
        so.conv2d(x, ours.weight, None, 1, "same")


def test_a_third_derivative_is_refused():
    x = torch.randn(5, dtype=torch.float64, requires_grad=True)
    (d1,) = torch.autograd.grad(so.gelu(x).sum(), x, create_graph=True)
    (d2,) = torch.autograd.grad(d1.sum(), x, create_graph=True)
    with pytest.raises(RuntimeError):
        torch.autograd.grad(d2.sum(), x)


def test_bad_shapes_are_named():
    with pytest.raises(ValueError, match="divisible by 3"):
        so.group_norm(torch.zeros(2, 4, 3, 3), 3)


def test_the_switch_is_scoped():
    assert not so.active()
    with so.second_order_layers():
        assert so.active()
        with so.second_order_layers(False):
            assert not so.active()
        assert so.active()
    assert not so.active()


def test_a_training_run_with_the_closed_forms_follows_the_reference(monkeypatch, tmp_path):
    """The same smoke run with CDN_SECOND_ORDER=on and off: the state says which, the losses agree to float32
    rounding (amplified by a few optimiser steps), the weights too."""
    from cdn.data import make_synthetic
    from cdn.profiles import get_config
    from cdn.train import train
    from safetensors.torch import load_file

    config = get_config("smoke", "gradresnet", "synthetic", steps=4, precision="float32")
    data = make_synthetic("train", size=8, n=64)
    logs, weights = {}, {}
    for setting in ("on", "off"):
        monkeypatch.setenv("CDN_SECOND_ORDER", setting)
        state = train(config, tmp_path / setting, data, device="cpu", progress=False)
        assert state["second_order"] == (so.DESCRIPTION if setting == "on" else "autograd")
        logs[setting] = [json.loads(line) for line in (tmp_path / setting / "log.jsonl").read_text().splitlines()]
        weights[setting] = load_file(tmp_path / setting / "model.safetensors")
    for a, b in zip(logs["on"], logs["off"]):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-4)
    for k in weights["on"]:
        assert torch.allclose(weights["on"][k], weights["off"][k], rtol=1e-3, atol=1e-5), k


def test_auto_keeps_pytorchs_layers_for_short_runs_and_other_objectives(monkeypatch):
    monkeypatch.setenv("CDN_SECOND_ORDER", "auto")
    assert not so.use_second_order("joint", "cpu", steps=so.MIN_STEPS - 1)
    assert not so.use_second_order("ce", "cpu", steps=10_000)
    assert so.use_second_order("joint", "cpu", steps=so.MIN_STEPS) == so.compiler_works("cpu")
    monkeypatch.setenv("CDN_SECOND_ORDER", "maybe")
    with pytest.raises(ValueError, match="CDN_SECOND_ORDER must be one of"):
        so.use_second_order("joint")


@pytest.mark.parametrize("arch, ce_on", [("gradresnet", "noisy"), ("gradresnet-stage1energy", "both")])
def test_on_a_network_the_score_is_unchanged_and_the_loss_gradient_agrees_in_float32(arch, ce_on):
    """The closed forms change only the double backward: the score (a first-order gradient, the same kernels)
    is bitwise PyTorch's, the joint loss and its parameter gradient agree to float32 rounding; with the clean
    image's cross-entropy too (the default's ``ce_on="both"``, whose clean pass keeps PyTorch's layers)."""
    from cdn.joint import JointModel
    from cdn.losses import JointLoss
    from cdn.nets import build_net

    torch.manual_seed(0)
    model = JointModel(build_net(arch, 10, 3, 8))
    x, c = torch.rand(8, 3, 16, 16), torch.randint(0, 10, (8,))
    out = {}
    for on in (False, True):
        with so.second_order_layers(on):
            score = model.score(x + 0.1 * torch.randn(x.shape, generator=torch.Generator().manual_seed(1)))
            loss, _ = JointLoss(ce_on=ce_on)(model, x, c, torch.Generator().manual_seed(0))
        grads = torch.autograd.grad(loss, list(model.parameters()))
        out[on] = (score, loss, torch.cat([g.flatten() for g in grads]))
    assert torch.equal(out[True][0], out[False][0]) and torch.equal(out[True][1], out[False][1])
    diff = (out[True][2] - out[False][2]).norm() / out[False][2].norm()
    assert diff < 1e-5, diff
