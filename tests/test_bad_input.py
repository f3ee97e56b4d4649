"""Bad input gets a clear error naming the argument and what was expected."""
import math

import pytest
import torch

from cdn.joint import JointModel
from cdn.nets import GradResNet
from cdn.profiles import get_config


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return JointModel(GradResNet(4, 3, 4))


@pytest.mark.parametrize("sigma,match", [(-0.1, "sigma"), (float("nan"), "sigma"), (math.inf, "sigma"),
                                         (torch.tensor([0.1, -1.0]), "sigma"), (torch.ones(3), r"shape \(2,\)"),
                                         ("0.1", "sigma")])
def test_bad_sigma(model, sigma, match):
    with pytest.raises(ValueError, match=match):
        model.denoise(torch.rand(2, 3, 16, 16), sigma)


def test_missing_sigma_for_denoise(model):
    with pytest.raises(ValueError, match="sigma is required"):
        model.denoise(torch.rand(2, 3, 16, 16), None)


@pytest.mark.parametrize("y,match", [(torch.rand(16), r"shape \(B, C, H, W\)"), (torch.rand(16, 16), r"\(B, 3, H, W\)"),
                                     (torch.zeros(2, 3, 16, 16, dtype=torch.uint8), "floating-point"),
                                     (torch.full((2, 3, 16, 16), float("nan")), "NaN"),
                                     (torch.rand(2, 1, 16, 16), r"\(B, 3, H, W\)")])
def test_bad_images(model, y, match):
    with pytest.raises(ValueError, match=match):
        model.denoise(y, 0.1)


def test_bad_class(model):
    y = torch.rand(2, 3, 16, 16)
    with pytest.raises(ValueError, match="c must"):
        model.denoise(y, 0.1, torch.tensor([0, 7]))
    with pytest.raises(ValueError, match="c must"):
        model.denoise(y, 0.1, torch.tensor([0.0, 1.0]))
    with pytest.raises(ValueError, match="c must"):
        model.score(y, c=torch.tensor([1]))


@pytest.mark.parametrize("kw,match", [(dict(profile="huge"), "unknown profile"), (dict(model="vit"), "unknown model"),
                                      (dict(dataset="mnist"), "unknown dataset"), (dict(widht=3), "unknown configuration keys"),
                                      (dict(width=0), "width must be >= 1"), (dict(lr=-1.0), "lr must be > 0")])
def test_bad_configuration(kw, match):
    args = dict(profile="smoke", model="gradresnet", dataset="synthetic")
    args.update({k: v for k, v in kw.items() if k in args})
    with pytest.raises(ValueError, match=match):
        get_config(**args, **{k: v for k, v in kw.items() if k not in args})


def test_the_cpu_profile_trains_cifar10_only_and_a_cpu_build_takes_quick_runs_elsewhere():
    """``cpu`` has no Tiny ImageNet settings: asking for them names the profile to use, and the chapters
    (``report.chapter_runs``, chapter 10's ablation) use the quick runs there instead of retraining them
    under another name."""
    from cdn import profiles
    from cdn.profiles import runs_profile

    with pytest.raises(ValueError, match="cpu profile has no settings for tiny-imagenet.*--profile quick"):
        get_config("cpu", "gradresnet", "tiny-imagenet")
    assert runs_profile("cpu", "tiny-imagenet") == "quick" and runs_profile("cpu", "cifar10") == "cpu"
    assert [runs_profile(p, "tiny-imagenet") for p in ("smoke", "quick", "paper")] == ["smoke", "quick", "paper"]
    with pytest.raises(ValueError, match="unknown profile"):
        runs_profile("huge", "cifar10")
    cpu, quick = profiles.experiment_sizes("cpu", "theory"), profiles.experiment_sizes("quick", "theory")
    assert cpu["ablation_profile"] == "quick" and cpu["ablation_overrides"] == quick["ablation_overrides"]
    assert [profiles.experiment_sizes(p, "theory")["ablation_profile"] for p in ("smoke", "quick", "paper")] == \
        ["smoke", "quick", "paper"]
