"""What every chapter opens with and reuses: the provenance box, the runs a chapter compares (trained or
loaded through ``cdn.runs.get_or_train``), computations cached under a key built from their inputs,
the summaries the Results chapter collects, committed results and published reference numbers.

Nothing here trains or evaluates on its own: runs come from ``cdn.runs`` and metrics from ``Run.metrics``
(``cdn.evaluate``), so every number a chapter prints comes from a run it loaded or trained."""
from __future__ import annotations

import datetime as _dt
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import torch

from ..checkpoint import atomic_write_text
from ..data import ImageDataset, cache_dir
from ..profiles import PROFILE_SETTINGS, PROFILES, get_config, model_label, runs_profile
from ..provenance import described_data, device_description, git_commit, portable_source
from ..committed import find_committed, results_root
from ..runs import Data, Run, get_or_train, load_run, resolve_data

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


def random_images(ds, n: int, seed: int = 0):
    """``n`` seeded random images of ``ds`` (``ImageDataset.sample_indices``) as a dataset of their own,
    in that order, so that every denoiser evaluated on it by ``psnr_vs_sigma`` with one seed sees the
    same noisy images (chapter "Denoising": the networks beside BM3D and non-local means)."""

    idx = ds.sample_indices(min(n, len(ds)), seed)
    return ImageDataset(ds.images[idx], ds.labels[idx], ds.classes, ds.name,
                        ds.source + f", {len(idx)} random images (seed {seed})", ds.fallback, dict(ds.meta))


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


def save_summary(name: str, profile: str, table, caption: str, data_source: str = "") -> Path:
    """Keep a chapter's headline table (a pandas DataFrame) for the Results chapter, as JSON in
    ``<cache>/summaries/<profile>/<name>.json`` with its caption, the data, the commit and the date.
    Used by chapters "Efficiency", "Robustness" and "Corruptions"; read by ``load_summaries``."""

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


def committed_results(results_dir: str | Path | None = None) -> list[Path]:
    """The GPU result files (``*.json``, ``*.csv``) committed under ``results/paper-*/`` (one folder
    per paper-profile run, chapter "Results"), sorted; an empty list when there are none. The CPU
    benchmark files directly under ``results/`` belong to chapter "Efficiency" and are not listed. Of a
    committed run (a folder with ``manifest.json``, ``cdn.runs.export_run``) only ``metrics.json`` is. The results
    folder is ``results_dir``, else ``$CDN_RESULTS``, else ``results/`` (``cdn.committed.results_root``)."""
    root = results_root(results_dir)
    if not root.is_dir():
        return []
    return sorted(p for d in root.glob("paper-*") if d.is_dir() for p in d.rglob("*")
                  if p.is_file() and p.suffix.lower() in (".json", ".csv")
                  and (p.name == "metrics.json" or not (p.parent / "manifest.json").is_file()))


def result_json(name: str, results_dir: str | Path | None = None) -> dict:
    """The committed JSON result ``name`` directly under the results folder (``results/``, or ``$CDN_RESULTS``:
    ``cdn.committed.results_root``), read."""
    path = results_root(results_dir) / name
    if not path.is_file():
        raise FileNotFoundError(f"no committed result {name} in {results_root(results_dir)}")
    return json.loads(path.read_text())


def result_jsons(pattern: str, results_dir: str | Path | None = None) -> dict[str, dict]:
    """Every committed JSON result directly under the results folder whose name matches the glob ``pattern``,
    read, by file name in sorted order (empty when none matches)."""
    return {p.name: json.loads(p.read_text()) for p in sorted(results_root(results_dir).glob(pattern)) if p.is_file()}


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
    each verified against its manifest (``cdn.committed.verify_committed``: a changed file is a
    ``CheckpointError``) and loaded on the CPU, as ``{model: CommittedModelRun}`` in the order given;
    models without a committed run, or whose committed run is of another configuration than the profile's own
    (``cdn.committed.find_committed``: trained before the profile changed), are left out (an empty dict when none is
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
