"""Chapter "Robustness"'s adversarial measurement as a committed result, for the claims ledger.

``measure(profile)`` attacks the profile's committed CIFAR-10 models (``MODELS``) on the chapter's seeded test
images with the chapter's sizes (``cdn.profiles.experiment_sizes(profile, "attacks")``): the robust-accuracy
curves of ``cdn.experiments.attacks.attack_curves`` (PGD then APGD; APGD on the noise-averaged classifiers), and
the difference-of-denoisers identity ``grad_y log p(c | y) = (D(y, c) - D(y)) / sigma^2`` on the joint model in
float64 (its largest relative error over ``IDENTITY_IMAGES`` images and the ``IDENTITY_SIGMAS``). ``main`` writes
them to ``results/robustness-<profile>.json`` with what they were computed from: each run by name and the sha256 of
its weights, the sizes, seed, data file and checksum, command, commit, machine and wall time
(``python -m cdn robustness --profile quick``). It reads committed runs only and never trains.
"""
from __future__ import annotations

import argparse
import copy
import json
import shlex
import sys
import time
from pathlib import Path

import torch
import torchattacks

from ..checkpoint import atomic_write_text, sha256_file
from ..committed import find_committed, results_root
from ..joint import JointModel
from ..profiles import PROFILES, experiment_sizes, get_config, model_label, runs_profile
from ..provenance import data_record, device_description, git_commit
from ..runs import load_run, resolve_data
from .attacks import NoiseAveraged, Classifier, attack_curves, denoiser_difference

#: the models of the chapter's curves, the joint model first
MODELS = ("gradresnet", "gradresnet-ce", "resnet18", "resnet18-noise")
#: the models also attacked as noise-averaged classifiers (they classify noisy images)
AVERAGED = ("gradresnet", "resnet18-noise")
IDENTITY_IMAGES = 16
IDENTITY_SIGMAS = (0.05, 0.1, 0.2, 0.4)


def result_path(profile: str, results: str | Path | None = None) -> Path:
    """``results/robustness-<profile>.json``."""
    return results_root(results) / f"robustness-{profile}.json"


def test_images(test, n: int, seed: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    """The chapter's images: the first ``n`` of a seeded permutation of ``test`` (``torch.randperm`` with a
    generator seeded by ``seed``), as floats in [0, 1] on ``device``, with their labels."""
    order = torch.randperm(len(test), generator=torch.Generator().manual_seed(seed))[:n]
    return test.to_float(order, device), test.labels[order].to(device)


def classifiers(nets: dict[str, torch.nn.Module], sizes: dict) -> tuple[dict, dict]:
    """``(plain, averaged)``, each ``{label: classifier}``: every net as ``Classifier`` (its logits at sigma = 0),
    and the nets of ``AVERAGED`` as ``NoiseAveraged`` at ``sizes["eot_sigma"]`` with ``sizes["eot_draws"]`` draws."""
    plain = {model_label(m): Classifier(net) for m, net in nets.items()}
    averaged = {f"{model_label(m)}, noise-averaged σ={sizes['eot_sigma']:g}":
                NoiseAveraged(nets[m], sizes["eot_sigma"], sizes["eot_draws"]) for m in AVERAGED if m in nets}
    return plain, averaged


def identity_error(model: JointModel, x: torch.Tensor, c: torch.Tensor, seed: int) -> dict:
    """The largest relative error ``||grad - diff|| / ||grad||`` of ``denoiser_difference`` over the images
    ``x`` (true classes ``c``) at each sigma of ``IDENTITY_SIGMAS``, computed on a float64 copy of the network
    (the identity is exact: what remains is rounding)."""
    model64 = JointModel(copy.deepcopy(model.net).double())
    out = {}
    for s in IDENTITY_SIGMAS:
        y = x + s * torch.randn(x.shape, generator=torch.Generator().manual_seed(seed + 7)).to(x.device)
        out[f"{s:g}"] = denoiser_difference(model64, y.double(), s, c)["relative_error"].max().item()
    return out


def committed_runs(profile: str, data_dir=None, seed: int = 0, device="cpu", dataset: str = "cifar10") -> dict:
    """``{model: (Run, Data)}`` for ``MODELS``: the committed run of each model's configuration in ``profile``
    (``runs_profile``) on ``dataset``; raises ``FileNotFoundError`` naming the first that is not committed."""
    out = {}
    for m in MODELS:
        config = get_config(runs_profile(profile, dataset), m, dataset, seed=seed)
        run_dir = find_committed(config)
        if run_dir is None:
            raise FileNotFoundError(f"no committed run of {config.run_name()}: train it and `cdn export` it first "
                                    f"(`cdn train --profile {config.profile} --model {m}`)")
        out[m] = (load_run(run_dir, device), resolve_data(config, data_dir))
    return out


def measure(profile: str, data_dir=None, seed: int = 0, device="cpu", dataset: str = "cifar10") -> dict:
    """The curves and the identity of the module docstring, with the record of what they were computed from."""
    start = time.time()
    runs = committed_runs(profile, data_dir, seed, device, dataset)
    sizes = experiment_sizes(profile, "attacks")
    test = runs["gradresnet"][1].test
    if any(d.test.source != test.source or len(d.test) != len(test) for _, d in runs.values()):
        raise ValueError("the committed runs were evaluated on different test sets; expected one")
    x, c = test_images(test, sizes["n_images"], seed, device)
    nets = {m: r.net.eval() for m, (r, _) in runs.items()}
    plain, averaged = classifiers(nets, sizes)
    curves = attack_curves(plain, averaged, x, c, sizes, seed)
    identity = identity_error(runs["gradresnet"][0].model, x[:IDENTITY_IMAGES], c[:IDENTITY_IMAGES], seed)
    return {"meta": {"profile": profile, "seed": seed, "sizes": sizes, "test_images": len(x),
                     "identity_images": min(IDENTITY_IMAGES, len(x)),
                     "runs": {m: {"run": r.name, "label": model_label(m),
                                  "weights_sha256": sha256_file(r.dir / "model.safetensors")}
                              for m, (r, _) in runs.items()},
                     "data": data_record(dataset, data_dir), "torch": torch.__version__,
                     "torchattacks": torchattacks.__version__, "machine": device_description(device),
                     "wall_time_s": round(time.time() - start, 1)},
            "curves": curves, "identity_max_relative_error_float64": identity}


def main(argv=None) -> None:
    p = argparse.ArgumentParser(prog="python -m cdn robustness", description=__doc__.split("\n\n")[0])
    p.add_argument("--profile", default="quick", choices=PROFILES)
    p.add_argument("--dataset", default="cifar10", help="the data the models were trained on (default cifar10)")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None, help="default: results/robustness-<profile>.json")
    a = p.parse_args(argv)
    commit = git_commit()  # at the start: the code that computes
    result = measure(a.profile, a.data_dir, a.seed, dataset=a.dataset)
    result["meta"].update(command="python -m cdn robustness " + shlex.join(argv if argv is not None else sys.argv[1:]),
                          commit=commit)
    out = Path(a.out) if a.out else result_path(a.profile)
    atomic_write_text(out, json.dumps(result, indent=1))
    print(f"[cdn] wrote {out} ({result['meta']['wall_time_s'] / 60:.1f} min)")
