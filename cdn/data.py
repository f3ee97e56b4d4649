"""Datasets as uint8 tensors in memory, and batched augmentation on the device (every chapter).

Where data is looked for, in order: an explicit path (argument or ``CDN_DATA``), the
shared folder ``../shared/data`` beside the repository, torchvision's download when asked for
(never in tests). When no CIFAR-10 is found and the caller allows it (the smoke and quick
profiles), scikit-learn's digits stand in, and ``ImageDataset.source`` says so.

JPEG archives are decoded once into a ``.npz`` cache (``CDN_CACHE``, default ``~/.cache/cdn``),
keyed by the archive's sha256, and loaded without pickle.
"""
from __future__ import annotations

import io
import logging
import math
import os
import tarfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from .checkpoint import sha256_file

log = logging.getLogger("cdn.data")

DATASETS = ("cifar10", "tiny-imagenet", "digits", "synthetic")
CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
REPO_ROOT = Path(__file__).resolve().parent.parent


@dataclass
class ImageDataset:
    """Images (N, C, H, W) uint8 and labels (N,) int64, held in memory; ``source`` says where they
    came from in words (shown at the top of every chapter)."""

    images: torch.Tensor
    labels: torch.Tensor
    classes: list[str]
    name: str
    source: str
    fallback: bool = False
    meta: dict = field(default_factory=dict)

    def __post_init__(self):
        if self.images.dtype != torch.uint8 or self.images.ndim != 4:
            raise ValueError(f"images must be uint8 of shape (N, C, H, W), got {self.images.dtype} {tuple(self.images.shape)}")
        if self.labels.shape != (self.images.shape[0],):
            raise ValueError(f"labels must have shape ({self.images.shape[0]},), got {tuple(self.labels.shape)}")

    def __len__(self) -> int:
        return self.images.shape[0]

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def in_channels(self) -> int:
        return self.images.shape[1]

    @property
    def image_size(self) -> int:
        return self.images.shape[2]

    def subset(self, size: int | None, seed: int = 0) -> "ImageDataset":
        """A random subset of ``size`` images (all when ``size`` is None or too large), the same
        for the same seed, with classes kept balanced by a per-class draw."""
        if size is None or size >= len(self):
            return self
        if size < 1:
            raise ValueError(f"subset size must be >= 1, got {size}")
        g = torch.Generator().manual_seed(seed)
        perm = torch.randperm(len(self), generator=g)
        labels = self.labels[perm]
        onehot = torch.nn.functional.one_hot(labels, self.num_classes)
        rank = (onehot.cumsum(0) * onehot).sum(1) - 1  # position of each image within its class
        pick = perm[torch.argsort(rank * self.num_classes + labels, stable=True)[:size]]
        pick, _ = torch.sort(pick)
        return ImageDataset(self.images[pick], self.labels[pick], self.classes, self.name,
                            self.source + f", subset of {size}", self.fallback, dict(self.meta))

    def sample_indices(self, n: int, seed: int = 0) -> torch.Tensor:
        """``n`` distinct image indices drawn uniformly at random (seeded), in random order: a sample
        of all classes even when the images are sorted by class, as ``subset`` leaves them (chapters
        that look at a few test images: "Generation and OOD", "Jacobian")."""
        if not 0 < n <= len(self):
            raise ValueError(f"n must be in 1..{len(self)} (the number of images), got {n}")
        return torch.randperm(len(self), generator=torch.Generator().manual_seed(seed))[:n]

    def to_float(self, index=None, device=None) -> torch.Tensor:
        """Images as floats in [0, 1] (optionally a slice or index tensor), on ``device``."""
        imgs = self.images if index is None else self.images[index]
        return imgs.to(device).float().div_(255)


# ----------------------------------------------------------------------------------- look-up --

def candidate_dirs(data_dir: str | os.PathLike | None = None) -> list[Path]:
    """Where data is looked for, in order: ``data_dir``, ``$CDN_DATA``, ``../shared/data`` beside
    the repository and beside the working directory."""
    dirs = []
    if data_dir is not None:
        p = Path(data_dir).expanduser()
        if not p.exists():
            raise FileNotFoundError(f"data_dir {str(p)!r} does not exist")
        dirs.append(p)
    if os.environ.get("CDN_DATA"):
        dirs.append(Path(os.environ["CDN_DATA"]).expanduser())
    for base in (REPO_ROOT, Path.cwd(), Path.cwd().parent):
        dirs.append((base / ".." / "shared" / "data").resolve())
    seen, out = set(), []
    for d in dirs:
        if d not in seen and d.exists():
            seen.add(d)
            out.append(d)
    return out


def repo_folder(given, env: str, default: str) -> Path:
    """``given``, else ``$env``, else ``default`` under the repository root (``REPO_ROOT``)."""
    if given is not None:
        return Path(given)
    return Path(os.environ[env]) if os.environ.get(env) else REPO_ROOT / default


def cache_dir() -> Path:
    """Decoded-array cache folder: ``$CDN_CACHE`` or ``~/.cache/cdn``."""
    d = Path(os.environ.get("CDN_CACHE", Path.home() / ".cache" / "cdn")).expanduser()
    d.mkdir(parents=True, exist_ok=True)
    return d


def _explicit_path(data_dir) -> Path | None:
    if data_dir is None:
        return None
    p = Path(data_dir).expanduser()
    if not p.exists():
        raise FileNotFoundError(f"data_dir {str(p)!r} does not exist; expected a folder or a .tar.gz holding the data")
    return p


def _decode(data: bytes, size: int | None = None) -> np.ndarray:
    from PIL import Image

    img = Image.open(io.BytesIO(data)).convert("RGB")
    if size is not None and img.size != (size, size):
        img = img.resize((size, size), Image.BILINEAR)
    return np.asarray(img, dtype=np.uint8).transpose(2, 0, 1)


def _save_npz_atomic(path: Path, **arrays) -> None:
    tmp = path.with_suffix(".tmp.npz")
    np.savez(tmp, **arrays)
    os.replace(tmp, path)


def _load_npz(path: Path) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def _imagefolder_tar(archive: Path, classes: list[str] | None = None) -> dict[str, np.ndarray]:
    """Decode a .tar.gz of an ImageFolder tree ``<split>/<class>/<file>`` into arrays per split."""
    per_split: dict[str, list] = {}
    with tarfile.open(archive, "r:gz") as tar:
        for m in tar:
            if not m.isfile():
                continue
            parts = Path(m.name).parts
            if len(parts) < 3 or not parts[-1].lower().endswith((".jpg", ".jpeg", ".png")):
                continue
            split, cls = parts[-3], parts[-2]
            per_split.setdefault(split, []).append((cls, parts[-1], _decode(tar.extractfile(m).read())))
    return _stack_folder(per_split, classes)


def _imagefolder_dir(root: Path, classes: list[str] | None = None) -> dict[str, np.ndarray]:
    per_split: dict[str, list] = {}
    for split_dir in sorted(p for p in root.iterdir() if p.is_dir()):
        for f in sorted(split_dir.glob("*/*")):
            if f.suffix.lower() in (".jpg", ".jpeg", ".png"):
                per_split.setdefault(split_dir.name, []).append((f.parent.name, f.name, _decode(f.read_bytes())))
    return _stack_folder(per_split, classes)


def _stack_folder(per_split, classes):
    if not per_split:
        raise FileNotFoundError("no images found in the ImageFolder layout <split>/<class>/<image>")
    all_classes = classes or sorted({cls for items in per_split.values() for cls, _, _ in items})
    index = {c: i for i, c in enumerate(all_classes)}
    out = {"classes": np.array(all_classes)}
    for split, items in per_split.items():
        items.sort(key=lambda t: (index[t[0]], t[1]))
        out[f"{split}_images"] = np.stack([im for _, _, im in items])
        out[f"{split}_labels"] = np.array([index[c] for c, _, _ in items], dtype=np.int64)
    return out


def _cached(archive: Path, kind: str, decoder) -> dict[str, np.ndarray]:
    key = sha256_file(archive)[:16]
    path = cache_dir() / f"{kind}-{key}.npz"
    if path.exists():
        return _load_npz(path)
    log.info("decoding %s once into %s (tens of seconds)", archive, path)
    arrays = decoder(archive)
    _save_npz_atomic(path, **arrays)
    return arrays


def _tiny_imagenet_tar(archive: Path) -> dict[str, np.ndarray]:
    """Decode the Tiny ImageNet layout (wnids.txt, train/<wnid>/*.JPEG, val/images +
    val_annotations.txt) from a .tar.gz."""
    files: dict[str, bytes] = {}
    with tarfile.open(archive, "r:gz") as tar:
        for m in tar:
            if m.isfile():
                files[m.name.split("tiny-imagenet-200/", 1)[-1]] = tar.extractfile(m).read()
    return _tiny_imagenet_files(files)


def _tiny_imagenet_files(files: dict[str, bytes]) -> dict[str, np.ndarray]:
    if "wnids.txt" not in files:
        raise FileNotFoundError("Tiny ImageNet layout needs wnids.txt at its root")
    wnids = files["wnids.txt"].decode().split()
    index = {w: i for i, w in enumerate(wnids)}
    train = sorted((k for k in files if k.startswith("train/") and k.lower().endswith((".jpeg", ".jpg"))))
    ann = {}
    for line in files.get("val/val_annotations.txt", b"").decode().splitlines():
        parts = line.split("\t")
        if len(parts) >= 2:
            ann[parts[0]] = parts[1]
    val = sorted(k for k in files if k.startswith("val/images/") and Path(k).name in ann)
    out = {"classes": np.array(wnids)}
    out["train_images"] = np.stack([_decode(files[k], 64) for k in train])
    out["train_labels"] = np.array([index[Path(k).parts[1]] for k in train], dtype=np.int64)
    out["val_images"] = np.stack([_decode(files[k], 64) for k in val])
    out["val_labels"] = np.array([index[ann[Path(k).name]] for k in val], dtype=np.int64)
    return out


# ----------------------------------------------------------------------------------- loaders --

def load_cifar10(split: str, data_dir=None, download: bool = False) -> ImageDataset:
    """CIFAR-10 from torchvision's folder (``cifar-10-batches-py``), an ImageFolder tree
    (``train/<class>/*.jpg``, ``test/...``) or a .tar.gz of one (``cifar10-jpeg.tar.gz``)."""
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    looked = []
    explicit = _explicit_path(data_dir)
    if explicit is not None and explicit.is_file():
        arrays = _cached(explicit, "cifar10-jpeg", lambda p: _imagefolder_tar(p, CIFAR10_CLASSES))
        return _from_arrays(arrays, split, "cifar10", f"CIFAR-10 JPEG copy ({explicit})")
    dirs = [explicit] if explicit is not None and explicit.is_dir() else []
    dirs += [d for d in candidate_dirs(None) if d not in dirs]
    for d in dirs:
        if (d / "cifar-10-batches-py").is_dir():
            import torchvision

            ds = torchvision.datasets.CIFAR10(str(d), train=split == "train", download=False)
            imgs = torch.from_numpy(ds.data).permute(0, 3, 1, 2).contiguous()
            return ImageDataset(imgs, torch.tensor(ds.targets), list(ds.classes), "cifar10",
                                f"CIFAR-10 (torchvision, {d})")
        for name in ("cifar10-jpeg.tar.gz", "cifar10.tar.gz"):
            if (d / name).is_file():
                arrays = _cached(d / name, "cifar10-jpeg", lambda p: _imagefolder_tar(p, CIFAR10_CLASSES))
                return _from_arrays(arrays, split, "cifar10", f"CIFAR-10 JPEG copy ({d / name})")
        for sub in (d, d / "cifar10"):
            if (sub / "train").is_dir() and (sub / "test").is_dir() and (sub / "train" / "airplane").is_dir():
                arrays = _imagefolder_dir(sub, CIFAR10_CLASSES)
                return _from_arrays(arrays, split, "cifar10", f"CIFAR-10 ImageFolder ({sub})")
        looked.append(str(d))
    if download:
        import torchvision

        root = cache_dir() / "torchvision"
        ds = torchvision.datasets.CIFAR10(str(root), train=split == "train", download=True)
        imgs = torch.from_numpy(ds.data).permute(0, 3, 1, 2).contiguous()
        return ImageDataset(imgs, torch.tensor(ds.targets), list(ds.classes), "cifar10", f"CIFAR-10 (torchvision download, {root})")
    raise FileNotFoundError(
        "CIFAR-10 not found: looked for cifar-10-batches-py/, cifar10-jpeg.tar.gz or an ImageFolder "
        f"train/ and test/ tree in {looked or 'no existing folder'}; pass data_dir=, set CDN_DATA, or download=True")


def _from_arrays(arrays, split, name, source) -> ImageDataset:
    key = split if f"{split}_images" in arrays else {"test": "val", "val": "test"}.get(split, split)
    if f"{key}_images" not in arrays:
        raise FileNotFoundError(f"{source} has no split {split!r}")
    return ImageDataset(torch.from_numpy(arrays[f"{key}_images"]), torch.from_numpy(arrays[f"{key}_labels"]),
                        [str(c) for c in arrays["classes"]], name, source)


def load_tiny_imagenet(split: str, data_dir=None) -> ImageDataset:
    """The Tiny ImageNet subset (64x64, 202 classes): ``split`` 'train' or 'test' (its val set)."""
    if split not in ("train", "test", "val"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    explicit = _explicit_path(data_dir)
    if explicit is not None and explicit.is_file():
        return _from_arrays(_cached(explicit, "tiny-imagenet", _tiny_imagenet_tar), split, "tiny-imagenet",
                            f"Tiny ImageNet subset ({explicit})")
    dirs = [explicit] if explicit is not None and explicit.is_dir() else []
    dirs += [d for d in candidate_dirs(None) if d not in dirs]
    for d in dirs:
        if (d / "tiny-imagenet-subset.tar.gz").is_file():
            arrays = _cached(d / "tiny-imagenet-subset.tar.gz", "tiny-imagenet", _tiny_imagenet_tar)
            return _from_arrays(arrays, split, "tiny-imagenet", f"Tiny ImageNet subset ({d / 'tiny-imagenet-subset.tar.gz'})")
        root = d / "tiny-imagenet-200"
        if (root / "wnids.txt").is_file():
            files = {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}
            return _from_arrays(_tiny_imagenet_files(files), split, "tiny-imagenet", f"Tiny ImageNet ({root})")
    raise FileNotFoundError(f"Tiny ImageNet not found: looked for tiny-imagenet-subset.tar.gz or tiny-imagenet-200/ "
                            f"in {[str(d) for d in dirs] or 'no existing folder'}; pass data_dir= or set CDN_DATA")


def load_digits(split: str, size: int = 16) -> ImageDataset:
    """scikit-learn's 8x8 digits (1,797 images, shipped with the package), upsampled to
    ``size`` x ``size``, one channel; a fixed 80/20 split (1,437 training and 360 test images). The data of
    the first lecture (chapter 00_lecture), and the offline fallback of the smoke and quick profiles."""
    from sklearn.datasets import load_digits as sk_digits

    d = sk_digits()
    imgs = torch.from_numpy(d.images).float().div(16).unsqueeze(1)
    imgs = torch.nn.functional.interpolate(imgs, size=(size, size), mode="bilinear", align_corners=False)
    imgs = (imgs.clamp(0, 1) * 255).round().to(torch.uint8)
    perm = torch.randperm(len(imgs), generator=torch.Generator().manual_seed(0))
    n_train = int(0.8 * len(imgs))
    idx = perm[:n_train] if split == "train" else perm[n_train:]
    return ImageDataset(imgs[idx], torch.from_numpy(d.target)[idx].long(), [str(i) for i in range(10)], "digits",
                        f"scikit-learn digits (8x8, upsampled to {size}x{size} grey)")


def make_synthetic(split: str, size: int = 16, num_classes: int = 4, n: int = 1024, seed: int = 0) -> ImageDataset:
    """A synthetic set for tests: class ``c`` is a coloured sinusoidal grating at orientation
    ``pi c / C`` with random phase, frequency jitter and contrast; smooth (so denoisable) and
    separable (so classifiable)."""
    g = torch.Generator().manual_seed(seed * 2 + (split != "train"))
    labels = torch.arange(n) % num_classes
    labels = labels[torch.randperm(n, generator=g)]
    theta = math.pi * labels.float() / num_classes
    freq = 2.0 + 0.5 * torch.rand(n, generator=g)
    phase = 2 * math.pi * torch.rand(n, generator=g)
    contrast = 0.25 + 0.15 * torch.rand(n, generator=g)
    u = torch.linspace(0, 1, size)
    uu, vv = torch.meshgrid(u, u, indexing="ij")
    arg = (uu[None] * torch.cos(theta)[:, None, None] + vv[None] * torch.sin(theta)[:, None, None])
    wave = torch.cos(2 * math.pi * freq[:, None, None] * arg + phase[:, None, None])
    colour = 0.6 + 0.4 * torch.rand(n, 3, generator=g)
    imgs = 0.5 + contrast[:, None, None, None] * wave[:, None] * colour[:, :, None, None]
    imgs = (imgs.clamp(0, 1) * 255).round().to(torch.uint8)
    return ImageDataset(imgs, labels.long(), [f"orientation {k}" for k in range(num_classes)], "synthetic",
                        "synthetic gratings (tests)")


def load(name: str, split: str = "train", data_dir=None, size: int | None = None, seed: int = 0,
         allow_fallback: bool = False, download: bool = False) -> ImageDataset:
    """Load a dataset by name (``cifar10``, ``tiny-imagenet``, ``digits``, ``synthetic``), optionally a
    seeded class-balanced subset of ``size`` images. With ``allow_fallback``, a missing CIFAR-10 or
    Tiny ImageNet falls back to the digits and the log says so."""
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; expected one of {', '.join(DATASETS)}")
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    _explicit_path(data_dir)  # a path the user gave that does not exist is an error, never a fallback
    try:
        if name == "cifar10":
            ds = load_cifar10(split, data_dir, download)
        elif name == "tiny-imagenet":
            ds = load_tiny_imagenet(split, data_dir)
        elif name == "digits":
            ds = load_digits(split)
        else:
            ds = make_synthetic(split, seed=seed)
    except FileNotFoundError as err:
        if not allow_fallback:
            raise
        log.warning("%s; falling back to scikit-learn digits", err)
        ds = load_digits(split)
        ds.source, ds.fallback = f"scikit-learn digits (FALLBACK: {name} not found)", True
    log.info("data %s/%s: %s, %d images %s", name, split, ds.source, len(ds), tuple(ds.images.shape[1:]))
    return ds.subset(size, seed)


# ------------------------------------------------------------------------------ augmentation --

def augment(x: torch.Tensor, generator: torch.Generator | None = None, pad: int = 4, flip: bool = True) -> torch.Tensor:
    """Random crop (reflect padding ``pad``) and horizontal flip of a float batch (B, C, H, W), as
    batched tensor operations on ``x``'s device."""
    b, _, h, w = x.shape
    dev = x.device
    if pad > 0:
        xp = torch.nn.functional.pad(x, (pad, pad, pad, pad), mode="reflect")
        dy = torch.randint(0, 2 * pad + 1, (b,), generator=generator, device=dev)
        dx = torch.randint(0, 2 * pad + 1, (b,), generator=generator, device=dev)
        rows = (dy[:, None] + torch.arange(h, device=dev)[None])[:, None, :, None]
        cols = (dx[:, None] + torch.arange(w, device=dev)[None])[:, None, None, :]
        bidx = torch.arange(b, device=dev)[:, None, None, None]
        cidx = torch.arange(x.shape[1], device=dev)[None, :, None, None]
        x = xp[bidx, cidx, rows, cols]
    if flip:
        mask = torch.rand(b, generator=generator, device=dev) < 0.5
        x = torch.where(mask[:, None, None, None], x.flip(3), x)
    return x


def fast_batch(images: torch.Tensor, labels: torch.Tensor, index: torch.Tensor,
               generator: torch.Generator | None = None, augment_: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """The training loop's data path (chapter "Efficiency"): gather the uint8 images ``index`` from the
    dataset tensor held on the device, scale to [0, 1] and ``augment`` them as one batch; no
    per-image Python work. Returns ``(x, c)``."""
    x = images[index].float().div_(255)
    if augment_:
        x = augment(x, generator)
    return x, labels[index]


def epoch_permutation(n: int, epoch: int, seed: int) -> torch.Tensor:
    """The order of the ``n`` training images in ``epoch``: a function of ``(seed, epoch)`` alone, so
    a resumed run sees exactly the batches an uninterrupted one would."""
    g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    return torch.randperm(n, generator=g)


def tile(image: torch.Tensor, size: int) -> torch.Tensor:
    """Cut a (C, H, W) image into non-overlapping ``size`` x ``size`` patches, row by row: returns
    (H/size * W/size, C, size, size). H and W must be multiples of ``size``."""
    c, h, w = image.shape
    if h % size or w % size:
        raise ValueError(f"image of size {h}x{w} is not a whole number of {size}x{size} patches")
    return image.unfold(1, size, size).unfold(2, size, size).permute(1, 2, 0, 3, 4).reshape(-1, c, size, size)


def untile(patches: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Inverse of ``tile``: patches (N, C, s, s) in row order back into one (C, height, width) image."""
    n, c, s, _ = patches.shape
    rows, cols = height // s, width // s
    if rows * cols != n:
        raise ValueError(f"{n} patches of {s}x{s} do not make a {height}x{width} image")
    return patches.reshape(rows, cols, c, s, s).permute(2, 0, 3, 1, 4).reshape(c, height, width)
