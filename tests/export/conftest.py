"""Tiny VLMs trained a few steps with the real trainer, once per test session, shared by the
export tests: a CLIP tower with LLaVA-1.5's letterbox preprocessing (encoder frozen) and a
SigLIP tower with its default resize (everything trained)."""

from __future__ import annotations

import shutil

import pytest

from fgjax.train import trainer
from tests.train import helpers

RUNS = {
    "clip": dict(encoder="tiny_clip", stage="finetune", preprocess="letterbox", export_steps=[1]),
    "siglip": dict(encoder="tiny_siglip", stage="full", preprocess=None, export_steps=[]),
}


@pytest.fixture(scope="session")
def dataset(tmp_path_factory):
    return helpers.write_dataset(tmp_path_factory.mktemp("export_data"), num_rows=16)


@pytest.fixture(scope="session")
def trained(tmp_path_factory, dataset):
    """trained(name) -> the workdir of a finished 3-step run (checkpoints at steps 2 and 3, the
    final parameters export; "clip" also a checkpoint and a parameters export at step 1),
    trained on first use."""
    cache = {}

    def get(name):
        if name not in cache:
            spec = RUNS[name]
            config = helpers.tiny_config(dataset, stage=spec["stage"], steps=3)
            config.optim.lr = 1e-3  # trained, yet far from collapsed: varied greedy tokens
            config.model.encoder = spec["encoder"]
            config.data.preprocess = spec["preprocess"]
            config.export_steps = spec["export_steps"]
            workdir = tmp_path_factory.mktemp(f"run_{name}")
            trainer.train(config, str(workdir))
            cache[name] = workdir
        return cache[name]

    return get


@pytest.fixture
def workdir_copy(trained, tmp_path):
    """copy(name) -> a private copy of a trained workdir, to damage."""

    def copy(name):
        target = tmp_path / f"copy_{name}"
        shutil.copytree(trained(name), target)
        return target

    return copy
