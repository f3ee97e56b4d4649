"""Which part of a joint model denoises: the score split along the logits' parts
(``JointModel.score_parts``), the denoisers of each part (``cdn.evaluate.decomposed_denoisers``), the
size of each part (``score_part_sizes``) and each loss term's parameter gradient
(``JointLoss.gradient_norms``), checked on small nets where the answer is known by construction."""
import pytest
import torch

from cdn.data import ImageDataset
from cdn.evaluate import decomposed_denoisers, psnr_vs_sigma, score_part_sizes
from cdn.joint import JointModel
from cdn.losses import JointLoss
from cdn.nets import GradResNet


def _model(head: str, seed: int = 0, **kw) -> JointModel:
    torch.manual_seed(seed)
    return JointModel(GradResNet(num_classes=4, in_channels=3, width=4, head=head, **kw).double()).eval()


@pytest.mark.parametrize("head", ["logenergy", "quadratic", "logquad", "linear"])
@pytest.mark.parametrize("conditional", [False, True])
def test_the_parts_sum_to_the_score(head, conditional):
    model = _model(head)
    y = torch.rand(3, 3, 8, 8, dtype=torch.float64)
    c = torch.tensor([0, 3, 1]) if conditional else None
    parts = model.score_parts(y, c=c)
    assert set(parts) == ({"features"} if head == "linear" else {"features", "energy"})
    torch.testing.assert_close(sum(parts.values()), model.score(y, c=c), rtol=1e-10, atol=1e-12)


def test_the_log_energy_alone_is_the_closed_form_shrinkage():
    """With ``R`` the identity on the first 3 of its m = 4 H W outputs,
    ``energy = -(d/2) log(||y||^2 / m + 1e-8)`` and its gradient is ``-d y / (||y||^2 + 1e-8 m)`` exactly; with the read-out ``w = 0`` the features' part is 0, so the
    features alone leave ``y`` as it is and ``D(y)`` is the energy's shrinkage."""
    model = _model("logenergy")
    net = model.net
    with torch.no_grad():
        net.energy_conv.weight.zero_()
        for i in range(3):
            net.energy_conv.weight[i, i, 1, 1] = 1.0
        net.fc.weight.zero_()
    y = torch.rand(2, 3, 8, 8, dtype=torch.float64)
    d = y[0].numel()
    parts = model.score_parts(y)
    m = 4 * 8 * 8
    want = -d * y / (y.flatten(1).pow(2).sum(1) + 1e-8 * m).view(-1, 1, 1, 1)
    torch.testing.assert_close(parts["energy"], want, rtol=1e-10, atol=1e-12)
    assert parts["features"].abs().max().item() == 0.0
    x = torch.rand(8, 3, 8, 8)
    data = ImageDataset((x * 255).round().to(torch.uint8), torch.arange(8) % 4, [str(k) for k in range(4)], "test", "random images")
    rows = psnr_vs_sigma(decomposed_denoisers(JointModel(net.float()), 4), data, (0.1,), batch_size=4)
    assert rows[0]["features alone"] == pytest.approx(rows[0]["noisy"], abs=1e-9)
    assert rows[0]["energy alone"] == pytest.approx(rows[0]["D(y)"], abs=1e-9)


def test_a_net_without_an_energy_leaves_y_to_its_features():
    model = JointModel(GradResNet(num_classes=4, in_channels=3, width=4, head="linear")).eval()
    x = torch.rand(8, 3, 8, 8)
    data = ImageDataset((x * 255).round().to(torch.uint8), torch.arange(8) % 4, [str(k) for k in range(4)], "test", "random images")
    rows = psnr_vs_sigma(decomposed_denoisers(model, 4), data, (0.1,), batch_size=4)
    assert rows[0]["energy alone"] == pytest.approx(rows[0]["noisy"], abs=1e-9)
    assert rows[0]["features alone"] == pytest.approx(rows[0]["D(y)"], abs=1e-4)
    sizes = score_part_sizes(model, data, (0.1,), batch_size=4)[0]
    assert "energy" not in sizes and sizes["features"] == pytest.approx(sizes["score"], rel=1e-5)


def test_score_part_sizes_of_the_exact_shrinkage():
    """With ``R`` the identity (as above) and ``w = 0``: ``sigma^2 ||s|| / ||y - x|| = sigma^2 d / (||y|| ||y - x||)``
    (up to the 1e-8 inside the logarithm, a relative 1e-7 here)."""
    model = _model("logenergy")
    with torch.no_grad():
        model.net.energy_conv.weight.zero_()
        for i in range(3):
            model.net.energy_conv.weight[i, i, 1, 1] = 1.0
        model.net.fc.weight.zero_()
    model = JointModel(model.net.float())
    x = torch.rand(4, 3, 8, 8)
    data = ImageDataset((x * 255).round().to(torch.uint8), torch.arange(4), [str(k) for k in range(4)], "test", "random images")
    from cdn.evaluate import _noise

    got = score_part_sizes(model, data, (0.2,), batch_size=4)[0]
    xf = data.to_float(slice(0, 4))
    noise = 0.2 * _noise(xf.shape, 0, 0, 0, "cpu")
    y = xf + noise
    want = (0.04 * y[0].numel() / (y.flatten(1).norm(dim=1) * noise.flatten(1).norm(dim=1))).mean().item()
    assert got["energy"] == pytest.approx(want, rel=1e-5) and got["score"] == pytest.approx(want, rel=1e-5)
    assert got["features"] == 0.0


def test_term_gradient_norms_are_those_of_each_term():
    """``gradient_norms`` equals the norms of the gradients of ``ce`` and ``lam * dsm`` computed one at a time
    on the same noise, and it leaves ``.grad`` untouched."""
    model = _model("logenergy", seed=1)
    model.net.train()
    x, c = torch.rand(4, 3, 8, 8, dtype=torch.float64), torch.tensor([0, 1, 2, 3])
    loss_fn = JointLoss(lam=7.0)
    got = loss_fn.gradient_norms(model, x, c, torch.Generator().manual_seed(5))
    assert all(p.grad is None for p in model.parameters())
    ce, dsm, _ = loss_fn.parts(model, x, c, torch.Generator().manual_seed(5))
    params = list(model.parameters())
    for name, term in (("grad_ce", ce), ("grad_dsm", 7.0 * dsm)):
        g = torch.autograd.grad(term, params, retain_graph=True, allow_unused=True)
        want = torch.sqrt(sum((t ** 2).sum() for t in g if t is not None)).item()
        assert got[name] == pytest.approx(want, rel=1e-9), name
    assert got["grad_dsm"] > 0 and got["grad_ce"] > 0


def test_the_training_log_records_each_terms_gradient_at_checkpoint_steps(tmp_path):
    """Rows of checkpoint steps carry ``grad_ce`` and ``grad_dsm``; the others do not. (That computing them
    leaves the run unchanged is what the bitwise resume tests of test_train.py and test_faults.py check:
    they train with checkpoints at every step.)"""
    from cdn.profiles import get_config
    from cdn.runs import resolve_data
    from cdn.train import read_log, train

    config = get_config("smoke", "gradresnet", "synthetic", width=4, steps=6, train_size=64, batch_size=8,
                        checkpoint_every=3, log_every=1, precision="float32")
    train(config, tmp_path, resolve_data(config).train, device="cpu", progress=False)
    rows = {r["step"]: r for r in read_log(tmp_path)}
    assert [s for s, r in rows.items() if "grad_ce" in r] == [3, 6]
    assert all(rows[s]["grad_ce"] > 0 and rows[s]["grad_dsm"] > 0 for s in (3, 6))


def test_the_search_rule_needs_the_network_to_denoise_before_accuracy_counts():
    from cdn.experiments.joint_search import choose

    def row(name, acc, network, full, model="gradresnet"):
        return {"candidate": name, "model": model, "clean_accuracy": acc, "network_psnr_0.1": network,
                "denoising": [{"sigma": 0.1, "noisy": 20.0, "D(y)": full}]}

    shortcut = row("shortcut", 0.70, 20.0, 26.0)            # accurate, but the network adds nothing
    weak = row("weak", 0.60, 20.5, 24.0)                     # the network adds 0.5 dB: below the bar
    a, b = row("a", 0.62, 25.0, 25.0), row("b", 0.615, 26.5, 26.5)
    assert choose([shortcut, weak]) is None
    assert choose([shortcut, weak, a]) == "a"
    assert choose([shortcut, a, b]) == "b"                  # within one point of accuracy: the better D(y)
    assert choose([shortcut, row("c", 0.70, 26.0, 26.0, model="gradresnet-ce-noisy")]) is None  # not joint


@pytest.mark.parametrize("name", ["stage-1 log-energy, lam 10", "cross-entropy on the same noisy images",
                                  "UNet (denoising only)"])
def test_a_search_candidate_is_measured_with_its_decomposition(name):
    from cdn.experiments import joint_search

    budget = dict(width=4, steps=4, train_size=64, test_size=32, batch_size=8, checkpoint_every=2, log_every=2,
                  warmup_steps=1, precision="float32")
    row = joint_search.measure(name, profile="smoke", dataset="synthetic", budget=budget)
    assert row["steps"] == 4 and row["precision"] == "float32"
    if name.startswith("UNet"):  # a denoiser only: D(y) on the whole test set, no classification, no decomposition
        assert "clean_accuracy" not in row and "denoising" not in row
        full = {r["sigma"]: r for r in row["denoising_full_test"]}
        assert set(full) == set(joint_search.SIGMAS) and full[0.1]["D(y)"] > 0
        assert joint_search.choose([row]) is None
        return
    assert 0 <= row["clean_accuracy"] <= 1
    den = {r["sigma"]: r for r in row["denoising"]}
    assert set(den) == set(joint_search.SIGMAS)
    assert {"noisy", "D(y)", "energy alone", "features alone", "D(y,c)", "D(y,wrong c)"} <= set(den[0.1])
    if name.startswith("stage-1"):  # its energy passes through the network: the network part is all of D(y)
        assert row["energy_source"] == "the network's stage-1 feature map"
        assert row["network_psnr_0.1"] == den[0.1]["D(y)"] and row["grad_dsm"] > 0
        assert "stem energy alone" in den[0.1]
        assert {r["sigma"] for r in row["denoising_full_test"]} == set(joint_search.SIGMAS)
    else:
        assert row["network_psnr_0.1"] == den[0.1]["features alone"] and "grad_ce" not in row


@pytest.mark.parametrize("name", ["stage-1 log-energy, lam balanced by gradient norms",
                                  "the later network's quadratic energy, noise-conditioned",
                                  "stage-1 log-energy, lam 10, noise-conditioned"])
def test_the_later_candidates_are_measured(name):
    from cdn.experiments import joint_search

    budget = dict(width=4, steps=4, train_size=64, test_size=32, batch_size=8, checkpoint_every=2, log_every=2,
                  warmup_steps=1, precision="float32")
    row = joint_search.measure(name, profile="smoke", dataset="synthetic", budget=budget)
    assert 0 <= row["clean_accuracy"] <= 1 and row["grad_ce"] > 0 and row["grad_dsm"] > 0
    den = {r["sigma"]: r for r in row["denoising"]}
    assert set(den) == set(joint_search.SIGMAS) and "network_psnr_0.1" in row
    if "balanced" in name:  # the lam the balancing reached is recorded, and it moved from where it started
        assert row["lam_final"] > 0 and row["lam_final"] != joint_search.CANDIDATES[name][1]["lam"]
    else:
        assert "lam_final" not in row
    if "quadratic" in name:
        assert row["energy_source"] == "the pooled features"


def test_the_search_table_reads_each_row_of_the_results_file(tmp_path):
    from cdn.experiments import joint_search

    assert joint_search.load("none.json", tmp_path)["rows"] == []
    den = [{"sigma": s, "noisy": 20.0, "D(y)": 25.0 + s, "energy alone": 21.0, "features alone": 20.5,
            "D(y,c)": 25.2, "D(y,wrong c)": 24.9} for s in joint_search.SIGMAS]
    row = {"candidate": "x", "model": "gradresnet", "clean_accuracy": 0.5, "accuracy_sigma_0.2": 0.4, "epochs": 3.0,
           "denoising": den, "network_psnr_0.1": 20.5, "grad_ce": 2.0, "grad_dsm": 0.5, "energy_source": "y"}
    t = joint_search.table({"rows": [row]})
    assert t.loc["x", "D(y) σ=0.1"] == 25.1 and t.loc["x", "features alone σ=0.1"] == 20.5
    assert t.loc["x", "D(y,c) − D(y,wrong c) σ=0.1"] == pytest.approx(0.3)
    assert t.loc["x", "|∇θ λ DSM|"] == 0.5 and t.loc["x", "clean acc."] == 0.5


def test_the_stem_energy_ablation_is_the_stage1_energy_when_the_blocks_add_nothing():
    """With every block's last convolution at zero, a pre-activation stage passes its input through, so
    h_1 = stem(y) and the stem-alone denoiser is the stage-1 head's own D(y)."""
    from cdn.evaluate import stem_energy_denoiser

    model = _model("stage1energy")
    with torch.no_grad():
        for block in model.net.stages[0]:
            block.conv2.weight.zero_()
        model.net.fc.weight.zero_()
    y = torch.rand(2, 3, 8, 8, dtype=torch.float64)
    torch.testing.assert_close(stem_energy_denoiser(model.net)(y, 0.1, None), model.denoise(y, 0.1),
                               rtol=1e-10, atol=1e-12)


def test_search_comparisons_pair_each_candidate_with_its_own_width():
    from cdn.experiments import joint_search as js

    def row(name, model, acc, width=None, psnr=25.0):
        den = [{"sigma": s, "D(y)": psnr + s, "noisy": 20.0, "stem energy alone": 21.0, "D(y,c)": psnr,
                "D(y,wrong c)": psnr} for s in js.SIGMAS]
        return {"candidate": name, "model": model, "clean_accuracy": acc, "denoising": den,
                "overrides": {} if width is None else {"width": width}, "grad_ce": 2.0, "grad_dsm": 1.0, "epochs": 3.0}

    results = {"rows": [row(js.SHORTCUT, "gradresnet-logenergy", 0.60, psnr=26.0),
                        row("ce16", js.NOISY_CE, 0.58), row("ce32", js.NOISY_CE, 0.66, width=32),
                        row("joint16", "gradresnet-stage1energy", 0.55),
                        row("joint32", "gradresnet-stage1energy", 0.64, width=32, psnr=27.0)]}
    out = {c["candidate"]: c for c in js.search_comparisons(results)}
    assert set(out) == {"joint16", "joint32"}  # neither the shortcut nor the cross-entropy baselines
    assert out["joint16"]["accuracy_vs_noisy_ce"] == pytest.approx(-3.0)
    assert out["joint32"]["accuracy_vs_noisy_ce"] == pytest.approx(-2.0) and out["joint32"]["width"] == 32
    assert out["joint32"]["accuracy_vs_shortcut"] == pytest.approx(4.0)
    assert out["joint32"]["psnr_vs_shortcut"] == {s: pytest.approx(1.0) for s in js.SIGMAS}
    assert out["joint16"]["stem_gain_0.1"] == pytest.approx(1.0) and out["joint16"]["grad_ratio"] == 2.0
    assert js.table(results).loc["joint32", "width"] == 32
    # a joint row that also sees clean images with another sigma law is read against the baseline that does too
    both = {"ce_on": "both", "sigma_distribution": "log_normal"}
    matched = dict(row("ce16-both", js.NOISY_CE, 0.61), overrides=both)
    joint_both = dict(row("joint16-both", "gradresnet-stage1energy", 0.62), overrides=dict(both, lam=3.0))
    rows = results["rows"] + [matched, joint_both]
    assert js.noisy_ce_reference(joint_both, rows) is matched
    assert js.noisy_ce_reference(results["rows"][3], rows)["candidate"] == "ce16"


def test_the_amended_rule_chooses_among_candidates_of_the_profiles_width():
    from cdn.experiments import joint_search as js

    def row(name, acc, psnr, width=None):
        den = [{"sigma": s, "D(y)": psnr, "noisy": 20.0} for s in js.SIGMAS]
        return {"candidate": name, "model": "gradresnet-stage1energy", "clean_accuracy": acc, "denoising": den,
                "network_psnr_0.1": psnr, "overrides": {} if width is None else {"width": width}}

    rows = [row("narrow", 0.567, 26.0), row("wide", 0.558, 27.1, width=32)]
    assert js.choose(rows) == "wide"  # within one point of accuracy, the better denoiser
    assert js.choose(rows, width=js.DEFAULT_WIDTH) == "narrow"
    assert js.choose(rows, width=64) is None


def test_the_confirmation_report_reads_each_gap_from_the_rows():
    from cdn.experiments import joint_search

    def den(d_y, stem):
        return [{"sigma": s, "D(y)": d_y + s, "stem energy alone": stem, "D(y,c)": 25.01, "D(y,wrong c)": 25.0}
                for s in joint_search.SIGMAS]

    def full(v):
        return [{"sigma": s, "D(y)": v + s} for s in joint_search.SIGMAS]

    joint = {"candidate": "j", "clean_accuracy": 0.70, "epochs": 10.0, "train_time_s": 600, "machine": "m",
             "denoising": den(26.0, 21.0), "denoising_full_test": full(26.0), "grad_ce": 3.0, "grad_dsm": 1.5,
             "final_dsm": 0.4}
    other = dict(joint, candidate="k")
    unet = {"candidate": "UNet (denoising only)", "denoising_full_test": full(26.5)}
    ce = {"candidate": "cross-entropy on the same noisy images", "clean_accuracy": 0.75}
    report = joint_search.confirmation_report({"rows": [other, joint, unet, ce]}, chosen="j",
                                              shortcut_metrics={"epochs": 2.6, "denoising": full(25.0)})
    assert report.index("j (10 epochs, 10 min on m)") < report.index("k (10 epochs")  # the chosen first
    assert "against the UNet at the same epochs: σ=0.05: -0.50 dB, σ=0.1: -0.50 dB, σ=0.2: -0.50 dB" in report
    assert "(the shortcut, cpu profile, 2.6 epochs, whose D(y) had stopped improving): σ=0.05: +1.00 dB" in report
    assert "clean accuracy against cross-entropy on the same noisy images: -5.00 points (70.00% against 75.00%)" in report
    assert "σ=0.1: +5.10 dB" in report and "+0.010 dB" in report and "2.0" in report and "0.400" in report
    line = joint_search.meta_line({"machine": "cpu", "commit": "abc", "data": {"file": "f.tar", "sha256": "0123456789abcdef"},
                                   "budget": {"name": "confirm", "steps": 3910, "lr": 1}})
    assert line == ("machine: cpu | commit: abc | data: f.tar (sha256 0123456789ab...) | budget: "
                    "{'name': 'confirm', 'steps': 3910}")


def test_dsm_gradient_by_band_is_each_band_s_share_of_the_batch_gradient():
    """On D(y) = a y (one parameter) the gradient of each band's share is sum 2 w (a y - x) . y / (B d), by hand."""
    from cdn.evaluate import dsm_gradient_by_band

    class Scale(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.a = torch.nn.Parameter(torch.tensor(0.7, dtype=torch.float64))

        def forward(self, y):
            return self.a * y

    g = torch.Generator().manual_seed(0)
    x, eps = torch.rand(6, 1, 2, 2, generator=g, dtype=torch.float64), torch.randn(6, 1, 2, 2, generator=g, dtype=torch.float64)
    sigma = torch.tensor([0.005, 0.002, 0.05, 0.5, 0.2, 0.02], dtype=torch.float64)
    rows = dsm_gradient_by_band(Scale(), x, sigma, eps)
    y = x + sigma.view(-1, 1, 1, 1) * eps
    w = 1 / sigma ** 2
    for row, (lo, hi) in zip(rows, [(0, 0.01), (0.01, 0.1), (0.1, 10)]):
        m = (sigma >= lo) & (sigma < hi)
        grad = (2 * w[:, None] * ((0.7 * y - x) * y).flatten(1)).mean(1)[m].sum() / 6
        loss = (w * (0.7 * y - x).pow(2).flatten(1).mean(1))[m].mean()
        assert row["images"] == 2 and row["gradient norm"] == pytest.approx(abs(grad.item()), rel=1e-12)
        assert row["loss"] == pytest.approx(loss.item(), rel=1e-12)
    unweighted = dsm_gradient_by_band(Scale(), x, sigma, eps, weighting="none")
    assert unweighted[0]["gradient norm"] < rows[0]["gradient norm"]
    with pytest.raises(ValueError, match="weighting"):
        dsm_gradient_by_band(Scale(), x, sigma, eps, weighting="sigma")
    # a joint model's denoiser y + sigma^2 score, its score kept differentiable in the parameters
    torch.manual_seed(0)
    joint = JointModel(GradResNet(num_classes=3, in_channels=1, width=4)).double()
    rows = dsm_gradient_by_band(joint, x.repeat(1, 1, 4, 4), sigma, eps.repeat(1, 1, 4, 4))
    assert [r["images"] for r in rows] == [2, 2, 2] and all(r["gradient norm"] > 0 for r in rows)
