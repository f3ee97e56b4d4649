"""Named configurations: the profiles ``smoke``, ``quick``, ``cpu`` and ``paper`` for each model and
dataset (every chapter starts from ``get_config``).

The paper's exact hyper-parameters are not published; every value
below is our documented choice, visible in one place, and written beside each run as config.json.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass

from .data import DATASETS
from .nets import ARCHITECTURES, VARIANTS

PROFILES = ("smoke", "quick", "cpu", "paper")
#: bumped whenever a change to the networks or the training loop makes old runs incomparable;
#: part of every run's hash, so such a change never reuses a stale run
CODE_VERSION = 3
#: "ce_noisy": cross-entropy on the joint model's own images (the same sigma distribution, sigma_min to sigma_max, and
#: with ``ce_on="both"`` the clean image too), the baseline that separates what the DSM term adds from what the images
#: alone give
#: "dsm_conditional": score matching of D(y, true c) alone, no cross-entropy: a class-conditional denoiser, the
#: model a diffusion classifier reads out
OBJECTIVES = ("joint", "ce", "ce_noise", "ce_noisy", "mse", "mollify", "dsm_conditional")
#: "auto": bf16 autocast on a GPU or on a CPU whose bf16 unit beats float32 (AMX, or AVX512-BF16 on an AMD CPU:
#: cdn.train.cpu_has_fast_bf16), float32 elsewhere (emulated bf16 is many times slower); "bf16" forces autocast with the score path
#: (input layer, energy, head) in float32 (cdn.nets.resnet.full_precision); "bf16-all" autocasts the
#: score path too (kept to show why it fails, chapter 10); "float32" forbids autocast
PRECISIONS = ("auto", "float32", "bf16", "bf16-all")

#: the architecture of the joint model ``gradresnet``: the log-energy built from the network's stage-1
#: feature map, ``f_c = <w_c, phi(y)> - (d/2) log mean(h_1(y)^2)``, chosen by chapter 10's rule at
#: ten epochs (results/joint-confirm.json: the features carry the denoising). The architecture *named*
#: ``gradresnet`` keeps its first meaning (the same network with ``-(d/2) log mean(R(y)^2)``, R one 3x3
#: convolution of y, whose gradient did all of the denoising: the model ``gradresnet-logenergy``), so
#: every run trained with it keeps its hash and no stale run is reused under the new default.
JOINT_ARCH = "gradresnet-stage1energy"
#: the weight of the score-matching term of the joint model ``gradresnet`` (and of its noise-conditioned variant):
#: ``loss = CE + JOINT_LAM * DSM``, chosen with the architecture by chapter 10's rule at ten epochs
JOINT_LAM = 3.0
#: how the joint model ``gradresnet`` (and its noise-conditioned variant) trains, chosen by chapter 10's rule on the
#: ten-epoch width-16 rows of results/joint-confirm.json: ``loss = CE + JOINT_LAM * DSM``, the noise levels drawn
#: from EDM's log-normal law (``cdn.losses.SigmaSampler``) and the cross-entropy averaged over the clean and the noisy
#: image (``ce_on="both"``). Its baseline ``gradresnet-ce-noisy`` sees the same images: the same sigma law and
#: ``ce_on``, without score matching
JOINT_SETTINGS = dict(lam=JOINT_LAM, sigma_distribution="log_normal", ce_on="both")
#: the joint model's settings before that choice (lam = 1, log-uniform sigma, cross-entropy on the noisy image):
#: the exercises' short runs and the efficiency race keep them (their committed runs and their questions are about
#: lam and the sigma law against this baseline, or about the cost of a step)
FIRST_JOINT_SETTINGS = dict(lam=1.0, sigma_distribution="log_uniform", ce_on="noisy")

#: model name -> (architecture, objective, noise_conditioning)
MODELS: dict[str, tuple[str, str, bool]] = {
    "gradresnet": (JOINT_ARCH, "joint", False),            # the paper's joint model
    "gradresnet-logenergy": ("gradresnet", "joint", False),  # the first default: the 3x3 log-energy shortcut
    "gradresnet-cond": (JOINT_ARCH, "joint", True),        # noise-conditioned variant
    "gradresnet-ce": ("gradresnet", "ce", False),          # same net, cross-entropy alone
    "gradresnet-ce-noisy": ("gradresnet", "ce_noisy", False),  # ... on the joint model's noisy images
    "resnet18": ("resnet18", "ce", False),                 # discriminative baseline
    "resnet18-noise": ("resnet18", "ce_noise", False),     # ... with Gaussian-noise augmentation
    "resnet18-mollify": ("resnet18", "mollify", False),    # ... with data mollification (cdn.mollify)
    "unet": ("unet", "mse", False),                        # denoise-only baseline (bias-free UNet)
    "dncnn": ("dncnn", "mse", False),                      # the referees' reference denoiser (bias-free DnCNN)
    "gradresnet-dsm-cond": (JOINT_ARCH, "dsm_conditional", False),  # D(y, c) trained by score matching alone
    "egc": (JOINT_ARCH, "joint", True),                    # EGC's objective on the joint model's network (MODEL_SETTINGS)
    "gradresnet-relu": ("gradresnet-relu", "joint", False),          # ablations
    "gradresnet-batchnorm": ("gradresnet-batchnorm", "joint", False),
    "gradresnet-noside": ("gradresnet-noside", "joint", False),
    "gradresnet-nologenergy": ("gradresnet-nologenergy", "joint", False),
}
#: settings a model brings with it, applied before a profile's overrides. EGC (Guo et al. 2023): a noise-conditioned
#: energy trained on diffused images with cross-entropy plus epsilon-matching, its diffusion DDPM's variance-
#: preserving one; on this book's variance-exploding scale that is sigma_t = sqrt((1 - abar_t) / abar_t), t uniform on
#: DDPM's 1,000 steps (cdn.losses.ddpm_sigmas, 0.01 to 157, not clipped), the network seeing
#: sqrt(abar_t) y = y / sqrt(1 + sigma^2) (input_scaling). Its epsilon-matching loss
#: ||sigma_t grad_{x_t} log p(x_t) + eps||^2 is this book's DSM term with w = 1 / sigma^2 on that scale
MODEL_SETTINGS: dict[str, dict] = {
    "gradresnet": JOINT_SETTINGS,
    "gradresnet-cond": JOINT_SETTINGS,
    "gradresnet-ce-noisy": dict(sigma_distribution=JOINT_SETTINGS["sigma_distribution"], ce_on=JOINT_SETTINGS["ce_on"]),
    # the denoise-only reference draws its noise levels from the joint model's law, so the two denoisers are
    # compared on the same training distribution
    "unet": dict(sigma_distribution=JOINT_SETTINGS["sigma_distribution"]),
    "egc": dict(sigma_distribution="ddpm", sigma_min=1e-3, sigma_max=200.0, input_scaling=True),
    # DnCNN-B's own recipe (Zhang et al. 2017): sigma uniform in [0, 55/255] (from sigma_min), unweighted MSE, lr 1e-3.
    # On the joint model's objective (log-uniform sigma down to 1e-3, weight 1/sigma^2) this network stays at the
    # identity; with lr 2e-3 its last ReLU layer dies (chapter "What the referees asked")
    "dncnn": dict(sigma_distribution="uniform", sigma_max=55 / 255, weighting="none", lr=1e-3),
}
# every named GradResNet variant of chapter 10's comparison, as a joint model of its own
MODELS.update({v: (v, "joint", False) for v in VARIANTS if v not in MODELS})


@dataclass(frozen=True)
class Config:
    """Everything that determines a training run; its hash names the run directory."""

    model: str = "gradresnet"
    profile: str = "quick"
    dataset: str = "cifar10"
    arch: str = "gradresnet"
    objective: str = "joint"
    noise_conditioning: bool = False
    width: int = 16
    train_size: int | None = None        # None: the whole training set
    test_size: int | None = 2000
    max_classes: int | None = None       # keep only the first K classes (Tiny ImageNet quick)
    steps: int = 800
    batch_size: int = 128
    lr: float = 2e-3
    weight_decay: float = 0.05
    warmup_steps: int = 50
    grad_clip: float = 1.0
    augment: bool = True
    # noise levels (on the [0, 1] pixel scale)
    sigma_min: float = 1e-3
    sigma_max: float = 1.0
    sigma_distribution: str = "log_uniform"
    clean_fraction: float = 0.0
    # joint objective
    lam: float = 1.0
    weighting: str = "inv_sigma2"
    dsm_conditional: bool = False
    ce_on: str = "noisy"
    # classifier baseline with noise augmentation: sigma uniform on [0, noise_sigma_max]
    noise_sigma_max: float = 0.5
    seed: int = 0
    checkpoint_every: int = 200
    log_every: int = 10
    allow_fallback: bool = True
    precision: str = "auto"
    # the recipe for short budgets (chapter "Training the joint model"); see HASHED_WHEN_SET
    time_budget_s: float | None = None   # None: a schedule over `steps`; else over training seconds
    ema_decay: float | None = None       # exponential moving average of the weights, used for evaluation
    tta_flip: bool = False               # classification averages log p(c | y) and log p(c | flipped y)
    input_scaling: bool = False          # the net sees y / sqrt(1 + sigma^2) (EGC's variance-preserving input)
    lam_balance_every: int = 0           # > 0: every that many steps lam moves toward equal gradient norms (cdn.train)

    def __post_init__(self):
        if self.model not in MODELS:
            raise ValueError(f"unknown model {self.model!r}; expected one of {', '.join(MODELS)}")
        if self.profile not in PROFILES:
            raise ValueError(f"unknown profile {self.profile!r}; expected one of {', '.join(PROFILES)}")
        if self.dataset not in DATASETS:
            raise ValueError(f"unknown dataset {self.dataset!r}; expected one of {', '.join(DATASETS)}")
        if self.arch not in ARCHITECTURES or self.objective not in OBJECTIVES:
            raise ValueError(f"bad arch/objective {self.arch!r}/{self.objective!r}")
        for name in ("width", "steps", "batch_size", "checkpoint_every", "log_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {self.precision!r}")
        if self.lr <= 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        if self.time_budget_s is not None and not (isinstance(self.time_budget_s, (int, float))
                                                   and 0 < self.time_budget_s < float("inf")):
            raise ValueError(f"time_budget_s must be None or a number of seconds > 0, got {self.time_budget_s!r}")
        if self.ema_decay is not None and not (isinstance(self.ema_decay, (int, float)) and 0 < self.ema_decay < 1):
            raise ValueError(f"ema_decay must be None or a number in (0, 1), e.g. 0.999, got {self.ema_decay!r}")
        if not isinstance(self.tta_flip, bool):
            raise ValueError(f"tta_flip must be true or false, got {self.tta_flip!r}")
        if not (isinstance(self.lam_balance_every, int) and self.lam_balance_every >= 0):
            raise ValueError(f"lam_balance_every must be an integer >= 0 (0: lam fixed), got {self.lam_balance_every!r}")
        if self.lam_balance_every and self.objective != "joint":
            raise ValueError(f"lam_balance_every balances the joint loss's two terms; the objective of {self.model!r} "
                             f"is {self.objective!r}")
        if self.input_scaling and not self.noise_conditioning:
            raise ValueError("input_scaling needs a noise-conditioned model (it scales y by sigma): e.g. --model egc")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def key(self) -> str:
        """A short hash of the whole configuration (sorted JSON) and ``CODE_VERSION``: equal iff the
        configs are equal. The fields of ``HASHED_WHEN_SET`` enter the hash only when they differ from
        their default, so adding them kept the names of the runs trained before."""
        d = self.to_dict()
        for name in HASHED_WHEN_SET:
            if d[name] == _DEFAULTS[name]:
                del d[name]
        text = json.dumps({**d, "code_version": CODE_VERSION}, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:10]

    def run_name(self) -> str:
        return f"{self.dataset}-{self.model}-{self.profile}-{self.key()}"

    @classmethod
    def from_dict(cls, d: dict) -> "Config":
        fields = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - fields
        if unknown:
            raise ValueError(f"unknown configuration keys {sorted(unknown)}")
        return cls(**d)


#: fields added after runs of CODE_VERSION 3 were trained and committed: part of the hash only when
#: set to a value other than their default (``Config.key``)
HASHED_WHEN_SET = ("time_budget_s", "ema_decay", "tta_flip", "input_scaling", "lam_balance_every")
_DEFAULTS = {f.name: f.default for f in dataclasses.fields(Config)}

#: the ``cpu`` profile's training length: every CIFAR-10 model for the same number of epochs, the paper's
#: comparison (not the same seconds: the joint step costs about three cross-entropy steps), ten epochs
#: of the 50,000 training images at batch 128. In float32 on every machine, so that the committed runs do
#: not depend on whether the CPU that trained them had a bf16 unit. Width 16: one joint step of batch 128
#: takes 0.4 to 0.8 s on two cores (results/bench-roofline-*.json: 0.76 s on an Intel Xeon before the
#: convolutions' closed-form second derivatives, about 0.4 s on an AMD EPYC with them), so the joint model
#: trains in half an hour to an hour. The weights' average (ema_decay 0.999 with the ramp-up of cdn.train.ema_decay_at,
#: (1 + t) / (10 + t)) spans about the last quarter of the steps.
CPU_EPOCHS = 10
#: ten epochs are 3,907 steps of batch 128; rounded up to a multiple of the log interval
CPU_STEPS = 3910

#: per-profile settings, per dataset; the budget of each is in the README
PROFILE_SETTINGS: dict[str, dict[str, dict]] = {
    "smoke": {
        "cifar10": dict(width=4, train_size=256, test_size=128, steps=8, batch_size=32, warmup_steps=2,
                        checkpoint_every=4, log_every=2),
        "tiny-imagenet": dict(width=4, train_size=128, test_size=64, max_classes=8, steps=4, batch_size=16,
                              warmup_steps=1, checkpoint_every=4, log_every=2),
    },
    "quick": {
        "cifar10": dict(width=16, train_size=None, test_size=2000, steps=800, batch_size=128, lr=2e-3,
                        warmup_steps=50, checkpoint_every=200, log_every=10),
        "tiny-imagenet": dict(width=16, train_size=None, test_size=1000, max_classes=20, steps=300,
                              batch_size=64, lr=2e-3, warmup_steps=30, checkpoint_every=100, log_every=10),
    },
    # every CIFAR-10 model at one width for the same ten epochs (CPU_STEPS), with one recipe (EMA of the
    # weights, flip TTA), trained once on the 2-core machine and committed under results/cpu-cifar10/
    # (cdn.runs). CIFAR-10 only: on Tiny ImageNet a cpu build uses the quick runs (runs_profile)
    "cpu": {
        "cifar10": dict(width=16, train_size=None, test_size=None, steps=CPU_STEPS, batch_size=128, lr=2e-3,
                        warmup_steps=100, checkpoint_every=200, log_every=20, precision="float32",
                        ema_decay=0.999, tta_flip=True),
    },
    "paper": {
        "cifar10": dict(width=64, train_size=None, test_size=None, steps=78_200, batch_size=128, lr=1e-3,
                        warmup_steps=1000, checkpoint_every=2000, log_every=50),
        "tiny-imagenet": dict(width=64, train_size=None, test_size=None, steps=40_000, batch_size=128, lr=1e-3,
                              warmup_steps=1000, checkpoint_every=2000, log_every=50),
    },
}
PROFILE_SETTINGS["smoke"]["digits"] = PROFILE_SETTINGS["smoke"]["cifar10"]
PROFILE_SETTINGS["smoke"]["synthetic"] = PROFILE_SETTINGS["smoke"]["cifar10"]
# scikit-learn's digits (16x16 grey, 1,437 training images): the first lecture's model (chapter 00_lecture; 80 s of
# training measured on two cores of an Intel Xeon without AMX); also what the smoke and quick profiles fall back to
# without CIFAR-10
PROFILE_SETTINGS["quick"]["digits"] = dict(width=8, train_size=None, test_size=None, steps=600, batch_size=64,
                                           lr=2e-3, warmup_steps=30, checkpoint_every=200, log_every=10)
PROFILE_SETTINGS["quick"]["synthetic"] = PROFILE_SETTINGS["quick"]["cifar10"]
PROFILE_SETTINGS["cpu"]["digits"] = PROFILE_SETTINGS["quick"]["digits"]
PROFILE_SETTINGS["cpu"]["synthetic"] = PROFILE_SETTINGS["quick"]["cifar10"]
PROFILE_SETTINGS["paper"]["digits"] = PROFILE_SETTINGS["quick"]["digits"]
PROFILE_SETTINGS["paper"]["synthetic"] = PROFILE_SETTINGS["quick"]["cifar10"]


def runs_profile(profile: str, dataset: str) -> str:
    """The profile whose runs a chapter built in ``profile`` uses on ``dataset``: ``profile`` itself when
    it has settings for ``dataset`` (``PROFILE_SETTINGS``), else ``quick``. The ``cpu`` profile trains the
    CIFAR-10 models only, so a cpu build's Tiny ImageNet chapter shows the quick runs (and says so)."""
    if profile not in PROFILES:
        raise ValueError(f"unknown profile {profile!r}; expected one of {', '.join(PROFILES)}")
    return profile if dataset in PROFILE_SETTINGS[profile] else "quick"


def get_config(profile: str = "quick", model: str = "gradresnet", dataset: str = "cifar10", **overrides) -> Config:
    """The configuration of ``model`` on ``dataset`` in ``profile``, with keyword ``overrides``
    (e.g. ``get_config('quick', 'gradresnet', lam=0.5)``)."""
    if profile not in PROFILES:
        raise ValueError(f"unknown profile {profile!r}; expected one of {', '.join(PROFILES)}")
    if model not in MODELS:
        raise ValueError(f"unknown model {model!r}; expected one of {', '.join(MODELS)}")
    if dataset not in DATASETS:
        raise ValueError(f"unknown dataset {dataset!r}; expected one of {', '.join(DATASETS)}")
    if dataset not in PROFILE_SETTINGS[profile]:
        raise ValueError(f"the {profile} profile has no settings for {dataset} (it has "
                         f"{', '.join(PROFILE_SETTINGS[profile])}); use --profile {runs_profile(profile, dataset)}")
    arch, objective, cond = MODELS[model]
    settings = dict(PROFILE_SETTINGS[profile][dataset])
    settings.update(model=model, profile=profile, dataset=dataset, arch=arch, objective=objective,
                    noise_conditioning=cond, allow_fallback=profile in ("smoke", "quick"))
    settings.update(MODEL_SETTINGS.get(model, {}))
    known = {f.name for f in dataclasses.fields(Config)}
    bad = set(overrides) - known
    if bad:
        raise ValueError(f"unknown configuration keys {sorted(bad)}; known keys: {', '.join(sorted(known))}")
    settings.update(overrides)
    return Config(**settings)


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
    "gradresnet-ce-noisy": "GradResNet (cross-entropy on the joint model's images)",
    "egc": "EGC objective (same GradResNet, noise-conditioned)",
    "gradresnet-dsm-cond": "GradResNet, D(y, c) by score matching alone",
}


def model_label(model: str) -> str:
    """The display name of a model of ``cdn.profiles.MODELS`` (the model name itself if unknown)."""
    return MODEL_LABELS.get(model, model)


#: the sizes of every measured experiment, per profile and experiment. One rule for a profile without sizes of its
#: own for an experiment (a ``cpu`` build, whose models train for half an hour each): it runs the experiment with
#: quick's sizes, on its own models (``experiment_sizes``). Per experiment:
#: ``attacks``: attacked test images, PGD/APGD steps and restarts, the EOT attack's sigma, draws and images, the
#: strong attack's steps and restarts, Square's queries and images, the large budgets, the targeted attack's steps;
#: ``certify``: certified test images, Monte-Carlo samples (selection n0, estimation n), alpha, batch;
#: ``corruptions``: corrupted test images (the first ``holdout`` only choose the joint model's matched sigma) and the
#: grid of added noise levels that sigma is chosen from;
#: ``efficiency``: network width, batch, time budget per model (s), evaluation interval (s of training), test
#: images, JEM's SGLD steps, peak learning rate and warm-up steps (the same for both models of the race);
#: ``classical``: images BM3D and NL-means denoise in chapter 03 (BM3D: about a second per image and sigma);
#: ``sampling``: samples per class, steps of coarse-to-fine and of EDM's sampler, images in and out of distribution;
#: ``exercises``: sizes on top of the profile's configuration (a profile without them trains the exercises as
#: quick does, ``exercise_profile``);
#: ``theory``: the theory chapters' mixtures, grids, Jacobians, estimator comparisons, timings and chapter 10's
#: ablation (``ablation_profile``: the profile whose runs it trains or reuses)
_QUICK_THEORY = dict(mixture_steps=2000, grid=13, n_eval=4000, jac_crop=16, jac_sigmas=(0.02, 0.05, 0.1, 0.2, 0.4),
                     jac_full=32, jac_images=2, ll_images=32, gd_ns=(20, 50, 100, 300, 1000, 3000), gd_reps=100,
                     gd_test=50_000, fisher_mc=400_000,
                     # the GradResNet ablation trains five models: a shortened schedule on the 2-core machine
                     ablation_overrides=dict(steps=100, warmup_steps=10, test_size=500, checkpoint_every=50),
                     # one-switch ablations of the architecture they were built from (the 3x3 log-energy head)
                     ablation_models=("gradresnet-logenergy", "gradresnet-relu", "gradresnet-batchnorm",
                                      "gradresnet-noside", "gradresnet-nologenergy"),
                     timing_repeats=3, blind_dims=(2, 8, 32, 128, 512, 3072), blind_n=300, ablation_profile="quick")
EXPERIMENT_SIZES: dict[str, dict[str, dict]] = {
    "smoke": {
        "attacks": dict(n_images=16, steps=3, restarts=1, eot_sigma=0.12, eot_draws=2, eot_images=8, strong_steps=6,
                        strong_restarts=2, square_queries=20, square_images=8, large_linf=64 / 255, large_l2=8.0,
                        target_steps=5),
        "certify": dict(n_images=8, n0=8, n=32, alpha=0.001, batch_size=64),
        "corruptions": dict(n_images=24, holdout=8, sigmas=(0.0, 0.1)),
        "efficiency": dict(width=4, batch_size=32, budget_s=3.0, eval_every_s=1.0, test_size=128, k=20, lr=1e-3,
                           warmup_steps=5),
        "classical": dict(images=4),
        "sampling": dict(per_class=1, max_steps=6, n_uncond=4, edm_steps=3, n_in=64, n_out=32),
        "exercises": {},
        "theory": dict(mixture_steps=150, grid=11, n_eval=500, jac_crop=16, jac_sigmas=(0.1,), jac_full=None,
                       jac_images=1, ll_images=4, gd_ns=(20, 100, 1000), gd_reps=4, gd_test=5000, fisher_mc=20_000,
                       ablation_overrides={}, ablation_models=("gradresnet-logenergy", "gradresnet-relu"),
                       timing_repeats=1, blind_dims=(2, 32, 512), blind_n=50, ablation_profile="smoke"),
    },
    "quick": {
        "attacks": dict(n_images=200, steps=10, restarts=1, eot_sigma=0.12, eot_draws=4, eot_images=100,
                        strong_steps=20, strong_restarts=2, square_queries=200, square_images=100,
                        large_linf=64 / 255, large_l2=8.0, target_steps=40),
        "certify": dict(n_images=100, n0=50, n=500, alpha=0.001, batch_size=550),
        "corruptions": dict(n_images=1000, holdout=200, sigmas=(0.0, 0.05, 0.1, 0.2, 0.3)),
        "efficiency": dict(width=16, batch_size=64, budget_s=240.0, eval_every_s=20.0, test_size=1000, k=20, lr=1e-3,
                           warmup_steps=50),
        "classical": dict(images=48),
        "sampling": dict(per_class=10, max_steps=200, n_uncond=20, edm_steps=20, n_in=1000, n_out=500),
        # the first joint settings (lam = 1, log-uniform sigma, cross-entropy on noisy images) on the exercises' short
        # schedule (200 steps at width 8): the default's JOINT_SETTINGS were chosen at ten epochs of width 16, and
        # the exercises compare lam and the sigma law against these values (chapter 01)
        "exercises": dict(width=8, steps=200, batch_size=64, train_size=10_000, test_size=500, warmup_steps=20,
                          checkpoint_every=100, log_every=10, **FIRST_JOINT_SETTINGS),
        "theory": _QUICK_THEORY,
    },
    "cpu": {
        "classical": dict(images=100),
        # quick's sizes, and quick's ablation runs themselves: five models of this profile's recipe would take its
        # whole budget again
        "theory": dict(_QUICK_THEORY, ablation_profile="quick"),
    },
    "paper": {
        "attacks": dict(n_images=1000, steps=50, restarts=2, eot_sigma=0.12, eot_draws=16, eot_images=500,
                        strong_steps=200, strong_restarts=5, square_queries=5000, square_images=500,
                        large_linf=64 / 255, large_l2=8.0, target_steps=100),
        "certify": dict(n_images=500, n0=100, n=100_000, alpha=0.001, batch_size=1000),
        "corruptions": dict(n_images=10000, holdout=1000, sigmas=(0.0, 0.05, 0.1, 0.2, 0.3, 0.4)),
        "classical": dict(images=500),
        "sampling": dict(per_class=10, max_steps=1000, n_uncond=40, edm_steps=40, n_in=10000, n_out=2000),
        "exercises": dict(width=32, steps=2_000, batch_size=128, test_size=2_000, warmup_steps=100,
                          checkpoint_every=500, log_every=20),
        "theory": dict(_QUICK_THEORY, ablation_overrides={}, ablation_profile="paper"),
    },
}
EXPERIMENTS = tuple(EXPERIMENT_SIZES["quick"])


def sizes_profile(profile: str, experiment: str) -> str:
    """The profile whose sizes ``experiment`` runs with in a build of ``profile``: ``profile`` itself when
    ``EXPERIMENT_SIZES`` holds sizes of that experiment for it, else ``quick``. Raises ``ValueError`` for an
    unknown profile or experiment."""
    if profile not in PROFILES:
        raise ValueError(f"unknown profile {profile!r}; expected one of {', '.join(PROFILES)}")
    if experiment not in EXPERIMENTS:
        raise ValueError(f"unknown experiment {experiment!r}; expected one of {', '.join(EXPERIMENTS)}")
    return profile if experiment in EXPERIMENT_SIZES[profile] else "quick"


def experiment_sizes(profile: str, experiment: str) -> dict:
    """The sizes of ``experiment`` in a build of ``profile`` (``EXPERIMENT_SIZES`` of ``sizes_profile``), as a
    new dict."""
    return dict(EXPERIMENT_SIZES[sizes_profile(profile, experiment)][experiment])


def parse_overrides(items: list[str]) -> dict:
    """``["lam=0.5", "width=32"]`` -> ``{"lam": 0.5, "width": 32}`` (values parsed as JSON, else str)."""
    out = {}
    for item in items or []:
        if "=" not in item:
            raise ValueError(f"--set expects KEY=VALUE, got {item!r}")
        k, v = item.split("=", 1)
        try:
            out[k] = json.loads(v)
        except json.JSONDecodeError:
            out[k] = v
    return out
