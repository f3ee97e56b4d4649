"""The command line: dry run, train, eval, denoise, classify, help and clear errors."""
import json

import numpy as np
import pytest
from PIL import Image

from cdn.cli import build_parser, main


def test_every_command_has_help(capsys):
    for cmd in ("train", "eval", "denoise", "classify", "book", "bench"):
        with pytest.raises(SystemExit) as e:
            main([cmd, "--help"])
        assert e.value.code == 0
    out = capsys.readouterr().out
    assert "--dry-run" in out and "--sigma" in out and "--class" in out


@pytest.mark.parametrize("command", ["joint-search", "variants", "short-budget", "sprint"])
def test_the_experiment_commands_hand_every_argument_to_their_module(command, monkeypatch):
    import importlib

    from cdn.cli import EXPERIMENT_COMMANDS

    module = importlib.import_module(f"cdn.experiments.{EXPERIMENT_COMMANDS[command][0]}")
    seen = []
    monkeypatch.setattr(module, "main", lambda argv: seen.append(argv) or 0)
    args = ["--candidates", "a b", "--out", "x.json", "--set", "lam=3"]
    assert main([command, *args]) == 0 and seen == [args]


def test_every_experiment_command_has_help(capsys):
    for cmd in ("joint-search", "variants", "short-budget", "sprint"):
        with pytest.raises(SystemExit) as e:
            main([cmd, "--help"])
        assert e.value.code == 0
        assert f"cdn {cmd}" in capsys.readouterr().out
    with pytest.raises(SystemExit) as e:
        main(["--help"])
    assert e.value.code == 0 and "joint-search" in capsys.readouterr().out


def test_dry_run_prints_resolved_config(capsys, tmp_path):
    assert main(["train", "--profile", "smoke", "--model", "gradresnet", "--dataset", "synthetic", "--dry-run",
                 "--set", "lam=0.5", "--runs", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    cfg = json.loads(out[: out.rindex("}") + 1])
    assert cfg["lam"] == 0.5 and cfg["profile"] == "smoke"
    assert not any(tmp_path.iterdir())  # nothing trained


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    assert main(["train", "--profile", "smoke", "--model", "gradresnet", "--dataset", "synthetic", "--runs", str(root),
                 "--no-progress", "--device", "cpu"]) == 0
    (run,) = [p for p in root.iterdir() if p.is_dir()]
    return run


def test_train_eval_denoise_classify(trained, tmp_path, capsys):
    assert (trained / "metrics.json").exists()
    assert main(["eval", str(trained), "--device", "cpu"]) == 0
    img = tmp_path / "grating.png"
    Image.fromarray((np.random.default_rng(0).random((20, 24, 3)) * 255).astype("uint8")).save(img)
    assert main(["denoise", str(img), "--run", str(trained), "--sigma", "0.1", "--class", "1", "--out",
                 str(tmp_path / "out"), "--device", "cpu"]) == 0
    noisy = Image.open(tmp_path / "out" / "grating-noisy-0.1.png")
    den = Image.open(tmp_path / "out" / "grating-denoised-0.1.png")
    assert noisy.size == den.size == (24, 20)  # the image's own size, denoised in 16x16 patches (smoke model)
    capsys.readouterr()
    assert main(["classify", str(img), "--run", str(trained), "--device", "cpu", "--top", "2"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    probs = [float(line.split()[-1]) for line in lines]
    assert len(probs) == 2 and probs[0] >= probs[1]


def test_tiled_denoising_equals_the_model_on_each_patch_and_keeps_the_size():
    import torch

    from cdn.cli import denoise_tiled

    y = torch.rand(1, 3, 20, 37)
    calls = []

    def denoise(p):
        calls.append(len(p))
        return p * 2 + p.mean((1, 2, 3), keepdim=True)  # depends on the whole patch: patch boundaries matter

    d = denoise_tiled(denoise, y, 8)
    assert d.shape == y.shape and sum(calls) == 3 * 5
    torch.testing.assert_close(d[..., 8:16, 16:24], denoise(y[..., 8:16, 16:24]))
    edge = torch.nn.functional.pad(y, (0, 3, 0, 4), mode="replicate")[..., 16:24, 32:40]
    torch.testing.assert_close(d[..., 16:20, 32:37], denoise(edge)[..., :4, :5])


def test_clear_errors(trained, tmp_path, capsys):
    bad = tmp_path / "not-an-image.png"
    bad.write_text("hello")
    assert main(["denoise", str(bad), "--run", str(trained), "--sigma", "0.1"]) == 2
    assert "not an image file" in capsys.readouterr().err
    assert main(["denoise", str(tmp_path / "missing.png"), "--run", str(trained), "--sigma", "0.1"]) == 2
    assert "does not exist" in capsys.readouterr().err
    img = tmp_path / "ok.png"
    Image.new("RGB", (8, 8)).save(img)
    assert main(["denoise", str(img), "--run", str(trained), "--sigma", "-1"]) == 2
    assert "--sigma must be >= 0" in capsys.readouterr().err
    assert main(["denoise", str(img), "--run", str(trained), "--sigma", "0.1", "--class", "99"]) == 2
    assert "--class must be in" in capsys.readouterr().err
    assert main(["classify", str(img), "--run", str(tmp_path)]) == 2
    assert "not a finished run" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        build_parser().parse_args(["train", "--profile", "huge"])
