"""The claims ledger (cdn.book.claims): its rules on committed runs whose numbers are known by construction,
and the README's table against the committed results of this repository."""
from __future__ import annotations

import json

import pytest

from cdn.book import claims
from cdn.data import REPO_ROOT
from cdn.profiles import get_config
from cdn.checkpoint import sha256_file
from cdn.committed import MANIFEST, MANIFEST_FORMAT


def _commit(results, model, metrics, profile="quick", dataset="cifar10", **changes):
    """A committed run of ``get_config(profile, model, dataset, **changes)`` holding only config.json and ``metrics``."""
    config = get_config(profile, model, dataset, **changes)
    default = not changes
    run_dir = results / f"{profile}-{dataset}" / (model if default else f"{model}-{config.key()}")
    run_dir.mkdir(parents=True)
    (run_dir / "config.json").write_text(json.dumps(config.to_dict()))
    (run_dir / "metrics.json").write_text(json.dumps(metrics))
    files = {n: sha256_file(run_dir / n) for n in ("config.json", "metrics.json")}
    (run_dir / MANIFEST).write_text(json.dumps({"format": MANIFEST_FORMAT, "run": config.run_name(), "files": files}))
    return config.run_name()


def _classifier(acc0, acc02=None):
    rows = [{"sigma": 0.0, "accuracy": acc0}] + ([{"sigma": 0.2, "accuracy": acc02}] if acc02 is not None else [])
    return {"classification": rows}


def _denoiser(psnrs, conditional=None):
    return {"denoising": [{"sigma": s, "noisy": 0.0, "D(y)": p, **({"D(y,c)": p + conditional} if conditional is not None else {})}
                          for s, p in zip(claims.DENOISE_SIGMAS, psnrs)]}


def _row(results, key, profile="quick"):
    return next(r for r in claims.ledger(profile, results) if r["key"] == key)


def test_classification_is_supported_within_the_stated_points_only(tmp_path):
    _commit(tmp_path, "gradresnet", _classifier(0.80))
    _commit(tmp_path, "resnet18", _classifier(0.81))
    row = _row(tmp_path, "classification")
    assert row["verdict"] == "supported" and row["numbers"] == {"joint": 0.80, "resnet18": 0.81}
    assert row["runs"] == [get_config("quick", m).run_name() for m in ("gradresnet", "resnet18")]
    other = tmp_path / "other"
    _commit(other, "gradresnet", _classifier(0.78))
    _commit(other, "resnet18", _classifier(0.81))
    row = _row(other, "classification")
    assert row["verdict"] == "not supported" and "-3.0 points" in row["evidence"]


def test_a_missing_or_stale_run_is_not_tested_and_named(tmp_path):
    _commit(tmp_path, "gradresnet", _classifier(0.80))
    row = _row(tmp_path, "classification")
    assert row["verdict"] == "not tested" and get_config("quick", "resnet18").run_name() in row["evidence"]
    # a run of another configuration of the model (here: fewer steps) is not evidence for the profile's own
    _commit(tmp_path, "resnet18", _classifier(0.50), steps=10)
    assert _row(tmp_path, "classification")["verdict"] == "not tested"


def test_joint_against_separate_needs_the_stated_gain(tmp_path):
    _commit(tmp_path, "gradresnet", _classifier(0.755))
    _commit(tmp_path, "gradresnet-ce-noisy", _classifier(0.756))
    assert _row(tmp_path, "joint_vs_separate")["verdict"] == "not supported"
    other = tmp_path / "other"
    _commit(other, "gradresnet", _classifier(0.77))
    _commit(other, "gradresnet-ce-noisy", _classifier(0.755))
    assert _row(other, "joint_vs_separate")["verdict"] == "supported"


def test_noise_robustness_must_also_hold_against_noise_augmentation(tmp_path):
    _commit(tmp_path, "gradresnet", _classifier(0.75, 0.68))
    _commit(tmp_path, "resnet18", _classifier(0.83, 0.27))
    _commit(tmp_path, "resnet18-noise", _classifier(0.76, 0.72))
    row = _row(tmp_path, "noise_robustness")
    assert row["verdict"] == "not supported"  # above ResNet-18, but 4 points below the noise-augmented one
    assert row["numbers"] == {"joint": 0.68, "resnet18": 0.27, "resnet18-noise": 0.72}


def test_denoising_and_conditional_rules(tmp_path):
    _commit(tmp_path, "gradresnet", _denoiser((31.4, 26.6, 21.9), conditional=0.004))
    _commit(tmp_path, "unet", _denoiser((31.8, 27.0, 22.3)))
    row = _row(tmp_path, "denoising")
    assert row["verdict"] == "supported" and row["numbers"]["gap_0.1"] == pytest.approx(-0.4)
    assert _row(tmp_path, "conditional")["verdict"] == "supported"
    other = tmp_path / "other"
    _commit(other, "gradresnet", _denoiser((30.7, 26.1, 21.7), conditional=0.2))
    _commit(other, "unet", _denoiser((31.8, 27.0, 22.3)))
    assert _row(other, "denoising")["verdict"] == "not supported"
    assert _row(other, "conditional")["verdict"] == "not supported"
    # the referees' DnCNN is reported beside the UNet where committed, and does not change the verdict
    assert "dncnn_gap_0.1" not in row["numbers"] and "DnCNN" not in row["evidence"]
    _commit(tmp_path, "dncnn", _denoiser((32.0, 28.0, 24.0)))
    with_dncnn = _row(tmp_path, "denoising")
    assert with_dncnn["verdict"] == "supported" and with_dncnn["numbers"]["dncnn_gap_0.1"] == pytest.approx(-1.4)
    assert "DnCNN (not judged): -0.60 dB, -1.40 dB, -2.10 dB" in with_dncnn["evidence"]


def test_low_resolution_imagenet_needs_both_the_accuracy_and_the_denoising_rule(tmp_path):
    for root, acc, gap in ((tmp_path / "a", 0.44, -0.4), (tmp_path / "b", 0.40, -0.4), (tmp_path / "c", 0.44, -0.6)):
        _commit(root, "gradresnet", {**_classifier(acc), **_denoiser([30 + gap, 25 + gap, 20 + gap])}, dataset="tiny-imagenet")
        _commit(root, "resnet18", _classifier(0.45), dataset="tiny-imagenet")
        _commit(root, "unet", _denoiser([30, 25, 20]), dataset="tiny-imagenet")
    assert _row(tmp_path / "a", "low_resolution_imagenet")["verdict"] == "supported"
    row = _row(tmp_path / "b", "low_resolution_imagenet")
    assert row["verdict"] == "not supported" and "-5.0 points" in row["evidence"]
    assert _row(tmp_path / "c", "low_resolution_imagenet")["verdict"] == "not supported"
    assert _row(tmp_path / "a", "low_resolution_imagenet", "cpu")["verdict"] == "not tested"  # no cpu Tiny ImageNet


def _robustness(results, accs, identity=1e-14, runs=None, profile="quick"):
    """A committed robustness-<profile>.json whose curves give ``accs[model] = (acc at L-inf 2/255, acc at L2 0.25)``."""
    from cdn.profiles import model_label

    runs = runs or {m: get_config(profile, m).run_name() for m in accs}
    curve = lambda a, eps: [{"eps": 0.0, "accuracy": 0.9}, {"eps": eps, "accuracy": a}]  # noqa: E731
    record = {"meta": {"test_images": 200, "identity_images": 16,
                       "runs": {m: {"run": runs[m], "label": model_label(m)} for m in accs}},
              "curves": {model_label(m): {"Linf": curve(a, 2 / 255), "L2": curve(b, 0.25)} for m, (a, b) in accs.items()},
              "identity_max_relative_error_float64": {"0.1": identity, "0.2": identity / 10}}
    results.mkdir(parents=True, exist_ok=True)
    (results / f"robustness-{profile}.json").write_text(json.dumps(record))


def test_adversarial_robustness_must_beat_resnet18_and_stay_near_noise_augmentation(tmp_path):
    for root in (tmp_path / "a", tmp_path / "b", tmp_path / "c"):
        for m in ("gradresnet", "resnet18", "resnet18-noise"):
            _commit(root, m, _classifier(0.8))
    _robustness(tmp_path / "a", {"gradresnet": (0.40, 0.45), "resnet18": (0.20, 0.27), "resnet18-noise": (0.41, 0.46)})
    row = _row(tmp_path / "a", "adversarial")
    assert row["verdict"] == "supported" and row["numbers"]["gradresnet_Linf"] == 0.40
    assert "results/robustness-quick.json" in row["runs"]
    # 8 points below noise augmentation at L2 0.25
    _robustness(tmp_path / "b", {"gradresnet": (0.40, 0.44), "resnet18": (0.20, 0.27), "resnet18-noise": (0.41, 0.52)})
    assert _row(tmp_path / "b", "adversarial")["verdict"] == "not supported"
    # attacked on another run than the committed one: stale, so not evidence
    stale = {m: get_config("quick", m).run_name() for m in ("gradresnet", "resnet18", "resnet18-noise")}
    stale["gradresnet"] = "cifar10-gradresnet-quick-0000000000"
    _robustness(tmp_path / "c", {"gradresnet": (0.40, 0.45), "resnet18": (0.20, 0.27), "resnet18-noise": (0.41, 0.46)},
                runs=stale)
    row = _row(tmp_path / "c", "adversarial")
    assert row["verdict"] == "not tested" and "0000000000" in row["evidence"]
    assert _row(tmp_path / "a", "adversarial", "cpu")["verdict"] == "not tested"  # no robustness-cpu.json there


def test_difference_of_denoisers_needs_the_identity_to_hold_in_float64(tmp_path):
    accs = {"gradresnet": (0.4, 0.4)}
    for root, err in ((tmp_path / "a", 3e-15), (tmp_path / "b", 1e-5)):
        _commit(root, "gradresnet", _classifier(0.8))
        _robustness(root, accs, identity=err)
    row = _row(tmp_path / "a", "difference_of_denoisers")
    assert row["verdict"] == "supported" and row["numbers"]["max_relative_error"] == 3e-15
    assert _row(tmp_path / "b", "difference_of_denoisers")["verdict"] == "not supported"


def test_the_readme_ledger_is_the_one_the_committed_results_give():
    """Fails when a committed result changed and the README was not regenerated (python -m cdn claims --readme)."""
    readme = (REPO_ROOT / "README.md").read_text()
    assert claims.readme_block(readme) == claims.markdown(), "run: python -m cdn claims --readme"


def test_the_readme_cpu_and_quick_tables_are_the_ones_the_committed_results_give():
    """The README's cpu and quick tables are printed from the committed metrics (python -m cdn claims --readme)."""
    readme = (REPO_ROOT / "README.md").read_text()
    block = readme.split(claims.CPU_TABLE_START, 1)[1].split(claims.CPU_TABLE_END, 1)[0]
    assert block.strip() == claims.cpu_table().strip(), "run: python -m cdn claims --readme"
    block = readme.split(claims.QUICK_TABLE_START, 1)[1].split(claims.QUICK_TABLE_END, 1)[0]
    assert block.strip() == claims.profile_table("quick").strip(), "run: python -m cdn claims --readme"
    assert "| gradresnet |" in block


def test_the_readme_joint_search_tables_are_the_ones_the_committed_files_give():
    """The README's tables of the joint-model search and its confirmation are written from results/joint-*.json."""
    readme = (REPO_ROOT / "README.md").read_text()
    for marker in claims.JOINT_TABLES:
        assert claims.readme_table(readme, marker) == claims.joint_table(marker), "run: python -m cdn claims --readme"
    assert "| **" in claims.readme_table(readme, "joint-search")  # the rule's choice is marked


def test_the_joint_search_table_reads_each_row_and_marks_the_choice(tmp_path):
    from cdn.experiments import joint_search

    row = {"candidate": "a", "model": "gradresnet-stage1energy", "overrides": {}, "epochs": 3.0, "clean_accuracy": 0.5,
           "accuracy_sigma_0.2": 0.4, "network_psnr_0.1": 25.0, "grad_ce": 2.0, "grad_dsm": 0.5, "train_time_s": 600,
           "denoising": [{"sigma": s, "D(y)": 20 + 10 * s, "noisy": 20.0, "energy alone": 25.0, "features alone": 20.0,
                          "stem energy alone": 21.0, "D(y,c)": 25.01, "D(y,wrong c)": 25.0} for s in (0.05, 0.1, 0.2)]}
    ref = {"candidate": "b", "model": "unet", "overrides": {}, "epochs": 3.0, "train_time_s": 60,
           "denoising_full_test": [{"sigma": s, "D(y)": 30.0} for s in (0.05, 0.1, 0.2)]}
    (tmp_path / "joint-search.json").write_text(json.dumps({"meta": {}, "rows": [row, ref], "chosen": "a"}))
    lines = claims.joint_table("joint-search", tmp_path).splitlines()
    assert lines[2].startswith("| **a** | 16 | 50.0% | 40.0% | 20.50 | 21.00 | 22.00 | 25.00 | +4.00 | +0.010 | 2.0 / 0.50 | 10 min |")
    assert lines[3].startswith("| b | 16 | – | – | 30.00 | 30.00 | 30.00 | – | – | – | – | 1 min |")
    with pytest.raises(ValueError, match="joint-confirm"):
        claims.readme_table("no tables here", "joint-confirm")


def test_a_readme_without_the_block_is_a_clear_error():
    with pytest.raises(ValueError, match="claims:start"):
        claims.readme_block("# no ledger here\n")


def test_ledger_frame_holds_each_profiles_evidence_and_verdict(tmp_path):
    _commit(tmp_path, "gradresnet", _classifier(0.80))
    _commit(tmp_path, "resnet18", _classifier(0.81))
    frame = claims.ledger_frame(results=tmp_path)
    assert list(frame.columns) == [f"{p}: {w}" for p in claims.LEDGER_PROFILES for w in ("evidence", "verdict")]
    assert len(frame) == len(claims.CLAIMS)
    row = frame.loc[(claims.CLAIMS[0].text, claims.CLAIMS[0].rule)]
    assert row["quick: verdict"] == "supported" and row["cpu: verdict"] == "not tested"
    assert claims.runs_read("quick", tmp_path) == sorted(get_config("quick", m).run_name() for m in ("gradresnet", "resnet18"))
    styled = claims.ledger_table(results=tmp_path)
    assert styled.caption == "The claims ledger (committed results)" and styled.data.equals(frame)
