"""The claims ledger: each claim of the paper, the committed evidence that bears on it, and a verdict by
a rule written here, before any number is read (chapter "Results" and the README show it).

Evidence is read only from what is committed under ``results/``: the committed run of a profile's own
configuration of a model (``cdn.committed.find_committed``: a run trained under another configuration or
code version is not evidence for this one) and its ``metrics.json``, and the committed accuracy-against-time
curves of ``results/efficiency/``. Nothing here trains or evaluates on data. Verdicts:

* ``supported``: the rule's numbers pass;
* ``not supported``: they fail (the row says by how much);
* ``not tested``: the evidence the rule needs is not committed for this profile (the row says what is
  missing), so the ledger claims nothing.

``ledger(profile)`` returns the rows; ``markdown(profiles)`` the table that the README holds between
the lines ``<!-- claims:start -->`` and ``<!-- claims:end -->`` (``python -m cdn claims --readme``
rewrites it; a test fails when the README and the committed results disagree).
"""
from __future__ import annotations

import contextlib
import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from ..experiments import joint_search
from ..experiments.attacks import CHECK_EPS
from ..experiments.efficiency import race_file
from ..experiments.robustness import result_path as robustness_path
from ..profiles import PROFILE_SETTINGS, experiment_sizes, get_config, sizes_profile
from ..committed import find_committed, results_root

#: the profiles whose committed runs the ledger reads (smoke and paper runs are not committed for CIFAR-10)
LEDGER_PROFILES = ("quick", "cpu")
#: "competitive" accuracy: within this many points of the reference classifier
ACCURACY_POINTS = 2.0
#: "joint helps over separate training": at least this many points above the separate model
JOINT_GAIN_POINTS = 1.0
#: "competitive" denoising: within this many dB of the denoise-only UNet at every noise level below
PSNR_DB = 0.5
DENOISE_SIGMAS = (0.05, 0.1, 0.2)
#: "conditioning changes little": |PSNR of D(y, true c) - PSNR of D(y)| below this at every level
CONDITIONAL_DB = 0.1
#: the noise level of the robustness-to-noise claim
NOISY_SIGMA = 0.2
#: the difference-of-denoisers identity "holds" when its largest relative error in float64 is below this
IDENTITY_TOLERANCE = 1e-8
README_START, README_END = "<!-- claims:start -->", "<!-- claims:end -->"


@dataclass(frozen=True)
class Claim:
    """One claim of the paper: ``judge(profile, results)`` returns ``{"evidence", "verdict", "numbers"}``."""

    key: str
    text: str
    chapter: str
    rule: str
    judge: Callable[[str, Path], dict]


def committed_metrics(profile: str, model: str, results: Path, dataset: str = "cifar10") -> tuple[dict | None, str]:
    """``(metrics, run name)`` of the committed run of ``get_config(profile, model, dataset)``, or ``(None, why)``."""
    if dataset not in PROFILE_SETTINGS.get(profile, {}):
        return None, f"the {profile} profile has no {dataset} settings"
    config = get_config(profile, model, dataset)
    with contextlib.redirect_stdout(io.StringIO()):  # find_committed says why another configuration's run is not used
        run_dir = find_committed(config, results)
    if run_dir is None:
        return None, f"no committed {model} run of the {profile} profile's configuration ({config.run_name()})"
    path = run_dir / "metrics.json"
    if not path.is_file():
        return None, f"the committed {model} run has no metrics.json"
    return json.loads(path.read_text()), config.run_name()


def accuracy(metrics: dict, sigma: float = 0.0) -> float | None:
    """The accuracy of ``metrics["classification"]`` at noise level ``sigma`` (None if not measured)."""
    rows = [r for r in metrics.get("classification") or [] if abs(r["sigma"] - sigma) < 1e-9]
    return rows[0]["accuracy"] if rows else None


def psnr(metrics: dict, sigma: float, key: str = "D(y)") -> float | None:
    """The PSNR (dB) of ``key`` (``"D(y)"``, ``"D(y,c)"``, ``"noisy"``) at ``sigma`` in ``metrics["denoising"]``."""
    rows = [r for r in metrics.get("denoising") or [] if abs(r["sigma"] - sigma) < 1e-9 and key in r]
    return rows[0][key] if rows else None


def _missing(*whys: str) -> dict:
    return {"evidence": "; ".join(dict.fromkeys(whys)), "verdict": "not tested", "numbers": {}, "runs": []}


def _gather(profile: str, results: Path, models, dataset: str = "cifar10") -> tuple[dict, list[str]]:
    """``({model: metrics}, [why missing])``; each metrics dict also holds its run name under ``"run"``."""
    found, missing = {}, []
    for m in models:
        metrics, why = committed_metrics(profile, m, results, dataset)
        if metrics is None:
            missing.append(why)
        else:
            found[m] = dict(metrics, run=why)
    return found, missing


def _clean_accuracy_gap(profile: str, results: Path, other: str, label: str, min_gap_points: float) -> dict:
    """The joint model's clean accuracy against ``other``'s: supported when ``acc(joint) - acc(other)``, in
    points, is at least ``min_gap_points``."""
    found, missing = _gather(profile, results, ("gradresnet", other))
    if missing:
        return _missing(*missing)
    a, b = accuracy(found["gradresnet"]), accuracy(found[other])
    if None in (a, b):
        return _missing("the clean accuracy is not in every metrics.json")
    gap = 100 * (a - b)
    return {"evidence": f"clean accuracy {100 * a:.1f}% (joint) against {100 * b:.1f}% ({label}): {gap:+.1f} points",
            "verdict": "supported" if gap >= min_gap_points else "not supported",
            "numbers": {"joint": a, other: b}, "runs": [m["run"] for m in found.values()]}


def judge_classification(profile: str, results: Path) -> dict:
    """Clean accuracy of the joint model against the discriminative ResNet-18 at the same profile:
    supported when ``acc(joint) >= acc(resnet18) - ACCURACY_POINTS``."""
    return _clean_accuracy_gap(profile, results, "resnet18", "ResNet-18", -ACCURACY_POINTS)


def judge_joint_vs_separate(profile: str, results: Path) -> dict:
    """Clean accuracy of the joint model against the same network trained on cross-entropy alone on the
    same images, clean and noisy (the baseline that removes the confound of what the classifier sees): supported when
    ``acc(joint) >= acc(ce_noisy) + JOINT_GAIN_POINTS``."""
    return _clean_accuracy_gap(profile, results, "gradresnet-ce-noisy", "cross-entropy on the same clean and noisy images",
                               JOINT_GAIN_POINTS)


def judge_noise_robustness(profile: str, results: Path) -> dict:
    """Accuracy at ``sigma = NOISY_SIGMA`` of the joint model against the ResNet-18 trained on clean images
    (the paper's comparison) and against the ResNet-18 trained with noise augmentation: supported when it
    beats the first and trails the second by at most ``ACCURACY_POINTS`` (otherwise noise augmentation
    alone does as well)."""
    found, missing = _gather(profile, results, ("gradresnet", "resnet18", "resnet18-noise"))
    if missing:
        return _missing(*missing)
    a, b, n = (accuracy(found[m], NOISY_SIGMA) for m in ("gradresnet", "resnet18", "resnet18-noise"))
    if None in (a, b, n):
        return _missing(f"accuracy at sigma={NOISY_SIGMA} is not in every metrics.json")
    ok = a > b and 100 * (a - n) >= -ACCURACY_POINTS
    return {"evidence": f"accuracy at σ={NOISY_SIGMA:g}: {100 * a:.1f}% (joint), {100 * b:.1f}% (ResNet-18), "
                        f"{100 * n:.1f}% (ResNet-18 with noise augmentation)",
            "verdict": "supported" if ok else "not supported",
            "numbers": {"joint": a, "resnet18": b, "resnet18-noise": n},
            "runs": [m["run"] for m in found.values()]}


def judge_denoising(profile: str, results: Path) -> dict:
    """PSNR of the joint model's ``D(y)`` against the denoise-only UNet of the same profile at
    ``DENOISE_SIGMAS``: supported when it is within ``PSNR_DB`` (or above) at every level."""
    found, missing = _gather(profile, results, ("gradresnet", "unet"))
    if missing:
        return _missing(*missing)
    values = {s: (psnr(found["gradresnet"], s), psnr(found["unet"], s)) for s in DENOISE_SIGMAS}
    if any(None in v for v in values.values()):
        return _missing("D(y) is not measured at every σ of the rule in both metrics.json")
    gaps = {s: a - b for s, (a, b) in values.items()}
    evidence = "D(y) minus UNet: " + ", ".join(f"{g:+.2f} dB at σ={s:g}" for s, g in gaps.items())
    numbers = {f"gap_{s:g}": g for s, g in gaps.items()}
    # the referees' reference denoiser, reported beside the rule's UNet where the profile has one (not judged)
    dncnn, _ = _gather(profile, results, ("dncnn",))
    dncnn_psnr = {s: psnr(dncnn["dncnn"], s) for s in DENOISE_SIGMAS} if dncnn else {}
    if dncnn_psnr and None not in dncnn_psnr.values():
        evidence += "; minus the bias-free DnCNN (not judged): " + ", ".join(
            f"{values[s][0] - d:+.2f} dB" for s, d in dncnn_psnr.items())
        numbers.update({f"dncnn_gap_{s:g}": values[s][0] - d for s, d in dncnn_psnr.items()})
        found["dncnn"] = dncnn["dncnn"]
    return {"evidence": evidence,
            "verdict": "supported" if all(g >= -PSNR_DB for g in gaps.values()) else "not supported",
            "numbers": numbers, "runs": [m["run"] for m in found.values()]}


def judge_conditional(profile: str, results: Path) -> dict:
    """PSNR of ``D(y, true c)`` against ``D(y)`` of the joint model at ``DENOISE_SIGMAS`` (the paper:
    conditioning on the class changes little): supported when they differ by less than
    ``CONDITIONAL_DB`` at every level."""
    found, missing = _gather(profile, results, ("gradresnet",))
    if missing:
        return _missing(*missing)
    m = found["gradresnet"]
    values = {s: (psnr(m, s, "D(y,c)"), psnr(m, s)) for s in DENOISE_SIGMAS}
    if any(None in v for v in values.values()):
        return _missing("D(y, c) is not measured at every σ of the rule")
    diffs = {s: a - b for s, (a, b) in values.items()}
    return {"evidence": "D(y, c) minus D(y): " + ", ".join(f"{d:+.3f} dB at σ={s:g}" for s, d in diffs.items()),
            "verdict": "supported" if all(abs(d) < CONDITIONAL_DB for d in diffs.values()) else "not supported",
            "numbers": {f"diff_{s:g}": d for s, d in diffs.items()},
            "runs": [m["run"] for m in found.values()]}


def low_resolution_verdict(joint: dict, resnet18: dict, unet: dict) -> dict:
    """The rule of ``judge_low_resolution_imagenet`` on three metrics dicts (a run's ``metrics.json``):
    ``{"evidence", "verdict", "numbers"}``, verdict "supported" when the joint model's clean accuracy is at most
    ``ACCURACY_POINTS`` below ResNet-18's and its ``D(y)`` at most ``PSNR_DB`` below the UNet's at every level of
    ``DENOISE_SIGMAS``; "not tested" when a number is missing."""
    a, b = accuracy(joint), accuracy(resnet18)
    values = {s: (psnr(joint, s), psnr(unet, s)) for s in DENOISE_SIGMAS}
    if None in (a, b) or any(None in v for v in values.values()):
        return _missing("clean accuracy or D(y) at every σ of the rule is not in every metrics.json")
    gap, gaps = 100 * (a - b), {s: x - y for s, (x, y) in values.items()}
    ok = gap >= -ACCURACY_POINTS and all(g >= -PSNR_DB for g in gaps.values())
    return {"evidence": f"Tiny ImageNet subset: clean accuracy {100 * a:.1f}% (joint) against {100 * b:.1f}% "
                        f"(ResNet-18), {gap:+.1f} points; D(y) minus UNet: "
                        + ", ".join(f"{g:+.2f} dB at σ={s:g}" for s, g in gaps.items()),
            "verdict": "supported" if ok else "not supported",
            "numbers": {"joint": a, "resnet18": b, **{f"gap_{s:g}": g for s, g in gaps.items()}}}


def judge_low_resolution_imagenet(profile: str, results: Path) -> dict:
    """``low_resolution_verdict`` on the committed Tiny ImageNet runs of the joint model, ResNet-18 and the UNet
    of ``profile``."""
    found, missing = _gather(profile, results, ("gradresnet", "resnet18", "unet"), "tiny-imagenet")
    if missing:
        return _missing(*missing)
    out = low_resolution_verdict(found["gradresnet"], found["resnet18"], found["unet"])
    return {"runs": [m["run"] for m in found.values()], **out}


def judge_efficiency(profile: str, results: Path) -> dict:
    """Accuracy at the end of equal wall-clock budgets (``cdn.experiments.efficiency.race``, committed curves) of the
    joint model against the best JEM run: supported when the joint model's is higher."""

    if sizes_profile(profile, "efficiency") != profile:
        return _missing(f"the race has no settings for the {profile} profile (chapter 05 shows the quick race)")
    curves = {}
    for name in ("joint", "jem", "jem-nologenergy", "jem-nologenergy-lr1e-4"):
        path = results_root(results) / "efficiency" / race_file(profile, name).name
        if path.is_file():
            curves[name] = json.loads(path.read_text())
    if "joint" not in curves or len(curves) < 2:
        return _missing(f"no committed race of the joint model and JEM for the {profile} profile")
    final = {k: v["curve"][-1]["accuracy"] for k, v in curves.items()}
    best_jem = max((k for k in final if k != "joint"), key=final.get)
    budget = experiment_sizes(profile, "efficiency")["budget_s"]
    return {"evidence": f"after {budget:.0f} s of training: {100 * final['joint']:.1f}% (joint, "
                        f"{curves['joint']['steps']} updates) against {100 * final[best_jem]:.1f}% (best JEM run, "
                        f"{best_jem}, {curves[best_jem]['steps']} updates)",
            "verdict": "supported" if final["joint"] > final[best_jem] else "not supported",
            "numbers": {"joint": final["joint"], best_jem: final[best_jem]},
            "runs": [f"results/efficiency/{race_file(profile, k).name}" for k in curves]}


def _robustness_record(profile: str, results: Path, models) -> tuple[dict | None, list[str], list[str]]:
    """``(record, runs, why missing)``: the committed ``results/robustness-<profile>.json`` when every model of
    ``models`` was attacked on the run that is committed for it now (else None and why)."""
    path = robustness_path(profile, results)
    if not path.is_file():
        return None, [], [f"no committed {path.name} (python -m cdn robustness --profile {profile})"]
    record = json.loads(path.read_text())
    found, missing = _gather(profile, results, models)
    if missing:
        return None, [], missing
    attacked = record["meta"]["runs"]
    stale = [f"{path.name} attacked {attacked.get(m, {}).get('run')}, the committed {m} run is {found[m]['run']}"
             for m in models if attacked.get(m, {}).get("run") != found[m]["run"]]
    if stale:
        return None, [], stale
    return record, [found[m]["run"] for m in models] + [f"results/{path.name}"], []


def judge_adversarial(profile: str, results: Path) -> dict:
    """Robust accuracy (PGD then APGD, the committed curves of ``python -m cdn robustness``) of the joint model at the
    budgets ``CHECK_EPS`` (L-inf 2/255, L2 0.25) against ResNet-18 trained on clean images (the paper's comparison)
    and with noise augmentation: supported when at both budgets it beats the first and trails the second by at most
    ``ACCURACY_POINTS``."""
    models = ("gradresnet", "resnet18", "resnet18-noise")
    record, runs, missing = _robustness_record(profile, results, models)
    if record is None:
        return _missing(*missing)
    acc = {}
    for m in models:
        curves = record["curves"][record["meta"]["runs"][m]["label"]]
        for norm, eps in CHECK_EPS.items():
            acc[m, norm] = next(r["accuracy"] for r in curves[norm] if abs(r["eps"] - eps) < 1e-9)
    ok = all(acc["gradresnet", n] > acc["resnet18", n]
             and 100 * (acc["gradresnet", n] - acc["resnet18-noise", n]) >= -ACCURACY_POINTS for n in CHECK_EPS)
    names = {"Linf": "L∞ 2/255", "L2": "L2 0.25"}
    return {"evidence": f"robust accuracy on {record['meta']['test_images']} images, "
                        + "; ".join(f"{names[n]}: {100 * acc['gradresnet', n]:.1f}% (joint), "
                                    f"{100 * acc['resnet18', n]:.1f}% (ResNet-18), "
                                    f"{100 * acc['resnet18-noise', n]:.1f}% (ResNet-18 with noise augmentation)"
                                    for n in CHECK_EPS),
            "verdict": "supported" if ok else "not supported",
            "numbers": {f"{m}_{n}": v for (m, n), v in acc.items()}, "runs": runs}


def judge_difference_of_denoisers(profile: str, results: Path) -> dict:
    """The identity ``grad_y log p(c | y) = (D(y, c) - D(y)) / sigma^2`` on the committed joint model, both sides
    computed in float64 (``python -m cdn robustness``): supported when the largest relative error over the images
    and noise levels is below ``IDENTITY_TOLERANCE``."""
    record, runs, missing = _robustness_record(profile, results, ("gradresnet",))
    if record is None:
        return _missing(*missing)
    errors = record["identity_max_relative_error_float64"]
    worst = max(errors.values())
    return {"evidence": f"largest relative error {worst:.1e} over {record['meta']['identity_images']} images at "
                        f"σ = {', '.join(errors)} (float64)",
            "verdict": "supported" if worst < IDENTITY_TOLERANCE else "not supported",
            "numbers": {"max_relative_error": worst}, "runs": runs}


CLAIMS = (
    Claim("classification", "Classifies CIFAR-10 competitively with a discriminative ResNet-18", "02_classification",
          f"clean accuracy at most {ACCURACY_POINTS:g} points below ResNet-18's, same profile", judge_classification),
    Claim("joint_vs_separate", "Joint training classifies better than separate (cross-entropy only) training",
          "10_gradresnet", f"at least {JOINT_GAIN_POINTS:g} point above cross-entropy on the same clean and noisy images",
          judge_joint_vs_separate),
    Claim("noise_robustness", "Classification degrades less with noise than a discriminative classifier's",
          "02_classification", f"at σ={NOISY_SIGMA:g}: above ResNet-18, and at most {ACCURACY_POINTS:g} points below "
          "ResNet-18 with noise augmentation", judge_noise_robustness),
    Claim("denoising", "Denoises competitively with a denoiser trained for denoising alone", "03_denoising",
          f"D(y) at most {PSNR_DB:g} dB below the UNet at σ = " + ", ".join(f"{s:g}" for s in DENOISE_SIGMAS),
          judge_denoising),
    Claim("conditional", "Conditioning the denoiser on the class changes little", "03_denoising",
          f"PSNR of D(y, c) within {CONDITIONAL_DB:g} dB of D(y)'s at every σ", judge_conditional),
    Claim("low_resolution_imagenet", "Classifies and denoises low-resolution ImageNet as on CIFAR-10",
          "04_tiny_imagenet", f"on the Tiny ImageNet subset: clean accuracy at most {ACCURACY_POINTS:g} points below "
          f"ResNet-18's and D(y) at most {PSNR_DB:g} dB below the UNet's", judge_low_resolution_imagenet),
    Claim("efficiency", "Trains more efficiently than earlier joint models (JEM)", "05_efficiency",
          "higher accuracy than the best JEM run after the same seconds of training", judge_efficiency),
    Claim("adversarial", "Is more robust to adversarial attacks than a discriminative classifier", "11_robustness",
          f"robust accuracy at L∞ 2/255 and L2 0.25 above ResNet-18's, and at most {ACCURACY_POINTS:g} points below "
          "ResNet-18 with noise augmentation", judge_adversarial),
    Claim("difference_of_denoisers", "Its adversarial gradient is a difference of two denoisers", "11_robustness",
          f"∇ log p(c|y) and (D(y, c) − D(y)) / σ² agree to {IDENTITY_TOLERANCE:g} (relative, float64) on the "
          "committed joint model", judge_difference_of_denoisers),
)


def ledger(profile: str, results: str | Path | None = None) -> list[dict]:
    """One row per claim of ``CLAIMS`` for ``profile``: ``{"claim", "key", "profile", "chapter", "rule",
    "evidence", "verdict", "numbers"}``."""
    root = results_root(results)
    return [{"claim": c.text, "key": c.key, "profile": profile, "chapter": c.chapter, "rule": c.rule, "runs": [],
             **c.judge(profile, root)} for c in CLAIMS]


def ledger_frame(profiles=LEDGER_PROFILES, results: str | Path | None = None):
    """The ledger of ``profiles`` as a pandas DataFrame: one row per claim (index: claim, rule) and the columns
    ``"<profile>: evidence"``, ``"<profile>: verdict"`` for each profile in turn."""
    import pandas as pd

    rows = {p: ledger(p, results) for p in profiles}
    return pd.DataFrame([{"claim": c.text, "rule": c.rule,
                          **{f"{p}: {w}": rows[p][i][w] for p in profiles for w in ("evidence", "verdict")}}
                         for i, c in enumerate(CLAIMS)]).set_index(["claim", "rule"])


def ledger_table(profiles=LEDGER_PROFILES, results: str | Path | None = None):
    """``ledger_frame`` styled for a page: text aligned left, captioned "The claims ledger (committed results)"."""
    return (ledger_frame(profiles, results).style.set_properties(**{"text-align": "left"})
            .set_caption("The claims ledger (committed results)"))


def runs_read(profile: str, results: str | Path | None = None) -> list[str]:
    """Every committed run and result file the ledger of ``profile`` reads, sorted."""
    return sorted({r for row in ledger(profile, results) for r in row["runs"]})


def markdown(profiles=LEDGER_PROFILES, results: str | Path | None = None) -> str:
    """The ledger of ``profiles`` as one markdown table (claim, rule, then evidence and verdict per profile)."""
    rows = {p: ledger(p, results) for p in profiles}
    head = "| claim (chapter) | rule | " + " | ".join(f"{p}: evidence | {p}: verdict" for p in profiles) + " |"
    sep = "|" + "---|" * (2 + 2 * len(profiles))
    lines = [head, sep]
    for i, c in enumerate(CLAIMS):
        cells = [f"{c.text} ({c.chapter})", c.rule]
        for p in profiles:
            r = rows[p][i]
            cells += [r["evidence"], f"**{r['verdict']}**"]
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    for p in profiles:
        used = runs_read(p, results)
        lines.append(f"Runs read, {p} profile: " + (", ".join(f"`{r}`" for r in used) if used else "none") + ".")
    return "\n".join(lines) + "\n"


def readme_block(readme: str) -> str:
    """The ledger part of the README's text (between ``README_START`` and ``README_END``)."""
    if README_START not in readme or README_END not in readme:
        raise ValueError(f"the README has no ledger block: expected the lines {README_START} and {README_END}")
    return readme.split(README_START, 1)[1].split(README_END, 1)[0].strip("\n") + "\n"


#: the README's table of the cpu profile's committed runs (``cpu_table``), between these two markers
CPU_TABLE_START, CPU_TABLE_END = "<!-- cpu-ten-epochs -->", "<!-- cpu-ten-epochs:end -->"
CPU_TABLE_MODELS = ("gradresnet", "gradresnet-ce-noisy", "gradresnet-ce", "resnet18", "resnet18-noise",
                    "resnet18-mollify", "unet", "dncnn", "egc")


#: the README's table of the quick profile's committed CIFAR-10 runs (``profile_table("quick")``)
QUICK_TABLE_START, QUICK_TABLE_END = "<!-- quick-two-epochs -->", "<!-- quick-two-epochs:end -->"
QUICK_TABLE_MODELS = ("gradresnet", "gradresnet-ce-noisy", "gradresnet-ce", "resnet18", "resnet18-noise", "unet",
                      "dncnn", "egc")


def cpu_table(results: str | Path | None = None) -> str:
    """``profile_table("cpu", CPU_TABLE_MODELS)``: the README's table of the ``cpu`` profile's committed runs."""
    return profile_table("cpu", CPU_TABLE_MODELS, results)


def profile_table(profile: str, models=QUICK_TABLE_MODELS, results: str | Path | None = None) -> str:
    """The Markdown table of ``profile``'s committed CIFAR-10 runs of ``models`` (those that have one, for the
    profile's own configuration): steps (epochs), training time, accuracy at sigma = 0, 0.1, 0.2, ECE at
    sigma = 0 and the PSNR of ``D(y)`` at 0.05, 0.1, 0.2, each read from the run's ``metrics.json`` ("–" where
    not measured)."""
    results = results_root(results)
    lines = ["| model | steps (epochs) | training | clean acc | acc σ=0.1 | acc σ=0.2 | ECE (σ=0) | D(y) σ=0.05 | σ=0.1 | σ=0.2 |",
             "|---|---|---|---|---|---|---|---|---|---|"]

    def pct(v):
        return "–" if v is None else f"{100 * v:.1f}%"

    for model in models:
        m, _ = committed_metrics(profile, model, results)
        if m is None:
            continue
        clean = [r for r in m.get("classification") or [] if r["sigma"] == 0.0]
        ece = f"{clean[0]['ece']:.3f}" if clean else "–"
        den = [psnr(m, s) for s in (0.05, 0.1, 0.2)]  # None for a classifier, whose metrics hold no D(y)
        lines.append(f"| {model} | {m['steps']:,} ({m['epochs']:.1f}) | {m['train_time_s'] / 60:.0f} min | "
                     f"{pct(accuracy(m, 0.0))} | {pct(accuracy(m, 0.1))} | {pct(accuracy(m, 0.2))} | {ece} | "
                     + " | ".join("–" if v is None else f"{v:.2f}" for v in den) + " |")
    return "\n".join(lines) + "\n"


def _replace_block(text: str, start: str, end: str, new: str) -> str:
    if start not in text or end not in text:
        raise ValueError(f"README.md has no block between {start} and {end}")
    before, rest = text.split(start, 1)
    return f"{before}{start}\n{new}{end}{rest.split(end, 1)[1]}"


#: the README's tables of the joint-model search (3 epochs) and its ten-epoch confirmation: marker -> results file
JOINT_TABLES = {"joint-search": joint_search.RESULTS_FILE, "joint-confirm": joint_search.CONFIRM_FILE}


def joint_table(marker: str, results: str | Path | None = None) -> str:
    """The README's table between ``<!-- marker -->`` and ``<!-- marker:end -->``: ``joint_search.markdown_table``
    of the committed file ``JOINT_TABLES[marker]``."""
    return joint_search.markdown_table(joint_search.load(JOINT_TABLES[marker], results))


def readme_table(readme: str, marker: str) -> str:
    """The text of ``readme`` between ``<!-- marker -->`` and ``<!-- marker:end -->``; ValueError if absent."""
    start, end = f"<!-- {marker} -->", f"<!-- {marker}:end -->"
    if start not in readme or end not in readme:
        raise ValueError(f"README.md has no block between {start} and {end}")
    return readme.split(start, 1)[1].split(end, 1)[0].strip("\n") + "\n"


def write_readme(readme_path: str | Path, results: str | Path | None = None) -> bool:
    """Rewrite the ledger block, the cpu and quick tables and the joint-search tables of ``readme_path`` from the committed
    results; True when any changed."""
    path = Path(readme_path)
    text = path.read_text()
    new = _replace_block(text, README_START, README_END, markdown(results=results))
    new = _replace_block(new, CPU_TABLE_START, CPU_TABLE_END, cpu_table(results))
    new = _replace_block(new, QUICK_TABLE_START, QUICK_TABLE_END, profile_table("quick", results=results))
    for marker in JOINT_TABLES:
        new = _replace_block(new, f"<!-- {marker} -->", f"<!-- {marker}:end -->", joint_table(marker, results))
    if new == text:
        return False
    path.write_text(new)
    return True


__all__ = ["CLAIMS", "CPU_TABLE_MODELS", "Claim", "JOINT_TABLES", "LEDGER_PROFILES", "accuracy", "committed_metrics",
           "cpu_table", "joint_table", "profile_table", "readme_table",
           "ledger", "ledger_frame", "low_resolution_verdict", "markdown", "runs_read", "psnr", "readme_block", "write_readme"]
