"""What the book's chapters show besides figures: the provenance box every chapter opens with,
loading the runs a chapter compares, metric tables, committed GPU results and published reference
numbers (chapters "Front page" to "Results", built by ``cdn.book``).

Nothing here trains or evaluates on its own: runs come from ``cdn.runs.get_or_train`` and metrics
from ``Run.metrics`` (``cdn.evaluate``), so every number a chapter prints comes from a run it loaded
or trained.
"""
from __future__ import annotations

import datetime as _dt
import functools
import hashlib
import re
import json
import platform
import subprocess
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .checkpoint import atomic_write_text, sha256_file
from .data import REPO_ROOT, cache_dir, candidate_dirs
from .profiles import PROFILE_SETTINGS, get_config, runs_profile
from .runs import Data, Run, find_committed, get_or_train, load_run, portable_source, resolve_data, results_root

#: Published CIFAR-10 test accuracies the results chapter sets beside ours. They are literature
#: values (not produced by this project) and are always shown with their source.
PUBLISHED_REFERENCES: tuple[dict, ...] = (
    {"model": "ResNet-18 (discriminative)", "cifar10_accuracy": "about 95%",
     "source": "architecture: He, Zhang, Ren, Sun, Deep Residual Learning for Image Recognition, CVPR "
               "2016; accuracy of the CIFAR ResNet-18 with standard augmentation as commonly reproduced, "
               "e.g. 94.4% (PreAct ResNet-18, ERM) in Zhang et al., mixup, ICLR 2018",
     "cite": "he2016deep"},
    {"model": "JEM", "cifar10_accuracy": "92.9%",
     "source": "Grathwohl et al., Your Classifier is Secretly an Energy Based Model and You Should "
               "Treat it Like One, ICLR 2020", "cite": "grathwohl2020jem"},
    {"model": "JEM++", "cifar10_accuracy": "94.1%",
     "source": "Yang and Ji, JEM++: Improved Techniques for Training JEM, ICCV 2021", "cite": "yang2021jempp"},
    {"model": "EGC", "cifar10_accuracy": "95.9%",
     "source": "Guo et al., EGC: Image Generation and Classification via a Diffusion Energy-Based "
               "Model, ICCV 2023 (arXiv:2304.02012)", "cite": "guo2023egc"},
)

#: Human-readable names of the models of ``cdn.profiles.MODELS`` used in tables and legends.
MODEL_LABELS = {
    "gradresnet": "GradResNet (joint)",
    "gradresnet-cond": "GradResNet (joint, noise-conditioned)",
    "gradresnet-logenergy": "GradResNet (joint, 3x3 log-energy: the shortcut)",
    "gradresnet-ce": "GradResNet (cross-entropy only)",
    "resnet18": "ResNet-18",
    "resnet18-noise": "ResNet-18 + noise augmentation",
    "resnet18-mollify": "ResNet-18 + mollification",
    "unet": "UNet (denoise only)",
    "dncnn": "DnCNN (bias-free, denoise only)",
    "gradresnet-ce-noisy": "GradResNet (cross-entropy on noisy images)",
    "egc": "EGC objective (same GradResNet, noise-conditioned)",
    "gradresnet-dsm-cond": "GradResNet, D(y, c) by score matching alone",
}


def model_label(model: str) -> str:
    """The display name of a model of ``cdn.profiles.MODELS`` (the model name itself if unknown)."""
    return MODEL_LABELS.get(model, model)


# ------------------------------------------------------------------------------ provenance --

def git_commit(repo: str | Path | None = None) -> str:
    """The short commit hash of the repository, followed by ``uncommitted`` when the work tree has
    changes (tracked or untracked, ignored files excepted); ``unknown (...)`` outside a git checkout."""
    repo = Path(repo) if repo is not None else REPO_ROOT
    try:
        head = subprocess.run(["git", "-C", str(repo), "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, timeout=10)
        if head.returncode != 0:
            return "unknown (not a git checkout)"
        dirty = subprocess.run(["git", "-C", str(repo), "status", "--porcelain"], capture_output=True, text=True,
                               timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return "unknown (git not available)"
    commit = head.stdout.strip()
    return f"{commit} + uncommitted changes" if dirty.stdout.strip() else commit


def _cpu_model() -> str | None:
    """The processor's model name from /proc/cpuinfo (Linux), or None."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def device_description(device: str | torch.device | None = None) -> str:
    """The device the chapter's models run on, in words: the CUDA device's name, or ``cpu`` with the
    processor and the number of torch threads."""
    dev = torch.device(device) if device is not None else torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if dev.type == "cuda":
        return f"cuda ({torch.cuda.get_device_name(dev)})"
    cpu = _cpu_model() or platform.processor() or platform.machine() or "unknown processor"
    return f"cpu ({cpu}, {torch.get_num_threads()} threads)"


@functools.lru_cache(maxsize=None)
def _data_file_sha256(name: str) -> str | None:
    """The sha256 of the data file ``name`` in the data folders (``cdn.data.candidate_dirs``), None if absent."""
    for d in candidate_dirs(None):
        if (d / name).is_file():
            return sha256_file(d / name)
    return None


_DATA_FILE = re.compile(r"\(([^()]*?\.(?:tar\.gz|tgz|zip|npz))([,)])")


def described_data(data_source: str) -> str:
    """``data_source`` without this machine's paths (``cdn.runs.portable_source``), each data file named with
    the first 12 hex digits of its sha256 where the file is found: ``CIFAR-10 JPEG copy (/data/cifar10-jpeg.tar.gz)``
    -> ``CIFAR-10 JPEG copy (cifar10-jpeg.tar.gz, sha256 45b041e867f5)``."""
    def with_digest(m: re.Match) -> str:
        digest = _data_file_sha256(m.group(1))
        return f"({m.group(1)}, sha256 {digest[:12]}{m.group(2)}" if digest else m.group(0)

    return _DATA_FILE.sub(with_digest, portable_source(data_source))


def provenance(data_source: str, profile: str, device=None) -> dict[str, str]:
    """The facts of the provenance box as a dict: profile, data (by file name and checksum, ``described_data``),
    device, commit, date (UTC)."""
    if not isinstance(data_source, str) or not data_source:
        raise ValueError(f"data_source must be a non-empty string (e.g. Data.source), got {data_source!r}")
    if not isinstance(profile, str) or not profile:
        raise ValueError(f"profile must be a non-empty string, got {profile!r}")
    return {
        "profile": profile,
        "data": described_data(data_source),
        "device": device_description(device),
        "commit": git_commit(),
        "date": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "torch": torch.__version__,
    }


_PROFILE_NOTES = {
    "smoke": "**smoke profile**: tiny networks trained for a few steps so that every code path runs in "
             "seconds. The numbers below mean nothing.",
    "quick": "**quick profile**: small widths, short schedules and data subsets that fit a 2-core "
             "machine. The numbers are illustrative, not the paper's.",
    "cpu": "**cpu profile**: the CIFAR-10 models at width 16 on all 50,000 training images, each trained "
           "for the same ten epochs (3,910 steps of batch 128) in float32 with a moving average of the weights "
           "and test-time flips, evaluated on the 10,000 test images; committed under results/cpu-cifar10/. "
           "Tiny ImageNet, the exercises and the chapter 10 ablation use the quick profile's runs.",
    "paper": "**paper profile**: the paper-sized architecture and schedule (one GPU, hours).",
}


def provenance_markdown(data_source: str, profile: str, device=None) -> str:
    """The provenance box as MyST Markdown: an admonition holding a table of profile, data, device,
    commit and date. A fallback to the digits is called out in the admonition's title."""
    facts = provenance(data_source, profile, device)
    fallback = "fallback" in data_source.lower()
    title = "Provenance of this page" + (" (DATA FALLBACK: not the intended dataset)" if fallback else "")
    klass = "warning" if fallback or profile == "smoke" else "note"
    note = _PROFILE_NOTES.get(profile, f"profile **{profile}**")
    rows = "\n".join(f"- **{k}**: {v}" for k, v in facts.items())
    return f"```{{admonition}} {title}\n:class: {klass} provenance\n\n{note}\n\n{rows}\n```\n"


def provenance_box(data_source: str, profile: str, device=None):
    """The box every chapter shows as its first output: profile, the data actually used (after any
    fallback), device, git commit (``uncommitted`` if the tree is dirty) and date, as an
    ``IPython.display.Markdown`` object holding a MyST admonition (rendered by the book with
    ``nb_render_markdown_format: myst``)."""
    from IPython.display import Markdown

    return Markdown(provenance_markdown(data_source, profile, device))


# ------------------------------------------------------------------------------ chapter runs --

@dataclass
class ModelRun:
    """One model of a chapter: its run and the data it was trained and is evaluated on."""

    model: str
    run: Run
    data: Data

    @property
    def label(self) -> str:
        """The model's display name (``model_label``)."""
        return model_label(self.model)

    def metrics(self) -> dict:
        """``Run.metrics`` on this model's test set (cached in the run's metrics.json)."""
        return self.run.metrics(self.data.test)


def chapter_runs(profile: str, models, dataset: str = "cifar10", data_dir=None, seed: int = 0,
                 **overrides) -> dict[str, ModelRun]:
    """Load (or train, once) each of ``models`` on ``dataset`` in ``profile``, through
    ``cdn.runs.get_or_train``: runs are keyed by their configuration, so chapters share them.
    Each model's data is resolved from its own configuration (``get_or_train`` keys the run by
    ``data.config``). A profile without settings for ``dataset`` uses the quick runs
    (``cdn.profiles.runs_profile``: a ``cpu`` build on Tiny ImageNet). Returns ``{model: ModelRun}`` in
    the order given."""
    out = {}
    profile = runs_profile(profile, dataset)
    for model in models:
        config = get_config(profile, model, dataset, seed=seed, **overrides)
        data = resolve_data(config, data_dir)
        out[model] = ModelRun(model, get_or_train(config, data=data), data)
    return out


def data_source(runs: dict[str, ModelRun]) -> str:
    """The data the given runs used, in words (for the provenance box): one line per distinct
    training source."""
    sources = []
    for r in runs.values():
        if r.data.source not in sources:
            sources.append(r.data.source)
    return "; ".join(sources)


# -------------------------------------------------------------------------------- tables --

def classification_table(runs: dict[str, ModelRun], metric: str = "accuracy"):
    """A pandas DataFrame of ``metric`` (accuracy, nll or ece) with one row per model and one column
    per noise level sigma, from each run's cached metrics."""
    import pandas as pd

    table = {}
    for name, r in runs.items():
        rows = r.metrics().get("classification")
        if rows:
            table[r.label] = {f"σ={row['sigma']:g}": row[metric] for row in rows}
    if not table:
        raise ValueError("none of the given runs is a classifier (no classification metrics)")
    return pd.DataFrame.from_dict(table, orient="index")


def denoising_table(runs: dict[str, ModelRun]):
    """A pandas DataFrame of PSNR (dB) with one row per denoiser (``noisy`` input, then each joint
    model's ``D(y)``, ``D(y,c)``, ``D(y,wrong c)`` and each denoise-only model) and one column per
    sigma."""
    import pandas as pd

    table: dict[str, dict] = {}
    for name, r in runs.items():
        rows = r.metrics().get("denoising")
        if not rows:
            continue
        for key in rows[0]:
            if key == "sigma":
                continue
            label = "noisy input y" if key == "noisy" else f"{r.label}: {key}"
            if key == "noisy" and label in table:
                continue
            table[label] = {f"σ={row['sigma']:g}": row[key] for row in rows}
    if not table:
        raise ValueError("none of the given runs is a denoiser (no denoising metrics)")
    return pd.DataFrame.from_dict(table, orient="index")


def psnr_curves(runs: dict[str, ModelRun]) -> dict[str, list[dict]]:
    """PSNR rows per curve for ``cdn.plots.metric_vs_sigma``: ``{label: [{"sigma", "psnr"}, ...]}``,
    one curve per denoiser of every run plus the noisy input."""
    curves: dict[str, list[dict]] = {}
    for name, r in runs.items():
        rows = r.metrics().get("denoising") or []
        for key in (rows[0] if rows else {}):
            if key == "sigma":
                continue
            if key == "noisy":
                label = "noisy input y"
            elif r.run.config.objective == "mse":
                label = r.label
            else:
                label = f"{key}, {r.label}"
            curves.setdefault(label, [{"sigma": row["sigma"], "psnr": row[key]} for row in rows])
    return curves


def training_summary(runs: dict[str, ModelRun]):
    """A pandas DataFrame of how each run was trained: objective, steps, epochs, wall time, time per
    step, median throughput (images / s), and the time per step divided by that of the cross-entropy
    GradResNet when present (the double-backward cost of the joint objective). Format it with
    ``TRAINING_SUMMARY_FORMAT``."""
    import pandas as pd

    rows = {}
    for name, r in runs.items():
        st = r.run.state
        log = r.run.log()
        steps = st.get("step") or 0
        per_step = st["elapsed_s"] / steps if steps and st.get("elapsed_s") is not None else float("nan")
        ips = [row["images_per_s"] for row in log if "images_per_s" in row]
        rows[r.label] = {"objective": r.run.config.objective, "steps": steps, "epochs": st.get("epochs"),
                         "wall time (s)": st.get("elapsed_s"), "ms / step": 1000 * per_step,
                         "images / s": sorted(ips)[len(ips) // 2] if ips else float("nan")}
    df = pd.DataFrame.from_dict(rows, orient="index")
    ref = model_label("gradresnet-ce")
    if ref in df.index:
        df["step cost ÷ CE step"] = df["ms / step"] / df.loc[ref, "ms / step"]
    return df


#: number formats of the ``training_summary`` columns, for ``DataFrame.style.format``
TRAINING_SUMMARY_FORMAT = {"epochs": "{:.2f}", "wall time (s)": "{:.1f}", "ms / step": "{:.0f}",
                           "images / s": "{:.1f}", "step cost ÷ CE step": "{:.2f}"}


def headline_rows(runs: dict[str, ModelRun], dataset: str, sigma: float = 0.1) -> list[dict]:
    """The headline numbers of each run, one dict per model: clean accuracy and ECE, accuracy at
    ``sigma`` and PSNR of ``D(y)`` (or the denoise-only model) at ``sigma``, with the profile and the
    data that made them. Missing values are ``None``."""
    out = []
    for name, r in runs.items():
        m = r.metrics()
        cls = {row["sigma"]: row for row in m.get("classification") or []}
        den = {row["sigma"]: row for row in m.get("denoising") or []}
        out.append({
            "dataset": dataset, "model": r.label, "profile": r.run.config.profile,
            "clean accuracy": cls.get(0.0, {}).get("accuracy"),
            f"accuracy σ={sigma:g}": cls.get(sigma, {}).get("accuracy"),
            "clean ECE": cls.get(0.0, {}).get("ece"),
            f"PSNR D(y) σ={sigma:g} (dB)": den.get(sigma, {}).get("D(y)"),
            f"PSNR noisy σ={sigma:g} (dB)": den.get(sigma, {}).get("noisy"),
            "train time (s)": r.run.state.get("elapsed_s"),
            "data": r.data.source,
        })
    return out


# ------------------------------------------------------------------- classical reference --

def nlmeans_denoiser(patch_size: int = 3, patch_distance: int = 5, h_factor: float = 0.8):
    """A classical reference denoiser for ``cdn.evaluate.psnr_vs_sigma``: scikit-image's non-local
    means (Buades, Coll and Morel, 2005) told the true sigma, with filtering strength
    ``h = h_factor * sigma``, applied image by image on the CPU. Returns ``denoise(y, sigma, c)``."""
    from skimage.restoration import denoise_nl_means

    def denoise(y: torch.Tensor, sigma: float, c=None) -> torch.Tensor:
        arr = y.detach().float().cpu().numpy()
        out = [denoise_nl_means(img.transpose(1, 2, 0), h=h_factor * float(sigma), sigma=float(sigma),
                                patch_size=patch_size, patch_distance=patch_distance, fast_mode=True,
                                channel_axis=-1).reshape(img.shape[1], img.shape[2], img.shape[0]).transpose(2, 0, 1)
               for img in arr]
        return torch.from_numpy(np.stack(out)).to(y.device, y.dtype)

    return denoise


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


def photo(size: int, channels: int = 3, name: str = "astronaut") -> torch.Tensor:
    """A photograph shipped with scikit-image (``skimage.data.<name>``) resized to ``size`` x
    ``size`` (anti-aliased), grey when ``channels`` is 1, as a (C, size, size) float tensor in [0, 1]."""
    from skimage import data as skdata
    from skimage.color import rgb2gray
    from skimage.transform import resize

    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 or 3, got {channels}")
    img = getattr(skdata, name)()
    if img.ndim == 2:
        img = np.stack([img] * 3, axis=-1)
    img = img[..., :3].astype(np.float32) / 255.0
    side = min(img.shape[:2])
    img = img[:side, :side]
    if channels == 1:
        img = rgb2gray(img)[..., None]
    img = resize(img, (size, size, channels), anti_aliasing=True)
    return torch.from_numpy(np.clip(img, 0, 1).transpose(2, 0, 1).copy()).float()


#: the classical references' comparison in chapter "Denoising": BM3D costs about a second of CPU per
#: 32x32 colour image and noise level, so it runs on this many seeded random test images per profile
CLASSICAL_IMAGES = {"smoke": 4, "quick": 48, "cpu": 100, "paper": 500}
#: the noise levels of that comparison
CLASSICAL_SIGMAS = (0.05, 0.1, 0.2)


def bm3d_denoiser(profile: str = "np"):
    """A classical reference denoiser for ``cdn.evaluate.psnr_vs_sigma``: BM3D (Dabov, Foi, Katkovnik
    and Egiazarian, 2007; the pip package ``bm3d``, Mäkinen, Azzari and Foi) told the true sigma,
    ``bm3d_rgb`` on colour images (in its opponent colour space) and ``bm3d`` on grey ones, image by
    image on the CPU (chapter "Denoising"). Returns ``denoise(y, sigma, c)``; ``sigma = 0`` returns
    ``y``."""
    try:
        import bm3d
    except ImportError as err:
        raise ImportError("BM3D needs the pip package bm3d (in the book extra): pip install bm3d") from err

    def denoise(y: torch.Tensor, sigma: float, c=None) -> torch.Tensor:
        if float(sigma) == 0.0:
            return y
        out = []
        for img in y.detach().double().cpu().numpy():
            z = img.transpose(1, 2, 0)
            d = bm3d.bm3d_rgb(z, float(sigma), profile) if z.shape[2] == 3 else bm3d.bm3d(z[..., 0], float(sigma),
                                                                                        profile)[..., None]
            out.append(np.asarray(d).reshape(z.shape).transpose(2, 0, 1))
        return torch.from_numpy(np.stack(out)).to(y.device, y.dtype)

    return denoise


def random_images(ds, n: int, seed: int = 0):
    """``n`` seeded random images of ``ds`` (``ImageDataset.sample_indices``) as a dataset of their own,
    in that order, so that every denoiser evaluated on it by ``psnr_vs_sigma`` with one seed sees the
    same noisy images (chapter "Denoising": the networks beside BM3D and non-local means)."""
    from .data import ImageDataset

    idx = ds.sample_indices(min(n, len(ds)), seed)
    return ImageDataset(ds.images[idx], ds.labels[idx], ds.classes, ds.name,
                        ds.source + f", {len(idx)} random images (seed {seed})", ds.fallback, dict(ds.meta))


# --------------------------------------------------------------------- cached chapter results --

def file_digest(*paths) -> str:
    """A short sha256 of the bytes of ``paths`` (a run's weights, the source of the modules that
    computed a result), for the keys of ``cached_json``."""
    h = hashlib.sha256()
    for p in paths:
        h.update(Path(p).read_bytes())
    return h.hexdigest()[:16]


def cached_json(name: str, key: dict, compute):
    """``compute()`` (a JSON-serialisable result), cached as ``<cache>/chapters/<name>-<hash>.json``
    (``cdn.data.cache_dir()``, i.e. ``$CDN_CACHE`` or ``~/.cache/cdn``) under the sha256 of ``key``:
    a chapter's expensive results (e.g. attack curves, chapter "Robustness") are computed once per
    key. Put in ``key`` everything the result depends on: run names and ``file_digest`` of their
    weights and of the computing modules, sizes, seed."""
    text = json.dumps(key, sort_keys=True)
    path = cache_dir() / "chapters" / f"{name}-{hashlib.sha256(text.encode()).hexdigest()[:16]}.json"
    if path.exists():
        cached = json.loads(path.read_text())
        if cached.get("key") == json.loads(text):
            return cached["value"]
    value = compute()
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps({"key": key, "value": value}))
    return value


# ------------------------------------------------------------------- chapter summaries --

def save_summary(name: str, profile: str, table, caption: str, data_source: str = "") -> Path:
    """Keep a chapter's headline table (a pandas DataFrame) for the Results chapter, as JSON in
    ``<cache>/summaries/<profile>/<name>.json`` with its caption, the data, the commit and the date.
    Used by chapters "Efficiency", "Robustness" and "Corruptions"; read by ``load_summaries``."""
    from .profiles import PROFILES

    if profile not in PROFILES:
        raise ValueError(f"profile must be one of {', '.join(PROFILES)}, got {profile!r}")
    path = cache_dir() / "summaries" / profile / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    record = {"name": name, "caption": caption, "data": data_source, "commit": git_commit(),
              "date": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
              "table": json.loads(table.to_json(orient="split"))}
    atomic_write_text(path, json.dumps(record, indent=1))
    return path


def load_summaries(profile: str) -> list[dict]:
    """The summaries ``save_summary`` kept for ``profile``, sorted by name, each with its table back
    as a DataFrame under ``"frame"`` (chapter "Results")."""
    import pandas as pd

    out = []
    for path in sorted((cache_dir() / "summaries" / profile).glob("*.json")):
        record = json.loads(path.read_text())
        t = record["table"]
        record["frame"] = pd.DataFrame(t["data"], index=t["index"], columns=t["columns"])
        out.append(record)
    return out


# ---------------------------------------------------------------------- committed results --

def committed_results(results_dir: str | Path | None = None) -> list[Path]:
    """The GPU result files (``*.json``, ``*.csv``) committed under ``results/paper-*/`` (one folder
    per paper-profile run, chapter "Results"), sorted; an empty list when there are none. The CPU
    benchmark files directly under ``results/`` belong to chapter "Efficiency" and are not listed. Of a
    committed run (a folder with ``manifest.json``, ``cdn.runs.export_run``) only ``metrics.json`` is."""
    root = Path(results_dir) if results_dir is not None else REPO_ROOT / "results"
    if not root.is_dir():
        return []
    return sorted(p for d in root.glob("paper-*") if d.is_dir() for p in d.rglob("*")
                  if p.is_file() and p.suffix.lower() in (".json", ".csv")
                  and (p.name == "metrics.json" or not (p.parent / "manifest.json").is_file()))


def load_result(path: str | Path):
    """A committed result file as a pandas DataFrame: a CSV as is; a JSON list of flat records, a
    dict of records, or a ``metrics.json`` of a run (its classification and denoising rows, labelled
    with the run's model and profile)."""
    import pandas as pd

    path = Path(path)
    if path.suffix.lower() == ".csv":
        return pd.read_csv(path)
    data = json.loads(path.read_text())
    if isinstance(data, list):
        return pd.DataFrame(data)
    if isinstance(data, dict) and ("classification" in data or "denoising" in data):
        frames = []
        for kind in ("classification", "denoising"):
            if data.get(kind):
                df = pd.DataFrame(data[kind])
                df.insert(0, "kind", kind)
                frames.append(df)
        df = pd.concat(frames, ignore_index=True)
        for key in ("profile", "model", "run"):
            if key in data:
                df.insert(0, key, data[key])
        return df
    if isinstance(data, dict):
        return pd.json_normalize(data)
    raise ValueError(f"{path}: expected a JSON list or object, got {type(data).__name__}")


@dataclass(frozen=True)
class RecordedData:
    """The data a committed run names (``state.json``: file name and sha256, no path of this machine)."""

    source: str


@dataclass
class CommittedModelRun(ModelRun):
    """A model of a committed run (``results/<profile>-<dataset>/<model>/``) whose metrics are the
    ones it was committed with: its ``metrics.json``, checked against the manifest's sha256, never
    recomputed (so the Results chapter of any profile can show them without the data)."""

    def metrics(self) -> dict:
        return json.loads((self.run.dir / "metrics.json").read_text())


def committed_runs(profile: str, dataset: str, models, results_dir: str | Path | None = None
                   ) -> dict[str, CommittedModelRun]:
    """The committed runs of ``models`` in ``results/<profile>-<dataset>/`` (``cdn.runs.export_run``),
    each verified against its manifest (``cdn.runs.verify_committed``: a changed file is a
    ``CheckpointError``) and loaded on the CPU, as ``{model: CommittedModelRun}`` in the order given;
    models without a committed run, or whose committed run is of another configuration than the profile's own
    (``cdn.runs.find_committed``: trained before the profile changed), are left out (an empty dict when none is
    committed). The tables of
    this module take them like ``chapter_runs``'s (chapter "Results", the ``cpu`` column)."""
    folder = results_root(results_dir) / f"{profile}-{dataset}"
    out: dict[str, CommittedModelRun] = {}
    for model in models:
        run_dir = folder / model
        if not (run_dir / "manifest.json").is_file():
            continue
        if dataset in PROFILE_SETTINGS.get(profile, {}):
            # only the run of the profile's own configuration (not one trained before the profile changed)
            if find_committed(get_config(profile, model, dataset), results_dir) is None:
                continue
        run = load_run(run_dir, "cpu")  # verifies every sha256 first
        if not (run_dir / "metrics.json").is_file():
            raise FileNotFoundError(f"committed run {run_dir} has no metrics.json (export it from a run that "
                                    "was evaluated: cdn train ... without --no-eval, then cdn export)")
        source = portable_source(run.state.get("data")) or "unknown data"
        out[model] = CommittedModelRun(model, run, RecordedData(source))
    return out


def published_references():
    """``PUBLISHED_REFERENCES`` as a pandas DataFrame (model, CIFAR-10 accuracy, source)."""
    import pandas as pd

    return pd.DataFrame([{k: r[k] for k in ("model", "cifar10_accuracy", "source")} for r in PUBLISHED_REFERENCES])


__all__ = ["PUBLISHED_REFERENCES", "MODEL_LABELS", "TRAINING_SUMMARY_FORMAT", "ModelRun", "CommittedModelRun", "RecordedData", "committed_runs", "cached_json", "chapter_runs", "classification_table",
           "committed_results", "load_summaries", "save_summary", "data_source", "denoising_table", "device_description", "git_commit",
           "file_digest", "headline_rows", "load_result", "model_label", "nlmeans_denoiser", "photo", "provenance", "provenance_box", "provenance_markdown",
           "psnr_curves", "published_references", "tile", "training_summary", "untile", "CLASSICAL_IMAGES",
           "CLASSICAL_SIGMAS", "bm3d_denoiser", "random_images"]
