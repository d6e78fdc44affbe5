"""Workdirs for export tests that need no training: a model config, a run config and random
parameters written as a finished run leaves them (config.json, model_config.json and the final
parameters export, by fgjax's own writers)."""

from __future__ import annotations

import json
from pathlib import Path

import jax
import numpy as np
from flax import nnx

from fgjax import models, native
from fgjax.models import config as model_config
from fgjax.rundir import PARAMS_EXPORT


def random_params(cfg, seed: int = 0) -> dict:
    """N(0, 0.02) parameters of the model `cfg` in its parameter dtype (numpy, nested dict);
    faster than initializing the model, and no parameter is zero or one."""
    rng = np.random.default_rng(seed)
    abstract = nnx.to_pure_dict(nnx.state(models.abstract(cfg), nnx.Param))
    return jax.tree.map(
        lambda leaf: (rng.standard_normal(leaf.shape, np.float32) * 0.02).astype(leaf.dtype),
        abstract,
    )


def finished_run(workdir: Path, cfg, *, task: str, data: dict, seed: int = 0) -> dict:
    """Writes a finished run of model `cfg` with random parameters; returns them (nested)."""
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "config.json").write_text(json.dumps({"task": task, "data": data}))
    (workdir / "model_config.json").write_text(json.dumps(model_config.to_dict(cfg)))
    params = random_params(cfg, seed)
    native.save(workdir / PARAMS_EXPORT, cfg, params)
    return params
