"""The GPU sprint script in smoke mode on the CPU: a few seconds of training, then a folder in the
committed-run format (split float16 weights, metrics, log, RUN.md) that cdn.runs loads back."""
import json

import torch

import cdn.experiments.gpu_sprint
from cdn.committed import verify_committed
from cdn.runs import load_run


def test_smoke_sprint_writes_a_loadable_committed_run(tmp_path, monkeypatch):
    monkeypatch.setattr(cdn.experiments.gpu_sprint, "MAX_FILE_MIB", 0.05)  # force the split the 16 MiB limit makes at width 64
    out = tmp_path / "sprint"
    argv = ["--seconds", "3", "--out", str(out), "--smoke", "--dataset", "synthetic", "--device", "cpu",
            "--runs", str(tmp_path / "runs")]
    assert cdn.experiments.gpu_sprint.main(argv) == 0
    manifest = verify_committed(out)
    shards = manifest["weights"]
    assert len(shards) >= 2 and all(s.startswith("model-") for s in shards)
    assert all((out / s).stat().st_size <= 0.05 * 2**20 for s in shards)
    names = {p.name for p in out.iterdir()}
    assert {"config.json", "state.json", "log.jsonl", "metrics.json", "manifest.json", "RUN.md"} <= names
    config = json.loads((out / "config.json").read_text())
    assert config["time_budget_s"] == 3.0 and config["ema_decay"] and config["tta_flip"]
    state = json.loads((out / "state.json").read_text())
    assert state["finished"] and state["elapsed_s"] >= 3.0
    run = load_run(out, "cpu")
    assert run.committed and all(p.dtype == torch.float32 for p in run.net.parameters())
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["key"]["n"] == 64 and metrics["clean_accuracy"] is not None and metrics["denoising"]
    text = (out / "RUN.md").read_text()
    for part in ("python -m cdn sprint", "commit:", "device: cpu", "images/s:", "wall time:", "clean accuracy"):
        assert part in text, part
    assert str(tmp_path) not in text
