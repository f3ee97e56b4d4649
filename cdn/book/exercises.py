"""Sizes of the book's coding exercises (the solutions run in every build of the book).

A coding exercise that trains a model asks ``run(profile, model, data_dir=..., seed=..., **changes)``
for it: the profile's configuration with the exercise sizes (``cdn.profiles.EXPERIMENT_SIZES``) on top, then the exercise's
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

from ..profiles import PROFILES, Config, experiment_sizes, get_config, sizes_profile
from .chapter import chapter_runs



def exercise_profile(profile: str) -> str:
    """The profile the exercises of a book built in ``profile`` train in: ``profile`` itself when it has exercise
    sizes of its own (``cdn.profiles.sizes_profile``), else ``quick``. Raises ``ValueError`` for an unknown profile."""
    if profile not in PROFILES:
        raise ValueError(f"unknown profile {profile!r}; expected one of {', '.join(PROFILES)}")
    return sizes_profile(profile, "exercises")


def config(profile: str, model: str = "gradresnet", dataset: str = "cifar10", **changes) -> Config:
    """The configuration of an exercise: ``get_config(p, model, dataset)`` for ``p =
    exercise_profile(profile)``, with the exercise sizes of ``p`` (``cdn.profiles.experiment_sizes``) and then ``changes``
    applied (any field of ``cdn.profiles.Config``)."""
    p = exercise_profile(profile)
    return get_config(p, model, dataset, **{**experiment_sizes(p, "exercises"), **changes})


def run(profile: str, model: str = "gradresnet", dataset: str = "cifar10", data_dir=None, seed: int = 0, **changes):
    """The ``cdn.book.chapter.ModelRun`` (run, data, label, metrics) of ``config(profile, model, dataset,
    seed=seed, **changes)``: loaded when it was trained before, trained now otherwise (in
    ``exercise_profile(profile)``)."""

    config(profile, model, dataset, **changes)  # a bad profile, model or field fails here, before any data is read
    p = exercise_profile(profile)
    return chapter_runs(p, [model], dataset, data_dir, seed, **{**experiment_sizes(p, "exercises"), **changes})[model]


__all__ = ["config", "exercise_profile", "run"]
