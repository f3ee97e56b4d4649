"""A CIFAR-10-C-like corruption benchmark and the metrics on it (chapter "Corruptions and
calibration").

The 15 corruptions of Hendrycks and Dietterich (ICLR 2019) at 5 severities come from the maintained
package ``imagecorruptions-imaug`` (the imaug fork of ``imagecorruptions``, which runs with current
numpy, scipy and scikit-image; it imports as ``imagecorruptions``). Its constants are those of
ImageNet-C, made for 224-pixel images; CIFAR-10-C used milder ones tuned to 32 pixels (Gaussian
noise of std 0.04 to 0.10 there, 0.08 to 0.38 here; blur radii of a few pixels here on a 32-pixel
image). Our benchmark is therefore harsher than CIFAR-10-C and its numbers are not comparable with
published CIFAR-10-C results; the ranking of models on it is what the chapter reads.

Generation is offline and deterministic, on a seeded random sample of the test set (test sets are
often sorted by class): image ``i`` of that sample under ``corruption`` is made
with the seed ``image_seed(seed, corruption, i)`` at every severity (common random numbers: two
severities differ by their strength only, not by their draw), uint8 in and uint8 out. The result is
cached under ``$CDN_CACHE/corruptions`` (default ``~/.cache/cdn``) in one ``.npz`` per corruption,
keyed by the package version, the settings and a sha256 of the clean images, and read without
pickle.

Metrics (accuracy, NLL, ECE from ``cdn.evaluate.classification_metrics``) are computed per
corruption and severity on the images after a held-out slice; the held-out slice serves only to
choose the *matched* noise level of the joint model (``evaluate_benchmark``).
"""
from __future__ import annotations

import hashlib
import json
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..data import ImageDataset, _load_npz, _save_npz_atomic, cache_dir
from ..evaluate import classification_metrics

PACKAGE = "imagecorruptions-imaug"
#: the 15 corruptions of CIFAR-10-C / ImageNet-C, in the package's order (noise, blur, weather, digital)
CORRUPTIONS = ("gaussian_noise", "shot_noise", "impulse_noise", "defocus_blur", "glass_blur", "motion_blur",
               "zoom_blur", "snow", "frost", "fog", "brightness", "contrast", "elastic_transform", "pixelate",
               "jpeg_compression")
SEVERITIES = (1, 2, 3, 4, 5)
#: the four families of Hendrycks and Dietterich (the package's ``get_corruption_names`` subsets)
GROUPS = {"noise": CORRUPTIONS[0:3], "blur": CORRUPTIONS[3:7], "weather": CORRUPTIONS[7:11],
          "digital": CORRUPTIONS[11:15]}
#: consecutive severities whose mean squared change need not grow with the package's constants, and
#: why (tests/test_corruptions.py: every other consecutive pair must grow, these must stay within 25%)
NON_MONOTONE = {
    "glass_blur": {(1, 2): "severity 2 shuffles pixels once, severity 1 twice: (sigma, delta, iterations) = "
                           "(0.7, 1, 2) then (0.9, 2, 1)",
                   (3, 4): "severity 4 shuffles twice, severity 3 three times: (1, 2, 3) then (1.1, 3, 2)"},
    "frost": {(3, 4): "severity 4 keeps 0.65 of the image and adds 0.7 of frost, severity 3 keeps 0.7 and adds "
                      "0.7: a darker image under the same frost can move less"},
    "fog": {(3, 4): "severities 3 and 4 add the same amount of fog (2.5) and differ only in the texture's decay "
                    "(1.7 then 1.5); their order depends on the draw"},
    "snow": {(2, 3): "severities 2 and 3 trade more flakes for a higher threshold and larger flakes; their "
                     "strengths are within about 1% and their order depends on the images"},
}


def package_version() -> str:
    """The installed version of ``imagecorruptions-imaug``."""
    from importlib.metadata import version

    return version(PACKAGE)


def _check_corruption(corruption: str, severity: int | None = None) -> None:
    if corruption not in CORRUPTIONS:
        raise ValueError(f"unknown corruption {corruption!r}; expected one of {', '.join(CORRUPTIONS)}")
    if severity is not None and severity not in SEVERITIES:
        raise ValueError(f"severity must be one of {SEVERITIES}, got {severity!r}")


def image_seed(seed: int, corruption: str, index: int) -> int:
    """The seed of image ``index`` under ``corruption``: a function of the three (not of the
    severity), below 2^32 for ``numpy.random.seed``."""
    _check_corruption(corruption)
    return (seed * 1_000_003 + zlib.crc32(corruption.encode()) * 7919 + index) % 2**32


def _corrupt_one(image: np.ndarray, corruption: str, severity: int, seed: int) -> np.ndarray:
    """One (H, W, 3) uint8 image through the package with ``seed``, leaving numpy's global state as
    it was (the package draws from it)."""
    from imagecorruptions import corrupt

    state = np.random.get_state()
    try:
        np.random.seed(seed)
        extra = {"seed": seed} if corruption in ("glass_blur", "impulse_noise") else {}
        return corrupt(image, severity=severity, corruption_name=corruption, **extra)
    finally:
        np.random.set_state(state)


def corrupt_images(images: torch.Tensor, corruption: str, severity: int, seed: int = 0, start: int = 0) -> torch.Tensor:
    """``images`` (N, C, H, W) uint8 corrupted at ``severity``, same shape and dtype; image ``k`` uses
    ``image_seed(seed, corruption, start + k)``. Grey (C = 1) images go through as three equal
    channels and come back as their mean; images smaller than 32 pixels (the package's minimum) are
    enlarged by pixel repetition and block-averaged back (both only for the digits fallback)."""
    _check_corruption(corruption, severity)
    if not isinstance(images, torch.Tensor) or images.dtype != torch.uint8 or images.ndim != 4:
        raise ValueError(f"images must be a uint8 tensor (N, C, H, W), got "
                         f"{getattr(images, 'dtype', type(images).__name__)} {tuple(getattr(images, 'shape', ()))}")
    n, ch, h, w = images.shape
    if ch not in (1, 3):
        raise ValueError(f"images must have 1 or 3 channels, got {ch}")
    k = max(1, -(-32 // min(h, w)))  # repetition factor up to the package's 32-pixel minimum
    arr = images.numpy().transpose(0, 2, 3, 1)
    if ch == 1:
        arr = np.repeat(arr, 3, axis=3)
    if k > 1:
        arr = arr.repeat(k, axis=1).repeat(k, axis=2)
    out = np.stack([_corrupt_one(np.ascontiguousarray(a), corruption, severity, image_seed(seed, corruption, start + i))
                    for i, a in enumerate(arr)]).astype(np.float32)
    if k > 1:
        out = out.reshape(n, h, k, w, k, 3).mean(axis=(2, 4))
    if ch == 1:
        out = out.mean(axis=3, keepdims=True)
    return torch.from_numpy(np.clip(np.rint(out), 0, 255).astype(np.uint8).transpose(0, 3, 1, 2).copy())


# ----------------------------------------------------------------------------------- benchmark --

@dataclass
class Benchmark:
    """Corrupted copies of ``n`` test images (``index`` into the test set): ``images[corruption]`` is
    uint8 (5, n, C, H, W), one slice per severity; ``seconds[corruption]`` what generating it cost
    (when it was made, possibly by an earlier process)."""

    clean: torch.Tensor
    labels: torch.Tensor
    images: dict[str, torch.Tensor]
    seconds: dict[str, float]
    num_classes: int
    key: str
    source: str
    index: torch.Tensor
    cached: dict[str, bool] = field(default_factory=dict)

    @property
    def corruptions(self) -> list[str]:
        return list(self.images)


def _key(clean: torch.Tensor, corruptions, seed: int) -> str:
    settings = {"package": PACKAGE, "version": package_version(), "corruptions": list(corruptions),
                "severities": list(SEVERITIES), "seed": seed, "shape": list(clean.shape),
                "images": hashlib.sha256(clean.numpy().tobytes()).hexdigest()}
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]


def load_benchmark(test: ImageDataset, n_images: int, corruptions=CORRUPTIONS, seed: int = 0,
                   cache: str | Path | None = None, log=print) -> Benchmark:
    """The benchmark of ``n_images`` images of ``test`` (a random sample in random order, drawn with
    ``seed``) under ``corruptions`` at every severity: read from the cache, or generated
    (``corrupt_images``) and cached. ``cache`` defaults to ``$CDN_CACHE/corruptions``."""
    if not 1 <= n_images <= len(test):
        raise ValueError(f"n_images must be in [1, {len(test)}] (the test set's size), got {n_images}")
    for c in corruptions:
        _check_corruption(c)
    # a seeded random sample in random order: test sets are often sorted by class, and the first
    # ``holdout`` images of the benchmark must be a fair sample too
    index = torch.randperm(len(test), generator=torch.Generator().manual_seed(seed))[:n_images]
    clean = test.images[index].contiguous()
    key = _key(clean, corruptions, seed)
    folder = Path(cache) if cache is not None else cache_dir() / "corruptions"
    folder = folder / key
    folder.mkdir(parents=True, exist_ok=True)
    images, seconds, cached = {}, {}, {}
    for corruption in corruptions:
        path = folder / f"{corruption}.npz"
        if path.exists():
            z = _load_npz(path)
            images[corruption], seconds[corruption], cached[corruption] = (torch.from_numpy(z["images"]),
                                                                           float(z["seconds"]), True)
            continue
        t0 = time.perf_counter()
        out = torch.stack([corrupt_images(clean, corruption, s, seed) for s in SEVERITIES])
        seconds[corruption], cached[corruption] = time.perf_counter() - t0, False
        _save_npz_atomic(path, images=out.numpy(), seconds=np.array(seconds[corruption]))
        images[corruption] = out
        if log is not None:
            log(f"[cdn] corruptions: {corruption} on {n_images} images x {len(SEVERITIES)} severities "
                f"in {seconds[corruption]:.1f} s")
    return Benchmark(clean, test.labels[index].clone(), images, seconds, test.num_classes, key,
                     f"{test.source}, {n_images} images drawn with seed {seed}; {PACKAGE} {package_version()}",
                     index, cached)


def strength_table(bench: Benchmark):
    """A pandas DataFrame of the mean squared change ``mean((x_c - x)^2)`` (pixels in [0, 1]) per
    corruption (rows) and severity (columns)."""
    import pandas as pd

    x = bench.clean.float() / 255
    rows = {c: {s: ((imgs[i].float() / 255 - x) ** 2).mean().item() for i, s in enumerate(SEVERITIES)}
            for c, imgs in bench.images.items()}
    return pd.DataFrame.from_dict(rows, orient="index").rename_axis(columns="severity")


# ------------------------------------------------------------------------------------ metrics --

@torch.no_grad()
def log_probs(model, images: torch.Tensor, sigma: float = 0.0, seed: int = 0, batch_size: int = 500,
              device=None) -> torch.Tensor:
    """``log p(c | y)`` (N, K) of ``model`` (a ``JointModel``) on uint8 ``images``, with Gaussian
    noise of std ``sigma`` added first (``y = x + sigma eps``, eps drawn from ``seed``) when
    ``sigma > 0``."""
    device = device or next(model.parameters()).device
    model.eval()
    g = torch.Generator().manual_seed(seed)
    out = []
    for start in range(0, len(images), batch_size):
        x = images[start:start + batch_size].float().div_(255)
        if sigma > 0:
            x = x + sigma * torch.randn(x.shape, generator=g)
        out.append(model.classify(x.to(device), sigma).float().cpu())
    return torch.cat(out)


@dataclass
class BenchmarkResult:
    """``rows``: one dict per model, corruption (``clean`` for the clean images) and severity (0 for
    clean) with accuracy, NLL, ECE and the sigma used; ``confidence`` and ``correct``: per model, the
    max-probability and correctness of every corrupted evaluation image (for reliability diagrams);
    ``matched``: per joint model, the chosen sigma per (corruption, severity); ``seconds``: time per
    model."""

    rows: list[dict]
    confidence: dict[str, torch.Tensor]
    correct: dict[str, torch.Tensor]
    matched: dict[str, dict[tuple[str, int], float]]
    seconds: dict[str, float]

    def frame(self):
        """``rows`` as a pandas DataFrame."""
        import pandas as pd

        return pd.DataFrame(self.rows)


def _row(model: str, corruption: str, severity: int, sigma: float, logp, labels, num_classes) -> dict:
    return {"model": model, "corruption": corruption, "severity": severity, "sigma": sigma,
            **classification_metrics(logp, labels, num_classes)}


def _sigma_seed(seed: int, corruption: str, severity: int, k: int) -> int:
    return (seed * 1_000_003 + zlib.crc32(f"{corruption}/{severity}/{k}".encode())) % 2**32


def evaluate_benchmark(models: dict, bench: Benchmark, holdout: int, sigmas=(0.0,), matched=(), seed: int = 0,
                       log=print) -> BenchmarkResult:
    """Accuracy, NLL and ECE of each of ``models`` (``{label: JointModel}``) on the clean and every
    corrupted set, on the images after the first ``holdout``. For the labels in ``matched`` (joint
    models) also a row labelled ``"<label>, matched σ"``: per corruption and severity, Gaussian noise
    of the sigma in ``sigmas`` that maximises accuracy on the first ``holdout`` images (the smallest
    such sigma on ties) is added before classifying; ``sigmas`` must contain 0."""
    if not 0 <= holdout < len(bench.labels):
        raise ValueError(f"holdout must be in [0, {len(bench.labels)}), got {holdout}")
    if matched and (0.0 not in sigmas or holdout == 0):
        raise ValueError("a matched sigma needs sigmas containing 0.0 and a holdout > 0")
    unknown = set(matched) - set(models)
    if unknown:
        raise ValueError(f"matched names {sorted(unknown)} are not among the models {sorted(models)}")
    ev = slice(holdout, None)
    labels, k = bench.labels, bench.num_classes
    rows, conf, corr, chosen, seconds = [], {}, {}, {}, {}
    sets = [("clean", 0, bench.clean)] + [(c, s, bench.images[c][i]) for c in bench.corruptions
                                          for i, s in enumerate(SEVERITIES)]
    for name, model in models.items():
        t0 = time.perf_counter()
        names = [name] + ([f"{name}, matched σ"] if name in matched else [])
        confs = {n: [] for n in names}
        corrs = {n: [] for n in names}
        chosen_here = {}
        for corruption, severity, imgs in sets:
            logp = log_probs(model, imgs[ev], 0.0, seed)
            rows.append(_row(name, corruption, severity, 0.0, logp, labels[ev], k))
            if corruption != "clean":
                confs[name].append(logp.exp().max(1).values)
                corrs[name].append(logp.argmax(1) == labels[ev])
            if name not in matched:
                continue
            accs = []
            for j, sigma in enumerate(sigmas):
                lp = log_probs(model, imgs[:holdout], sigma, _sigma_seed(seed, corruption, severity, j))
                accs.append((lp.argmax(1) == labels[:holdout]).float().mean().item())
            best = sigmas[int(np.argmax(accs))]  # first maximum: the smallest sigma on ties
            chosen_here[(corruption, severity)] = best
            lp = logp if best == 0 else log_probs(model, imgs[ev], best, _sigma_seed(seed, corruption, severity, 99))
            rows.append(_row(names[1], corruption, severity, best, lp, labels[ev], k))
            if corruption != "clean":
                confs[names[1]].append(lp.exp().max(1).values)
                corrs[names[1]].append(lp.argmax(1) == labels[ev])
        for n in names:
            conf[n], corr[n] = torch.cat(confs[n]), torch.cat(corrs[n])
        if name in matched:
            chosen[names[1]] = chosen_here
        seconds[name] = time.perf_counter() - t0
        if log is not None:
            log(f"[cdn] corruptions: evaluated {name} on {len(sets)} sets in {seconds[name]:.0f} s")
    return BenchmarkResult(rows, conf, corr, chosen, seconds)


def summary_table(result: BenchmarkResult):
    """The table of the mollification paper, one row per model: clean accuracy and ECE, and the
    means over all corruptions and severities of accuracy, NLL and ECE."""
    import pandas as pd

    df = result.frame()
    clean = df[df.corruption == "clean"].set_index("model")
    corrupted = df[df.corruption != "clean"].groupby("model", sort=False)[["accuracy", "nll", "ece"]].mean()
    table = pd.DataFrame({"clean accuracy": clean["accuracy"], "clean ECE": clean["ece"],
                          "corrupted accuracy": corrupted["accuracy"], "corrupted NLL": corrupted["nll"],
                          "corrupted ECE": corrupted["ece"]})
    return table.loc[list(dict.fromkeys(df.model))]


def per_corruption_table(result: BenchmarkResult, metric: str = "accuracy"):
    """A pandas DataFrame of ``metric`` averaged over severities: one row per model, one column per
    corruption."""
    df = result.frame()
    df = df[df.corruption != "clean"]
    table = df.pivot_table(index="model", columns="corruption", values=metric, aggfunc="mean", sort=False)
    return table.loc[list(dict.fromkeys(df.model)), list(dict.fromkeys(df.corruption))]


def per_group_table(result: BenchmarkResult, metric: str = "accuracy"):
    """A pandas DataFrame of ``metric`` averaged over the corruptions of each family of ``GROUPS``
    (noise, blur, weather, digital) and their severities: one row per model, one column per family."""
    table = per_corruption_table(result, metric)
    return table.T.groupby(lambda c: next(g for g, cs in GROUPS.items() if c in cs), sort=False).mean().T


def per_severity_table(result: BenchmarkResult, metric: str = "accuracy"):
    """A pandas DataFrame of ``metric`` averaged over corruptions: one row per model, one column per
    severity, with the clean value as severity 0."""
    df = result.frame()
    table = df.pivot_table(index="model", columns="severity", values=metric, aggfunc="mean", sort=False)
    return table.loc[list(dict.fromkeys(df.model))]


def reading(summary, group_accuracy, group_ece, corruption_accuracy, noise_trained, joint: str,
            matched: str | None = None) -> list[str]:
    """The measured sentences that read the chapter's tables, each computed from them: ``summary``
    (``summary_table``), the per-family accuracy and ECE (``per_group_table``), the per-corruption accuracy
    (``per_corruption_table``); ``noise_trained`` names the models trained on noisy images, ``joint`` the joint
    model and ``matched`` its matched-sigma row. Models are compared on the rows other than ``matched``."""
    models = [m for m in summary.index if m != matched]
    clean_trained = [m for m in models if m not in noise_trained]
    acc, ece = group_accuracy.loc[models], group_ece.loc[models]
    out = []
    if "noise" in acc.columns and clean_trained:
        out.append(f"**Noise, by training.** On the noise family the models trained on noisy images reach {acc.loc[noise_trained, 'noise'].mean():.3f} "
                   f"mean accuracy, those trained on clean images {acc.loc[clean_trained, 'noise'].mean():.3f}; ECE there: "
                   + ", ".join(f"{m} {ece.loc[m, 'noise']:.3f}" for m in models) + ".")
    for family in acc.columns:
        order = acc[family].sort_values(ascending=False)
        out.append(f"**{family.capitalize()} family.** Highest accuracy: {order.index[0]} ({order.iloc[0]:.3f}); lowest: "
                   f"{order.index[-1]} ({order.iloc[-1]:.3f}); the joint model ranks {list(order.index).index(joint) + 1} "
                   f"of {len(order)}.")
    if "elastic_transform" in corruption_accuracy.columns:
        col = corruption_accuracy.loc[models, "elastic_transform"].sort_values(ascending=False)
        out.append(f"**Elastic transform.** Highest accuracy: {col.index[0]} ({col.iloc[0]:.3f}); lowest: "
                   f"{col.index[-1]} ({col.iloc[-1]:.3f}).")
    s = summary.loc[models]
    drop = (s["clean accuracy"] - s["corrupted accuracy"]).sort_values()
    out.append(f"**Calibration and degradation.** Lowest mean corrupted ECE: {s['corrupted ECE'].idxmin()} "
               f"({s['corrupted ECE'].min():.3f}); lowest corrupted NLL: {s['corrupted NLL'].idxmin()} "
               f"({s['corrupted NLL'].min():.3f}). The joint model loses {drop[joint]:.3f} from clean to corrupted "
               f"accuracy, rank {list(drop.index).index(joint) + 1} of {len(drop)} (1 = the smallest drop; clean accuracy "
               f"{s.loc[joint, 'clean accuracy']:.3f}).")
    if matched is not None and matched in summary.index:
        out.append(f"**The matched σ** changes the joint model's mean corrupted accuracy by "
                   f"{summary.loc[matched, 'corrupted accuracy'] - summary.loc[joint, 'corrupted accuracy']:+.3f} and its "
                   f"mean corrupted ECE by {summary.loc[matched, 'corrupted ECE'] - summary.loc[joint, 'corrupted ECE']:+.3f}"
                   + (f"; on the blur family, accuracy {group_accuracy.loc[matched, 'blur'] - group_accuracy.loc[joint, 'blur']:+.3f} "
                      f"and ECE {group_ece.loc[matched, 'blur'] - group_ece.loc[joint, 'blur']:+.3f}"
                      if "blur" in group_accuracy.columns else "") + ".")
    return out
