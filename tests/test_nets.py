"""Architecture checks: GradResNet as the paper describes it, the baselines, the UNet's homogeneity."""
import pytest
import torch
from torch import nn

from cdn.nets import ARCHITECTURES, GradResNet, ResNet18, UNet, build_net


def test_gradresnet_has_no_bias_no_batchnorm_only_smooth_activations():
    net = GradResNet(10, 3, 8)
    assert not [n for n, _ in net.named_parameters() if n.endswith("bias")]
    for m in net.modules():
        assert not isinstance(m, nn.modules.batchnorm._BatchNorm)
        assert not isinstance(m, (nn.ReLU, nn.LeakyReLU, nn.ReLU6))
        if isinstance(m, (nn.Conv2d, nn.Linear, nn.ConvTranspose2d)):
            assert m.bias is None
        if isinstance(m, nn.GroupNorm):
            raise AssertionError("GroupNorm with additive shift found")
    assert any(isinstance(m, nn.GELU) for m in net.modules())


@pytest.mark.parametrize("size", [32, 64])
def test_gradresnet_logits_for_32_and_64(size):
    net = GradResNet(7, 3, 4)
    assert net(torch.rand(2, 3, size, size)).shape == (2, 7)


def test_gradresnet_parameter_count_at_width_64(capsys):
    n = sum(p.numel() for p in GradResNet(10, 3, 64).parameters())
    print(f"GradResNet(width=64) on CIFAR-10: {n:,} parameters")
    # ResNet-18 has ~11.2M; GradResNet drops biases/shifts, adds side maps and a 3x3 energy conv
    assert 10_500_000 < n < 12_500_000


def test_side_connections_feed_every_stage():
    net = GradResNet(10, 3, 4)
    assert net.side is not None and len(net.side) == 3
    y = torch.rand(2, 3, 16, 16)
    base = net(y)
    with torch.no_grad():
        net.side[0].weight.mul_(3)
    assert not torch.allclose(base, net(y))


def test_log_energy_leaves_classification_unchanged():
    torch.manual_seed(0)
    a = GradResNet(10, 3, 4)
    b = GradResNet(10, 3, 4, head="linear")
    b.load_state_dict({k: v for k, v in a.state_dict().items() if not k.startswith("energy_conv")})
    y = torch.rand(3, 3, 16, 16, dtype=torch.float32)
    assert torch.allclose(torch.log_softmax(a(y), 1), torch.log_softmax(b(y), 1), atol=1e-4)
    assert not torch.allclose(a(y), b(y))


def test_gradresnet_is_not_scale_invariant():
    """A post-activation GroupNorm stem would give f(a y) = f(y); the pre-activation design must not."""
    torch.manual_seed(0)
    net = GradResNet(10, 3, 8, head="linear").double()
    y = torch.rand(2, 3, 16, 16, dtype=torch.float64)
    assert (net(y) - net(3 * y)).abs().max() > 1e-2


def test_resnet18_is_the_discriminative_baseline():
    net = ResNet18(10, 3, 8)
    assert any(isinstance(m, nn.BatchNorm2d) for m in net.modules())
    assert any(isinstance(m, nn.ReLU) for m in net.modules())
    assert net(torch.rand(2, 3, 32, 32)).shape == (2, 10)


def test_unet_is_bias_free_and_homogeneous():
    torch.manual_seed(0)
    net = UNet(3, 8).double()
    assert all(not n.endswith("bias") for n, _ in net.named_parameters())
    y = torch.rand(2, 3, 16, 16, dtype=torch.float64)
    for a in (0.3, 2.5):
        assert torch.allclose(net(a * y), a * net(y), atol=1e-12)
    assert net(y).shape == y.shape


def test_build_net_knows_every_architecture_and_rejects_others():
    for arch in ARCHITECTURES:
        net = build_net(arch, 4, 3, 4)
        out = net(torch.rand(2, 3, 16, 16))
        assert out.shape == ((2, 3, 16, 16) if arch in ("unet", "dncnn") else (2, 4))
    with pytest.raises(ValueError, match="unknown architecture"):
        build_net("vgg", 4, 3, 4)


def test_nets_reject_wrong_channels():
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        GradResNet(10, 3, 4)(torch.rand(2, 1, 16, 16))
    with pytest.raises(ValueError, match="divisible"):
        UNet(3, 4)(torch.rand(1, 3, 15, 15))
