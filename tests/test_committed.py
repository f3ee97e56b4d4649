"""Committed runs (results/<profile>-<dataset>/<model>/): exported in float16 with a sha256 manifest and
no path of this machine, reused by get_or_train without training, refused when a byte changed, ignored
with --retrain."""
import json
import re

import pytest
import torch
from safetensors.torch import load_file

import cdn.committed as committed_mod
import cdn.runs as runs_mod
from cdn.checkpoint import CheckpointError
from cdn.cli import main
from cdn.data import REPO_ROOT
from cdn.profiles import get_config
from cdn.committed import find_committed, verify_committed
from cdn.runs import export_run, get_or_train, load_run, resolve_data, runs_root


def _config(**kw):
    """The smoke profile's own GradResNet on synthetic data (width 4, 8 steps), with ``kw`` changed."""
    return get_config("smoke", "gradresnet", "synthetic", **kw)


@pytest.fixture
def exported(tmp_path):
    """A finished tiny run under tmp/runs and its export under tmp/results/smoke-synthetic/gradresnet."""
    config = _config()
    data = resolve_data(config)
    run = get_or_train(config, data=data, device="cpu", progress=False)
    run.metrics(data.test)
    dest = export_run(run.dir, tmp_path / "results" / "smoke-synthetic" / "gradresnet")
    return config, data, run, dest


def test_another_configuration_of_a_model_is_committed_beside_it(exported, tmp_path, monkeypatch):
    """The profile's own configuration lives in <model>/, any other (an exercise's, an ablation's) in
    <model>-<hash>/, so both are committed and each is found by its hash."""
    config, data, run, dest = exported
    results = dest.parent.parent
    assert committed_mod.committed_dir(config, results) == results / "smoke-synthetic" / "gradresnet"
    short = _config(steps=4, checkpoint_every=2)
    folder = committed_mod.committed_dir(short, results)
    assert folder == results / "smoke-synthetic" / f"gradresnet-{short.key()}"
    trained = get_or_train(short, data=data, root=tmp_path / "r", device="cpu", progress=False, results=results)
    assert not trained.committed
    trained.metrics(data.test)
    monkeypatch.setenv("CDN_RESULTS", str(results))
    assert export_run(trained.dir) == folder  # the default destination is committed_dir
    monkeypatch.setattr(runs_mod, "train", _no_training)
    assert find_committed(short, results) == folder and find_committed(config, results) == dest
    assert get_or_train(short, data=data, root=tmp_path / "r2", device="cpu", results=results).dir == folder
    run_md = (results / "smoke-synthetic" / "RUN.md").read_text()
    assert f"| gradresnet-{short.key()} |" in run_md and "--set checkpoint_every=2 steps=4" in run_md


def _no_training(*args, **kwargs):
    raise AssertionError("train() was called although a committed run matches")


def test_export_writes_the_committed_format(exported):
    config, data, run, dest = exported
    assert dest == committed_mod.committed_dir(config, dest.parent.parent)
    names = {p.name for p in dest.iterdir()}
    assert names == {"config.json", "state.json", "log.jsonl", "metrics.json", "model.safetensors", "manifest.json"}
    manifest = verify_committed(dest)
    assert manifest["run"] == config.run_name() and set(manifest["files"]) == names - {"manifest.json"}
    weights = load_file(str(dest / "model.safetensors"))
    assert all(v.dtype == torch.float16 for v in weights.values() if v.is_floating_point())
    state = json.loads((dest / "state.json").read_text())
    assert state["data_record"]["dataset"] == "synthetic" and state["finished"]
    run_md = (dest.parent / "RUN.md").read_text()
    assert "| gradresnet |" in run_md and "cdn train --profile smoke --model gradresnet --dataset synthetic" in run_md


def test_exported_files_hold_no_absolute_path(exported, tmp_path):
    config, data, run, dest = exported
    forbidden = [str(tmp_path), str(REPO_ROOT), str(runs_root()), str(run.dir)]
    path_like = re.compile(r"(?<![\w.])/(?:home|root|work|tmp|Users|var|mnt|data)/")
    for f in dest.parent.rglob("*"):
        if f.suffix in (".json", ".jsonl", ".md"):
            text = f.read_text()
            assert not any(p in text for p in forbidden), f
            assert not path_like.search(text), (f, path_like.search(text))
    # the guard itself: a path of this machine in a file is refused
    (tmp_path / "leak").mkdir()
    (tmp_path / "leak" / "state.json").write_text(json.dumps({"data": str(run.dir)}))
    with pytest.raises(ValueError, match="absolute path"):
        committed_mod.check_portable(tmp_path / "leak", [run.dir])


def test_committed_run_is_used_without_training(exported, tmp_path, monkeypatch):
    config, data, run, dest = exported
    results = dest.parent.parent
    fresh_root = tmp_path / "elsewhere"
    monkeypatch.setattr(runs_mod, "train", _no_training)
    used = get_or_train(config, data=data, root=fresh_root, device="cpu", results=results)
    assert used.committed and used.dir == dest and used.name == config.run_name()
    assert not (fresh_root / config.run_name()).exists()
    # its cached metrics are reused as they are (same key) and nothing is written anywhere
    before = {p.name: p.read_bytes() for p in dest.iterdir()}
    assert used.metrics(data.test) == json.loads((dest / "metrics.json").read_text())
    assert not fresh_root.exists()
    # other metrics are computed and written under the runs root, never into results/
    other = used.metrics(data.test, sigmas=(0.0, 0.3))
    assert other["key"]["sigmas"] == [0.0, 0.3]
    assert (fresh_root / "committed" / config.run_name() / "metrics.json").is_file()
    assert {p.name: p.read_bytes() for p in dest.iterdir()} == before
    verify_committed(dest)
    # and read back from there
    assert used.metrics(data.test, sigmas=(0.0, 0.3)) == other


def test_cli_train_uses_the_committed_run(exported, tmp_path, monkeypatch, capsys):
    config, data, run, dest = exported
    monkeypatch.setenv("CDN_RESULTS", str(dest.parent.parent))
    monkeypatch.setattr("cdn.train.train", _no_training)
    args = ["train", "--profile", "smoke", "--dataset", "synthetic", "--device", "cpu", "--no-progress",
            "--runs", str(tmp_path / "cli-runs")]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert f"using the committed run {dest}" in out and "sigma=0" in out
    assert not (tmp_path / "cli-runs" / config.run_name()).exists()


@pytest.mark.parametrize("name", ["model.safetensors", "metrics.json", "config.json"])
def test_a_changed_byte_is_a_clear_error_never_a_retrain(exported, tmp_path, monkeypatch, name):
    config, data, run, dest = exported
    raw = bytearray((dest / name).read_bytes())
    raw[len(raw) // 2] ^= 0x01
    (dest / name).write_bytes(bytes(raw))
    monkeypatch.setattr(runs_mod, "train", _no_training)
    with pytest.raises(CheckpointError, match=f"{name} is corrupted"):
        get_or_train(config, data=data, root=tmp_path / "elsewhere", device="cpu", results=dest.parent.parent)
    with pytest.raises(CheckpointError, match="corrupted"):
        load_run(dest, "cpu")
    (dest / name).unlink()
    with pytest.raises(FileNotFoundError, match=f"{name} is missing"):
        find_committed(config, dest.parent.parent)


def test_retrain_ignores_the_committed_run(exported, tmp_path, monkeypatch):
    config, data, run, dest = exported
    calls = []
    real_train = runs_mod.train

    def counting_train(*args, **kwargs):
        calls.append(args[1])
        return real_train(*args, **kwargs)

    monkeypatch.setattr(runs_mod, "train", counting_train)
    root = tmp_path / "retrain-runs"
    again = get_or_train(config, data=data, root=root, device="cpu", progress=False, results=dest.parent.parent,
                         retrain=True)
    assert calls == [root / config.run_name()] and not again.committed and again.dir == root / config.run_name()
    # $CDN_RETRAIN (set by `cdn book --retrain` for the chapters) does the same
    monkeypatch.setenv("CDN_RETRAIN", "1")
    root2 = tmp_path / "retrain-env"
    assert not get_or_train(config, data=data, root=root2, device="cpu", progress=False,
                            results=dest.parent.parent).committed
    assert calls[-1] == root2 / config.run_name()


def test_a_committed_run_of_another_configuration_is_not_used(exported, tmp_path, monkeypatch):
    config, data, run, dest = exported
    other = _config(lam=0.5)  # same profile, dataset and model folder, another hash
    assert find_committed(other, dest.parent.parent) is None
    trained = get_or_train(other, data=data, root=tmp_path / "r", device="cpu", progress=False,
                           results=dest.parent.parent)
    assert not trained.committed


def test_half_precision_round_trip_keeps_the_logits(exported):
    config, data, run, dest = exported
    committed = load_run(dest, "cpu")
    assert all(p.dtype == torch.float32 for p in committed.net.parameters())
    x = data.test.to_float(slice(0, 16))
    with torch.no_grad():
        a, b = run.net(x), committed.net(x)
    assert not torch.equal(a, b)  # the weights were rounded ...
    scale = a.abs().max().item()
    assert (a - b).abs().max().item() <= 5e-3 * max(scale, 1.0)  # ... to float16 precision only
    ref = {k: v.half().float() for k, v in run.net.state_dict().items()}
    for k, v in committed.net.state_dict().items():
        assert torch.equal(v, ref[k]), k


def test_split_weights_load_and_an_incomplete_set_is_refused(exported, tmp_path):
    config, data, run, dest = exported
    split = export_run(run.dir, tmp_path / "split" / "gradresnet", max_file_mib=0.05)
    shards = sorted(p.name for p in split.glob("model-*-of-*.safetensors"))
    assert len(shards) >= 2 and not (split / "model.safetensors").exists()
    assert all((split / s).stat().st_size <= 0.05 * 2**20 for s in shards)
    loaded = load_run(split, "cpu")
    whole = load_run(dest, "cpu")
    for k, v in whole.net.state_dict().items():
        assert torch.equal(v, loaded.net.state_dict()[k]), k
    (split / shards[-1]).unlink()
    with pytest.raises(FileNotFoundError, match="missing"):
        load_run(split, "cpu")


def test_export_refuses_unfinished_runs_and_existing_destinations(exported, tmp_path):
    config, data, run, dest = exported
    with pytest.raises(ValueError, match="exists already"):
        export_run(run.dir, dest)
    with pytest.raises(FileNotFoundError, match="not a finished run"):
        export_run(tmp_path / "nothing", tmp_path / "out")


def test_cdn_book_retrain_reaches_the_chapters(monkeypatch):
    """``cdn book --retrain`` sets $CDN_RETRAIN for the chapters' kernels (which inherit the environment)
    during the build only."""
    import os

    import cdn.book.build

    seen = []
    monkeypatch.delenv("CDN_RETRAIN", raising=False)
    monkeypatch.setattr(cdn.book.build, "build_book", lambda *a, **k: seen.append(os.environ.get("CDN_RETRAIN")) or "html")
    assert main(["book", "--profile", "cpu", "--retrain"]) == 0
    assert main(["book", "--profile", "cpu"]) == 0
    assert seen == ["1", None] and "CDN_RETRAIN" not in os.environ


def test_committed_runs_show_their_recorded_metrics_without_data(exported, tmp_path):
    from cdn.book import chapter, tables

    config, data, run, dest = exported
    results = dest.parent.parent
    got = chapter.committed_runs("smoke", "synthetic", ["gradresnet", "unet"], results)
    assert list(got) == ["gradresnet"]  # no committed unet: left out
    recorded = json.loads((dest / "metrics.json").read_text())
    assert got["gradresnet"].metrics() == recorded
    row = tables.headline_rows(got, "synthetic")[0]
    assert row["clean accuracy"] == recorded["clean_accuracy"] and row["profile"] == "smoke"
    assert str(REPO_ROOT) not in row["data"] and str(tmp_path) not in row["data"]  # named, not located
    assert chapter.committed_runs("cpu", "synthetic", ["gradresnet"], results) == {}
    weights = dest / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-1] + b"\0")
    with pytest.raises(CheckpointError, match="corrupted or was changed"):
        chapter.committed_runs("smoke", "synthetic", ["gradresnet"], results)


def test_run_tables_show_every_table_of_a_committed_run(exported, tmp_path):
    """``cdn.book.tables.run_tables``: the Results chapter's tables of a set of runs, captioned, in the order asked,
    with the numbers of the committed metrics; an unknown table is a clear error."""
    from cdn.book import chapter, tables

    _, _, _, dest = exported
    got = chapter.committed_runs("smoke", "synthetic", ["gradresnet"], tmp_path / "results")
    recorded = json.loads((dest / "metrics.json").read_text())
    shown = tables.run_tables(got, "Synthetic")
    assert [c for c, _ in shown] == ["Synthetic, test accuracy (%)", "Synthetic, expected calibration error",
                                     "Synthetic, PSNR (dB)", "Synthetic, training cost"]
    accuracy = shown[0][1].data
    clean = next(r for r in recorded["classification"] if r["sigma"] == 0.0)
    assert accuracy.loc[got["gradresnet"].label, "σ=0"] == pytest.approx(100 * clean["accuracy"])
    assert [c for c, _ in tables.run_tables(got, "S", which=("psnr",))] == ["S, PSNR (dB)"]
    with pytest.raises(ValueError, match="unknown tables"):
        tables.run_tables(got, "S", which=("speed",))
    fmt = tables.headline_format(["clean accuracy", "clean ECE", "PSNR D(y) σ=0.1 (dB)", "train time (s)"])
    assert fmt == {"clean accuracy": "{:.1%}", "clean ECE": "{:.3f}", "PSNR D(y) σ=0.1 (dB)": "{:.2f}",
                   "train time (s)": "{:.0f}"}
    rows = tables.headline_rows(got, "Synthetic")
    shown = tables.headline_table(rows + [dict(rows[0], dataset="Another", model="M")], sort=True)
    assert list(shown.data.index.get_level_values(0)) == ["Another"] + ["Synthetic"] * len(rows)
    assert "data" not in shown.data.columns and "profile" in shown.data.columns
    by_profile = tables.headline_table(rows, index=("model", "profile"), drop=("dataset",)).data
    assert list(by_profile.columns) == [c for c in rows[0] if c not in ("model", "profile", "dataset", "data")]
    assert "-" in tables.headline_table([dict(rows[0], **{"clean ECE": None})]).to_html()


def test_summary_format_shows_fractions_of_accuracy_as_percentages():
    import pandas as pd

    from cdn.book import tables

    frame = pd.DataFrame({"robust acc": [0.25, 0.5], "radius 0.5": [0.1, 0.0], "ms": [12.5, 3.25], "n": [1, 2],
                          "loss": [0.2, 0.3]})
    assert tables.summary_format(frame) == {"robust acc": "{:.1%}", "radius 0.5": "{:.1%}", "ms": "{:.4g}",
                                            "loss": "{:.4g}"}
    assert "25.0%" in tables.summary_table(frame).to_html()
