"""The corruption benchmark (cdn.experiments.corruptions) and the calibration metrics it reports
(cdn.evaluate.classification_metrics, reliability_bins)."""
import math

import numpy as np
import pytest
import torch
from torchmetrics.functional.classification import multiclass_calibration_error

from cdn.experiments import corruptions as C
from cdn.data import ImageDataset
from cdn.evaluate import classification_metrics, reliability_bins
from cdn.joint import JointModel
from cdn.experiments.classical import photo

PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "immunohistochemistry", "cat", "retina", "hubble_deep_field")


@pytest.fixture(scope="module")
def photos() -> torch.Tensor:
    """Eight scikit-image photographs at 32 x 32, uint8 (N, 3, 32, 32): a fixed natural image set."""
    return torch.stack([(photo(32, 3, name) * 255).round().to(torch.uint8) for name in PHOTOS])


def test_corruption_list_is_the_packages_common_fifteen():
    from imagecorruptions import get_corruption_names

    assert C.CORRUPTIONS == tuple(get_corruption_names("common"))
    assert len(C.CORRUPTIONS) == 15
    for group, names in C.GROUPS.items():
        assert names == tuple(get_corruption_names(group))


@pytest.mark.parametrize("corruption", C.CORRUPTIONS)
def test_each_corruption_is_deterministic_keeps_shape_dtype_and_grows_with_severity(corruption, photos):
    state = np.random.get_state()
    x = photos.float() / 255
    strength = {}
    for s in C.SEVERITIES:
        out = C.corrupt_images(photos, corruption, s, seed=3)
        assert out.shape == photos.shape and out.dtype == torch.uint8
        assert torch.equal(out, C.corrupt_images(photos, corruption, s, seed=3))
        strength[s] = ((out.float() / 255 - x) ** 2).mean().item()
    assert np.array_equal(np.random.get_state()[1], state[1])  # numpy's global state untouched
    assert strength[1] > 0
    assert strength[5] > strength[1]
    exceptions = C.NON_MONOTONE.get(corruption, {})
    for s in C.SEVERITIES[:-1]:
        if (s, s + 1) in exceptions:  # documented: the package's constants barely change, or trade off
            assert strength[s + 1] > 0.75 * strength[s], (corruption, s, strength)
        else:
            assert strength[s + 1] > strength[s], (corruption, s, strength)


def test_random_corruptions_depend_on_the_seed_and_the_image_index(photos):
    a = C.corrupt_images(photos[:2], "gaussian_noise", 3, seed=0)
    assert not torch.equal(a, C.corrupt_images(photos[:2], "gaussian_noise", 3, seed=1))
    shifted = C.corrupt_images(photos[1:2], "gaussian_noise", 3, seed=0, start=1)
    assert torch.equal(a[1:2], shifted)  # image i always gets the seed of index i


def test_grey_and_small_images_keep_shape_and_dtype():
    g = torch.Generator().manual_seed(0)
    imgs = torch.randint(0, 256, (3, 1, 16, 16), generator=g, dtype=torch.uint8)
    out = C.corrupt_images(imgs, "contrast", 5)
    assert out.shape == imgs.shape and out.dtype == torch.uint8
    # contrast pulls every pixel towards the image mean
    assert out.float().std((1, 2, 3)).max() < imgs.float().std((1, 2, 3)).min()


def test_bad_input_is_a_value_error(photos):
    with pytest.raises(ValueError, match="unknown corruption"):
        C.corrupt_images(photos, "rain", 1)
    with pytest.raises(ValueError, match="severity"):
        C.corrupt_images(photos, "fog", 6)
    with pytest.raises(ValueError, match="uint8"):
        C.corrupt_images(photos.float(), "fog", 1)


def _dataset(images: torch.Tensor) -> ImageDataset:
    return ImageDataset(images, torch.arange(len(images)) % 2, ["a", "b"], "photos", "test photos")


def test_benchmark_is_cached_without_pickle_and_keyed_by_the_images(photos, tmp_path):
    data = _dataset(photos)
    first = C.load_benchmark(data, 4, ("shot_noise", "pixelate"), seed=0, cache=tmp_path, log=None)
    assert not any(first.cached.values())
    files = sorted(tmp_path.rglob("*.npz"))
    assert [f.name for f in files] == ["pixelate.npz", "shot_noise.npz"]
    with np.load(files[0], allow_pickle=False) as z:
        assert z["images"].dtype == np.uint8 and z["images"].shape == (5, 4, 3, 32, 32)
    again = C.load_benchmark(data, 4, ("shot_noise", "pixelate"), seed=0, cache=tmp_path, log=None)
    assert all(again.cached.values())
    for name in first.images:
        assert torch.equal(first.images[name], again.images[name])
        assert torch.equal(first.images[name][2], C.corrupt_images(photos[first.index], name, 3, seed=0))
    assert len(set(first.index.tolist())) == 4 and torch.equal(first.clean, photos[first.index])
    assert torch.equal(first.labels, data.labels[first.index])
    changed = photos.clone()
    changed[first.index[0], 0, 0, 0] ^= 1
    other = C.load_benchmark(_dataset(changed), 4, ("shot_noise",), seed=0, cache=tmp_path, log=None)
    assert other.key != first.key and not any(other.cached.values())
    with pytest.raises(ValueError, match="n_images"):
        C.load_benchmark(data, 99, ("fog",), cache=tmp_path, log=None)


class _Constant(torch.nn.Module):
    """Logits that do not depend on the image: every sigma gives the same accuracy."""

    def __init__(self, logits):
        super().__init__()
        self.logits = torch.nn.Parameter(torch.as_tensor(logits, dtype=torch.float32))

    def forward(self, y):
        return self.logits.expand(y.shape[0], -1)


def test_evaluate_benchmark_rows_and_matched_sigma(photos, tmp_path):
    bench = C.load_benchmark(_dataset(photos), 8, ("brightness",), seed=0, cache=tmp_path, log=None)
    model = JointModel(_Constant([2.0, 0.0]))
    res = C.evaluate_benchmark({"m": model}, bench, holdout=4, sigmas=(0.0, 0.2), matched=["m"], log=None)
    df = res.frame()
    assert len(df) == 2 * (1 + 5)  # clean + 5 severities, plain and matched
    # constant logits: accuracy = fraction of class 0 among the evaluated images, p = softmax([2, 0])
    p0 = 1 / (1 + math.exp(-2.0))
    labels = bench.labels[4:]
    acc = (labels == 0).float().mean().item()
    assert np.allclose(df.accuracy, acc)
    assert np.allclose(df.ece, abs(p0 - acc), atol=1e-6)
    # equal accuracies at every sigma: the smallest, 0, is chosen
    assert set(res.matched["m, matched σ"].values()) == {0.0}
    table = C.summary_table(res)
    assert table.loc["m", "corrupted accuracy"] == pytest.approx(acc)
    assert C.per_group_table(res).loc["m", "weather"] == pytest.approx(acc)  # brightness is weather
    assert len(res.confidence["m"]) == 5 * 4
    with pytest.raises(ValueError, match="matched"):
        C.evaluate_benchmark({"m": model}, bench, holdout=4, sigmas=(0.1,), matched=["m"], log=None)


# -------------------------------------------------------------------------------- calibration --

def test_ece_of_a_calibrated_predictor_is_near_zero():
    """Labels drawn from the predicted distribution: in every bin the accuracy is the mean
    confidence up to sampling error, so E[ECE] <= sum_b sqrt(n_b / 4) / n <= sqrt(B / (4 n))."""
    n, k, bins = 200_000, 10, 15
    g = torch.Generator().manual_seed(0)
    probs = torch.softmax(3 * torch.randn(n, k, generator=g), 1)
    labels = torch.multinomial(probs, 1, generator=g).squeeze(1)
    ece = classification_metrics(probs.log(), labels, k, bins)["ece"]
    bound = math.sqrt(bins / (4 * n))
    assert ece < 3 * bound
    # the same predictions made over-confident are far from calibrated
    sharp = torch.softmax(3 * probs.log(), 1)
    assert classification_metrics(sharp.log(), labels, k, bins)["ece"] > 20 * bound


@pytest.mark.parametrize("q,a", [(0.75, 0.5), (0.375, 0.875)])
def test_ece_of_a_known_miscalibrated_predictor_is_the_closed_form(q, a):
    """Every confidence q (one bin) and accuracy a: ECE = |q - a| exactly (dyadic q and a, since
    torchmetrics bins in float32)."""
    n, k = 64, 4
    probs = torch.tensor([q] + [(1 - q) / (k - 1)] * (k - 1), dtype=torch.float64).repeat(n, 1)
    labels = torch.zeros(n, dtype=torch.long)
    labels[: round((1 - a) * n)] = 1
    m = classification_metrics(probs.log(), labels, k)
    assert m["accuracy"] == pytest.approx(a, abs=1e-12)
    assert m["ece"] == pytest.approx(abs(q - a), abs=1e-12)
    assert m["nll"] == pytest.approx(-(a * math.log(q) + (1 - a) * math.log((1 - q) / (k - 1))), rel=1e-5)


def test_two_bins_ece_and_reliability_bins_match_torchmetrics():
    # half the images at confidence 0.9 with accuracy 0.6, half at 0.5 with accuracy 0.7
    conf = torch.tensor([0.9] * 10 + [0.5] * 10)
    correct = torch.tensor([1] * 6 + [0] * 4 + [1] * 7 + [0] * 3, dtype=torch.bool)
    b = reliability_bins(conf, correct)
    ece = (b["count"] / len(conf) * (b["accuracy"] - b["confidence"]).abs()).nansum().item()
    assert ece == pytest.approx(0.5 * 0.3 + 0.5 * 0.2, abs=1e-6)  # 0.9 in float32
    g = torch.Generator().manual_seed(1)
    probs = torch.softmax(2 * torch.randn(5000, 10, generator=g), 1)
    labels = torch.randint(0, 10, (5000,), generator=g)
    conf, pred = probs.max(1)
    b = reliability_bins(conf, pred == labels)
    ours = (b["count"] / 5000 * (b["accuracy"] - b["confidence"]).abs()).nansum().item()
    assert ours == pytest.approx(multiclass_calibration_error(probs, labels, 10, n_bins=15).item(), abs=1e-5)
    assert b["count"].sum().item() == 5000


def test_reading_states_what_the_tables_hold():
    import pandas as pd

    from cdn.experiments.corruptions import reading

    models = ["joint", "ce", "noise", "joint, matched σ"]
    summary = pd.DataFrame({"clean accuracy": [0.7, 0.8, 0.75, 0.7], "clean ECE": [0.1] * 4,
                            "corrupted accuracy": [0.6, 0.5, 0.62, 0.61], "corrupted NLL": [1.2, 2.0, 1.1, 1.15],
                            "corrupted ECE": [0.05, 0.2, 0.06, 0.04]}, index=models)
    acc = pd.DataFrame({"noise": [0.6, 0.2, 0.7, 0.62], "blur": [0.5, 0.55, 0.52, 0.53]}, index=models)
    ece = pd.DataFrame({"noise": [0.05, 0.4, 0.03, 0.04], "blur": [0.1, 0.12, 0.09, 0.08]}, index=models)
    per = pd.DataFrame({"elastic_transform": [0.6, 0.3, 0.65, 0.6]}, index=models)
    text = "\n".join(reading(summary, acc, ece, per, ["joint", "noise"], "joint", "joint, matched σ"))
    assert "trained on noisy images reach 0.650 mean accuracy, those trained on clean images 0.200" in text
    assert "**Blur family.** Highest accuracy: ce (0.550); lowest: joint (0.500); the joint model ranks 3 of 3." in text
    assert "**Elastic transform.** Highest accuracy: noise (0.650); lowest: ce (0.300)." in text
    assert "Lowest mean corrupted ECE: joint (0.050); lowest corrupted NLL: noise (1.100)" in text
    assert "loses 0.100 from clean to corrupted accuracy, rank 1 of 3 (1 = the smallest drop" in text
    assert "mean corrupted accuracy by +0.010 and its mean corrupted ECE by -0.010; on the blur family, accuracy +0.030" in text
