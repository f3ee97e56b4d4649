"""Sizes of the book's coding exercises (the solutions run in every build of the book).

A coding exercise that trains a model asks ``run(profile, model, data_dir=..., seed=..., **changes)``
for it: the profile's configuration with the exercise sizes of ``SIZES`` on top, then the exercise's
own changes (``lam=0.1``, ``sigma_distribution="uniform"`` ...), loaded or trained through
``cdn.book.chapter.chapter_runs`` like every model of the book. The sizes keep every solution small:

* ``smoke``: the smoke profile itself (seconds; the continuous-integration build);
* ``quick``: width 8, 200 steps of batch 64 on 10 000 training images and 500 test images, about
  40 s of training per model on a 2-core CPU (0.18 s per joint step of width 8 and batch 64 in
  ``results/bench-sweep-cpu-2core.json``), so that an exercise runs on a laptop in a few minutes;
* ``paper``: width 32, 2 000 steps of batch 128 on the whole training set (minutes on one GPU).

A profile without sizes of its own here (such as a ``cpu`` profile, whose models train for half an
hour each) runs the exercises as ``quick`` does, so that they stay laptop-sized.

Runs are keyed by their configuration as everywhere in the book (``cdn.runs``), so two exercises that
ask for the same configuration share one run, and a rebuild trains nothing.
"""
from __future__ import annotations

from ..profiles import PROFILES, Config, get_config
from .chapter import chapter_runs

#: the sizes of the coding exercises per profile, on top of the profile's configuration
SIZES: dict[str, dict] = {
    "smoke": {},
    "quick": dict(width=8, steps=200, batch_size=64, train_size=10_000, test_size=500, warmup_steps=20,
                  checkpoint_every=100, log_every=10),
    "paper": dict(width=32, steps=2_000, batch_size=128, test_size=2_000, warmup_steps=100, checkpoint_every=500,
                  log_every=20),
}


def exercise_profile(profile: str) -> str:
    """The profile the exercises of a book built in ``profile`` train in: ``profile`` itself when
    ``SIZES`` has sizes for it, else ``quick``. Raises ``ValueError`` for an unknown profile."""
    if profile not in PROFILES:
        raise ValueError(f"unknown profile {profile!r}; expected one of {', '.join(PROFILES)}")
    return profile if profile in SIZES else "quick"


def config(profile: str, model: str = "gradresnet", dataset: str = "cifar10", **changes) -> Config:
    """The configuration of an exercise: ``get_config(p, model, dataset)`` for ``p =
    exercise_profile(profile)``, with the exercise sizes of ``p`` (``SIZES``) and then ``changes``
    applied (any field of ``cdn.profiles.Config``)."""
    p = exercise_profile(profile)
    return get_config(p, model, dataset, **{**SIZES[p], **changes})


def run(profile: str, model: str = "gradresnet", dataset: str = "cifar10", data_dir=None, seed: int = 0, **changes):
    """The ``cdn.book.chapter.ModelRun`` (run, data, label, metrics) of ``config(profile, model, dataset,
    seed=seed, **changes)``: loaded when it was trained before, trained now otherwise (in
    ``exercise_profile(profile)``)."""

    config(profile, model, dataset, **changes)  # a bad profile, model or field fails here, before any data is read
    p = exercise_profile(profile)
    return chapter_runs(p, [model], dataset, data_dir, seed, **{**SIZES[p], **changes})[model]


__all__ = ["SIZES", "config", "exercise_profile", "run"]
