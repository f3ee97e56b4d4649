"""The metric tables the chapters print from their runs' metrics (``cdn.book.chapter.ModelRun``):
accuracy and PSNR against sigma, training summaries and the headline rows of the Results chapter."""
from __future__ import annotations

from ..profiles import model_label
from .chapter import ModelRun




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
    """PSNR rows per curve for ``cdn.book.plots.metric_vs_sigma``: ``{label: [{"sigma", "psnr"}, ...]}``,
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


def headline_format(columns) -> dict[str, str]:
    """Number formats of ``headline_rows`` columns for ``DataFrame.style.format``: accuracies as percentages, ECE
    to three decimals, PSNR to two, training time in whole seconds."""
    fmt = {c: "{:.1%}" for c in columns if "accuracy" in c}
    fmt.update({c: "{:.3f}" for c in columns if "ECE" in c})
    fmt.update({c: "{:.2f}" for c in columns if "PSNR" in c})
    if "train time (s)" in columns:
        fmt["train time (s)"] = "{:.0f}"
    return fmt


def headline_table(rows: list[dict], index=("dataset", "model"), drop=(), sort: bool = False):
    """The rows of ``headline_rows`` as one styled table: indexed by ``index``, without the ``data`` column and the
    columns in ``drop``, formatted by ``headline_format`` ("-" where a value is missing); ``sort`` orders the rows by
    the first index level."""
    import pandas as pd

    frame = pd.DataFrame(rows).set_index(list(index)).drop(columns=["data", *drop])
    if sort:
        frame = frame.sort_index(level=0, sort_remaining=False)
    return frame.style.format(headline_format(frame.columns), na_rep="-")


def run_tables(runs: dict[str, ModelRun], title: str, which=("accuracy", "ece", "psnr", "training")) -> list:
    """The tables of a set of runs, each as ``(caption, styled DataFrame)``, in the order of ``which``: test accuracy
    (%) and expected calibration error against sigma for the classifiers, PSNR (dB) for the denoisers, and the
    training cost (``training_summary``). ``title`` starts each caption (e.g. ``"CIFAR-10"``)."""
    classifiers = {m: r for m, r in runs.items() if r.run.config.objective != "mse"}
    makers = {"accuracy": ("test accuracy (%)", lambda: (classification_table(classifiers) * 100).style.format("{:.1f}")),
              "ece": ("expected calibration error", lambda: classification_table(classifiers, "ece").style.format("{:.3f}")),
              "psnr": ("PSNR (dB)", lambda: denoising_table(runs).style.format("{:.2f}")),
              "training": ("training cost", lambda: training_summary(runs).style.format(TRAINING_SUMMARY_FORMAT,
                                                                                         na_rep="-"))}
    unknown = set(which) - set(makers)
    if unknown:
        raise ValueError(f"unknown tables {sorted(unknown)}; expected some of {', '.join(makers)}")
    return [(f"{title}, {makers[w][0]}", makers[w][1]()) for w in which]


def summary_format(frame) -> dict[str, str]:
    """Number formats of a chapter summary (``cdn.book.chapter.load_summaries``): a float column of fractions in
    [0, 1] whose name speaks of an accuracy, a radius or an epsilon as a percentage, every other float column to
    four significant digits."""
    pct = [c for c in frame.columns if frame[c].dtype.kind == "f" and frame[c].between(0, 1).all()
           and ("acc" in c.lower() or "radius" in c.lower() or "ε" in c)]
    return {c: "{:.1%}" if c in pct else "{:.4g}" for c in frame.columns if frame[c].dtype.kind == "f"}


def summary_table(frame):
    """A chapter summary (``cdn.book.chapter.load_summaries``) styled by ``summary_format`` ("-" where missing)."""
    return frame.style.format(summary_format(frame), na_rep="-")


#: number formats of the ``benchmark_table`` columns
BENCHMARK_FORMAT = {"ms per step": "{:.1f}", "images/s": "{:.0f}", "peak memory (MiB)": "{:.0f}",
                    "÷ CE GradResNet step": "{:.2f}"}


def benchmark_table(result: dict):
    """The rows of a ``python -m benchmarks`` JSON as a table: time per step (ms), images/s, peak memory,
    the time over the cross-entropy GradResNet step, threads, and the start of an error where a case failed."""
    import pandas as pd

    rows = [{"case": r["case"], "ms per step": None if r["seconds_per_step"] is None else 1000 * r["seconds_per_step"],
             "images/s": r["images_per_s"], "peak memory (MiB)": r["peak_memory_mib"],
             "÷ CE GradResNet step": r["time_ratio_to_gradresnet_ce"], "threads": r.get("threads"),
             "note": r.get("error", "")[:60]} for r in result["rows"]]
    return pd.DataFrame(rows).set_index("case")


def benchmark_caption(result: dict) -> str:
    """Where and how a ``python -m benchmarks`` JSON was measured, in one line."""
    return (f"{result['device']} ({result['cpu']}), torch {result['torch']}, {result['threads']} threads by default, "
            f"width {result['width']}, batch {result['batch']}, {result['size']}x{result['size']} images, median of "
            f"{result['reps']}")


#: number formats of the ``roofline_table`` columns
ROOFLINE_FORMAT = {"GFLOP per step": "{:.1f}", "ms per step": "{:.0f}", "images/s": "{:.0f}", "GFLOP/s": "{:.0f}",
                   "fraction of peak": "{:.1%}"}


def roofline_table(roof: dict):
    """The training steps of a ``python -m benchmarks --roofline`` JSON (the matrix products left out): precision,
    second derivatives, GFLOP per step, ms per step, images/s, GFLOP/s and the fraction of the float32 or bf16
    peak (the FLOPs per second over those of a 2048 x 2048 matrix product of the same run)."""
    import pandas as pd

    frac = roof["summary"]["fraction_of_peak"]
    rows = [{"case": r["case"], "precision": r["precision"], "second derivatives": r["second_order"],
             "GFLOP per step": r["gflop_per_step"], "ms per step": 1000 * r["seconds_per_step"],
             "images/s": r["images_per_s"], "GFLOP/s": r["gflops"], "fraction of peak": frac[r["case"]]}
            for r in roof["rows"] if r["objective"] != "matmul"]
    return pd.DataFrame(rows).set_index("case")


def roofline_caption(roof: dict) -> str:
    """Where a roofline was measured, and the peaks it is read against."""
    peak = roof["summary"]["peak_gflops"]
    return (f"{roof['machine']}, torch {roof['torch']}, commit {roof['commit']}, width {roof['width']}, batch "
            f"{roof['batch']}, median of {roof['reps']}; peak (matrix product): {peak['float32']:.0f} GFLOP/s float32, "
            f"{peak['bfloat16']:.0f} GFLOP/s bf16")


#: rows of a roofline that time one step where precision "auto" picks float32 (the default head's joint step)
SAME_STEP = ("gradresnet-joint", "gradresnet-joint-float32", "gradresnet-stage1energy-joint")


def roofline_ratios(roof: dict) -> dict[str, float]:
    """The ratios a roofline is read by: float32 autograd over the step ``cdn train`` runs
    (``speedup``), that step over the cross-entropy step (``joint_over_ce``), the float32 ceiling ``1 / (float32
    autograd's fraction of peak)`` (no float32 step can be faster than autograd by more), and, where measured,
    float32 autograd over the closed forms of the norms only (``speedup_norms_only``) and over all closed forms
    in float32 (``speedup_float32``); the FLOPs of a joint step over a cross-entropy step (``flop_ratio``), the
    spread ``max / min - 1`` of the times of ``SAME_STEP`` rows present (``same_step_spread``: the noise between
    processes, where "auto" picks float32), and the highest fraction of the bf16 peak a bf16 row reaches
    (``bf16_fraction``)."""
    rs = roof["summary"]
    t = {r["case"]: r["seconds_per_step"] for r in roof["rows"]}
    flops = {r["case"]: r.get("gflop_per_step") for r in roof["rows"]}
    out = {"speedup": rs["joint_reference_over_joint"], "joint_over_ce": rs["joint_over_ce"],
           "float32_ceiling": 1 / rs["fraction_of_peak"]["gradresnet-joint-reference"],
           "flop_ratio": flops["gradresnet-joint"] / flops["gradresnet-ce"]}
    same = [t[c] for c in SAME_STEP if c in t]
    if len(same) > 1 and all(r.get("precision") == "float32" for r in roof["rows"] if r["case"] in SAME_STEP):
        out["same_step_spread"] = max(same) / min(same) - 1
    bf16 = [rs["fraction_of_peak"][r["case"]] for r in roof["rows"] if r.get("precision") == "bf16"]
    if bf16:
        out["bf16_fraction"] = max(bf16)
    if "gradresnet-joint-float32-norms-only" in t:
        out["speedup_norms_only"] = t["gradresnet-joint-reference"] / t["gradresnet-joint-float32-norms-only"]
        out["speedup_float32"] = t["gradresnet-joint-reference"] / t["gradresnet-joint-float32"]
    return out


def operator_shares(profile_part: dict) -> dict[str, float]:
    """A profiled step (one entry of a ``python -m benchmarks.profile`` file) split by operator kind, as shares of
    its total self time: ``"convolutions"`` (forward and backward kernels), ``"elementwise"`` (``mul``, ``add``,
    ``sub``, ``div``, ``exp``, GELU and their in-place forms), ``"compiled"`` (fused graphs) and ``"rest"``."""
    kinds = {"convolutions": 0.0, "elementwise": 0.0, "compiled": 0.0}
    elementwise = {"mul", "mul_", "add", "add_", "sub", "sub_", "div", "div_", "exp", "gelu", "gelu_backward"}
    for row in profile_part["rows"]:
        name = row["operator"]
        if "convolution" in name:
            kinds["convolutions"] += row["share"]
        elif name.removeprefix("aten::") in elementwise:
            kinds["elementwise"] += row["share"]
        elif "CompiledFxGraph" in name:
            kinds["compiled"] += row["share"]
    kinds["rest"] = 1.0 - sum(kinds.values())
    return kinds


def convolution_floor(profile: dict) -> dict | None:
    """What the convolution kernels leave to gain, from a ``python -m benchmarks.profile`` file with ``step_ms``:
    ``reference_ms`` (the float32 autograd step, unprofiled), ``train_step_ms`` (the step ``cdn train`` runs),
    ``convolution_ms`` (the self time of that step's convolution kernels, profiled) and ``ceiling`` =
    ``reference_ms / convolution_ms``, the speed-up over autograd of a step whose every other operation took no
    time at all, with these convolution kernels. None for an older file without ``step_ms``."""
    fast, ref = profile["train_step"], profile["reference"]
    if "step_ms" not in fast or "step_ms" not in ref:
        return None
    return {"reference_ms": ref["step_ms"], "train_step_ms": fast["step_ms"], "convolution_ms": fast["convolution_ms"],
            "speedup": ref["step_ms"] / fast["step_ms"], "ceiling": ref["step_ms"] / fast["convolution_ms"]}


def compile_table(bench: dict):
    """``torch.compile`` against eager, from a ``python -m benchmarks`` file: one row per step that has both an eager
    and a ``-compiled`` case, with the eager and compiled milliseconds per step (None where compiling failed), the
    seconds of the first compiled step and the error."""
    import pandas as pd

    rows = {r["case"]: r for r in bench["rows"]}
    out = []
    for case in ("gradresnet-ce", "gradresnet-joint", "gradresnet-joint-func"):
        r, rc = rows.get(case), rows.get(case + "-compiled")
        if r is None or rc is None:
            continue
        out.append({"step": case, "eager ms": 1000 * r["seconds_per_step"],
                    "compiled ms": None if rc.get("error") else 1000 * rc["seconds_per_step"],
                    "first compiled step (s)": rc["first_step_s"], "error": rc.get("error", "")})
    return pd.DataFrame(out, columns=["step", "eager ms", "compiled ms", "first compiled step (s)", "error"]).set_index("step")


def sweep_per_image(sweep: dict):
    """Milliseconds per image of every (width, batch) of a ``python -m benchmarks --sweep`` file, one column per
    case (the timed rows only)."""
    import pandas as pd

    rows = [{"width": r["width"], "batch": r["batch"], "case": r["case"], "ms per image": 1000 * r["seconds_per_step"] / r["batch"]}
            for r in sweep["rows"] if r.get("seconds_per_step")]
    return pd.DataFrame(rows).pivot_table(index=["width", "batch"], columns="case", values="ms per image")
