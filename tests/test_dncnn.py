"""The bias-free DnCNN baseline: shapes, exact homogeneity in evaluation, and one training step of cdn train."""
import pytest
import torch

from cdn.nets import DnCNN, build_net


def test_dncnn_is_exactly_homogeneous_in_evaluation():
    torch.manual_seed(0)
    net = DnCNN(3, 8, depth=5)
    y0 = torch.rand(2, 3, 8, 8)
    assert torch.equal(net(y0), y0)  # the last convolution starts at zero: D is the identity before training
    torch.nn.init.normal_(net.residual[-1].weight, std=0.1)  # a residual that is not zero
    net.train()
    net(torch.rand(16, 3, 8, 8))  # moves the running standard deviations away from 1
    net.eval()
    y = torch.rand(4, 3, 8, 8, dtype=torch.float64)
    net = net.double()
    for a in (0.3, 2.0, 7.5):
        assert torch.allclose(net(a * y), a * net(y), rtol=1e-12, atol=1e-12)
    assert not torch.allclose(net(y), y)  # the residual is not zero
    assert all(not isinstance(m, torch.nn.Conv2d) or m.bias is None for m in net.modules())


def test_bias_free_batchnorm_divides_by_the_batch_sd_without_centring():
    from cdn.nets.dncnn import BiasFreeBatchNorm

    bn = BiasFreeBatchNorm(2, momentum=1.0).train()
    h = torch.randn(5, 2, 3, 3) + 4.0
    out = bn(h)
    sd = (h.var(dim=(0, 2, 3)) + 1e-5).sqrt()
    assert torch.allclose(out, h / sd[None, :, None, None]) and torch.allclose(bn.running_sd, sd)


def test_dncnn_trains_as_a_model_of_cdn(tmp_path):
    from cdn.data import make_synthetic
    from cdn.profiles import get_config
    from cdn.train import train

    config = get_config("smoke", "dncnn", "synthetic", steps=2, checkpoint_every=2)
    state = train(config, tmp_path / "run", make_synthetic("train", size=8, n=64), device="cpu", progress=False)
    assert state["finished"] and isinstance(build_net("dncnn", 4, 3, 4), DnCNN)
    with pytest.raises(ValueError, match="depth >= 3"):
        DnCNN(3, 4, depth=2)


def test_init_probe_measures_the_last_relu_layer_and_the_loss_against_the_identity():
    from cdn.experiments.dncnn_init import init_probe

    images = torch.rand(16, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    # untrained, last convolution at zero: D is exactly the identity
    start = init_probe(images, 0, zero_last=True, width=4, batch=4)
    assert start["loss_over_identity"] == pytest.approx(1.0, abs=1e-12)
    assert 0.0 <= start["last_relu_active"] <= 1.0
    trained = init_probe(images, 20, zero_last=True, width=4, batch=4)
    assert trained["loss_over_identity"] != start["loss_over_identity"]
    assert init_probe(images, 20, zero_last=False, width=4, batch=4) != trained  # PyTorch's initialisation
    with pytest.raises(ValueError, match="N >= 2 \\* batch"):
        init_probe(images[:6], 1, zero_last=True, batch=4)
