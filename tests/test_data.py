"""Data: the shared archives decode with the right shapes and labels, subsets are balanced and
seeded, augmentation is batched and shape-preserving, and missing data is a clear error."""
import io
import tarfile

import numpy as np
import pytest
import torch
from PIL import Image

from cdn import data as D

SHARED = D.REPO_ROOT.parent / "shared" / "data"
needs_shared = pytest.mark.skipif(not (SHARED / "cifar10-jpeg.tar.gz").exists(),
                                  reason="../shared/data is not beside this checkout")


@pytest.fixture
def fake_cifar_tar(tmp_path):
    """A tiny ImageFolder .tar.gz in the CIFAR-10 layout: 2 train and 1 test image per class."""
    path = tmp_path / "cifar10-jpeg.tar.gz"
    rng = np.random.default_rng(0)
    with tarfile.open(path, "w:gz") as tar:
        for split, n in (("train", 2), ("test", 1)):
            for ci, cls in enumerate(D.CIFAR10_CLASSES):
                for k in range(n):
                    arr = np.full((32, 32, 3), ci * 20, dtype=np.uint8) + rng.integers(0, 5, (32, 32, 3), dtype=np.uint8)
                    buf = io.BytesIO()
                    Image.fromarray(arr).save(buf, format="PNG")
                    info = tarfile.TarInfo(f"{split}/{cls}/{k:04d}.png")
                    info.size = len(buf.getvalue())
                    tar.addfile(info, io.BytesIO(buf.getvalue()))
    return path


def test_imagefolder_tar_is_decoded_and_cached(fake_cifar_tar, tmp_path, monkeypatch):
    monkeypatch.setenv("CDN_CACHE", str(tmp_path / "cache"))
    train = D.load("cifar10", "train", data_dir=fake_cifar_tar)
    test = D.load("cifar10", "test", data_dir=fake_cifar_tar)
    assert train.images.shape == (20, 3, 32, 32) and train.images.dtype == torch.uint8
    assert test.images.shape == (10, 3, 32, 32)
    assert train.labels.tolist() == sorted(list(range(10)) * 2)
    # PNG is lossless: class ci has pixel values ci*20 + [0, 5)
    for img, lab in zip(train.images, train.labels):
        assert 20 * lab <= img.min() and img.max() < 20 * lab + 5
    assert len(list((tmp_path / "cache").glob("*.npz"))) == 1
    assert train.classes == D.CIFAR10_CLASSES


@needs_shared
def test_shared_cifar10_jpeg_copy():
    train = D.load("cifar10", "train", data_dir=SHARED)
    test = D.load("cifar10", "test", data_dir=SHARED)
    assert train.images.shape == (50000, 3, 32, 32) and test.images.shape == (10000, 3, 32, 32)
    assert torch.bincount(test.labels).tolist() == [1000] * 10
    assert "JPEG copy" in train.source


@needs_shared
def test_shared_tiny_imagenet_subset():
    test = D.load("tiny-imagenet", "test", data_dir=SHARED)
    assert test.images.shape[1:] == (3, 64, 64) and test.num_classes == 202
    assert len(test) == 10100


def test_subset_is_balanced_and_seeded():
    ds = D.make_synthetic("train", n=400, num_classes=4)
    a, b, c = ds.subset(100, seed=1), ds.subset(100, seed=1), ds.subset(100, seed=2)
    assert torch.bincount(a.labels).tolist() == [25] * 4
    assert torch.equal(a.images, b.images) and not torch.equal(a.images, c.images)


def test_digits_fallback_is_announced(tmp_path, monkeypatch):
    monkeypatch.setattr(D, "candidate_dirs", lambda data_dir=None: [])
    monkeypatch.delenv("CDN_DATA", raising=False)
    with pytest.raises(FileNotFoundError, match="CIFAR-10 not found"):
        D.load("cifar10", "train")
    ds = D.load("cifar10", "train", allow_fallback=True)
    assert ds.fallback and "FALLBACK" in ds.source and ds.images.shape[1:] == (1, 16, 16)


def test_digits_asked_for_are_not_a_fallback():
    train, test = D.load("digits", "train"), D.load("digits", "test")
    assert not train.fallback and "fallback" not in train.source.lower()
    assert (len(train), len(test)) == (1437, 360) and train.num_classes == 10


def test_missing_data_dir_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        D.load("cifar10", "train", data_dir=tmp_path / "nowhere")


@pytest.mark.parametrize("kw,match", [(dict(name="mnist"), "unknown dataset"), (dict(name="digits", split="val"), "split")])
def test_bad_dataset_arguments(kw, match):
    with pytest.raises(ValueError, match=match):
        D.load(**kw)


def test_augment_is_batched_crop_and_flip():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(64, 3, 16, 16)
    out = D.augment(x, g)
    assert out.shape == x.shape and out.dtype == x.dtype
    assert not torch.equal(out, x)
    # without padding, augmentation is a pure flip of some images
    flipped = D.augment(x, torch.Generator().manual_seed(1), pad=0)
    same = [(torch.equal(o, i) or torch.equal(o, i.flip(2))) for o, i in zip(flipped, x)]
    assert all(same) and 0 < sum(torch.equal(o, i) for o, i in zip(flipped, x)) < 64
    # with padding and no flip, every output is a window of the reflect-padded input
    shifted = D.augment(x[:4], torch.Generator().manual_seed(2), pad=2, flip=False)
    padded = torch.nn.functional.pad(x[:4], (2, 2, 2, 2), mode="reflect")
    for o, p in zip(shifted, padded):
        assert any(torch.equal(o, p[:, i:i + 16, j:j + 16]) for i in range(5) for j in range(5))


def test_epoch_permutation_depends_on_seed_and_epoch_only():
    a = D.epoch_permutation(100, 3, 0)
    assert torch.equal(a, D.epoch_permutation(100, 3, 0))
    assert not torch.equal(a, D.epoch_permutation(100, 4, 0))
    assert sorted(a.tolist()) == list(range(100))


def test_sample_indices_cover_classes_of_a_class_sorted_subset():
    import dataclasses

    ds = D.make_synthetic("test", n=400, num_classes=4).subset(200, seed=0)
    order = torch.argsort(ds.labels, stable=True)  # sorted by class, as the CIFAR-10 test folders are
    ds = dataclasses.replace(ds, images=ds.images[order], labels=ds.labels[order])
    assert ds.labels[:40].unique().tolist() == [0]
    idx = ds.sample_indices(40, seed=3)
    assert len(set(idx.tolist())) == 40 and torch.equal(idx, ds.sample_indices(40, seed=3))
    assert len(set(ds.labels[idx].tolist())) == 4
    with pytest.raises(ValueError, match="n must be in 1..200"):
        ds.sample_indices(201)
