"""EGC's objective on the joint model's network (cdn.profiles.MODEL_SETTINGS["egc"]): DDPM's noise levels on
the variance-exploding scale, the variance-preserving input, and a training run through the usual loop."""
import math

import pytest
import torch

from cdn import get_config
from cdn.losses import DDPM_STEPS, SigmaSampler, ddpm_sigmas
from cdn.nets import build_net


def test_ddpm_sigmas_are_the_ve_scale_of_the_linear_schedule():
    s = ddpm_sigmas()
    assert s.shape == (DDPM_STEPS,) and bool((s[1:] > s[:-1]).all())
    abar = 1.0
    for t, beta in enumerate(torch.linspace(1e-4, 0.02, 1000, dtype=torch.float64).tolist()):
        abar *= 1 - beta
        if t in (0, 499, 999):
            assert s[t].item() == pytest.approx(math.sqrt((1 - abar) / abar), rel=1e-12)
    # x_t = sqrt(abar) x + sqrt(1 - abar) eps equals sqrt(abar) (x + sigma eps)
    assert s[0].item() == pytest.approx(math.sqrt(1e-4 / (1 - 1e-4)), rel=1e-9) and 150 < s[-1].item() < 160


def test_ddpm_sampler_draws_the_schedule_uniformly():
    draws = SigmaSampler(1e-3, 200.0, "ddpm")(20_000, torch.Generator().manual_seed(0)).double()
    table = ddpm_sigmas()
    nearest = (draws[:, None] - table[None]).abs().argmin(1)
    torch.testing.assert_close(draws, table[nearest], rtol=1e-6, atol=0)  # every draw is one of the 1,000 levels
    counts = torch.bincount(nearest, minlength=1000).double()
    assert counts.mean() == 20 and counts.std() < 2 * math.sqrt(20)  # uniform: Poisson-like spread
    clipped = SigmaSampler(1e-3, 1.0, "ddpm")(1000, torch.Generator().manual_seed(0))
    assert clipped.max() <= 1.0


def test_input_scaling_feeds_the_variance_preserving_image():
    torch.manual_seed(0)
    net = build_net("gradresnet-stage1energy", 10, 3, 4, True).double().eval()
    y = torch.rand(3, 3, 8, 8, dtype=torch.float64)
    sigma = torch.tensor([0.1, 1.0, 10.0], dtype=torch.float64)
    plain = net(y / torch.sqrt(1 + sigma.view(-1, 1, 1, 1) ** 2), sigma)
    net.input_scaling = True
    torch.testing.assert_close(net(y, sigma), plain, rtol=1e-12, atol=1e-12)
    with pytest.raises(ValueError, match=r"net\(y, sigma\)"):
        net(y)


def test_egc_config_and_a_training_run(tmp_path):
    from cdn.data import make_synthetic
    from cdn.runs import Data
    from cdn.runs import get_or_train

    cfg = get_config("smoke", "egc", "synthetic", steps=3, checkpoint_every=3)
    assert cfg.noise_conditioning and cfg.input_scaling and cfg.sigma_distribution == "ddpm" and cfg.objective == "joint"
    assert cfg.run_name() != get_config("smoke", "gradresnet-cond", "synthetic", steps=3, checkpoint_every=3).run_name()
    with pytest.raises(ValueError, match="noise-conditioned"):
        get_config("smoke", "gradresnet", "synthetic", input_scaling=True)
    data = Data(make_synthetic("train"), make_synthetic("test"), cfg)
    run = get_or_train(cfg, data=data, root=tmp_path, device="cpu", progress=False)
    assert run.net.input_scaling and torch.isfinite(run.model.denoise(data.test.to_float(slice(0, 2)), 0.5)).all()
