"""Initial parameters: random, then components replaced by pretrained ones.

config.init maps a component ("vlm" for the whole model, or "encoder" / "projector" /
"decoder"; for a task without components, "model") to a source:
    "hf:DIR"    a Hugging Face directory (fgjax.hf.load)
    "run:DIR"   an earlier fgjax run's workdir (its final parameters export), or an export DIR
A component taken from a whole VLM source (a LLaVA checkpoint, a stage-1 run) is cut out of it.
Every loaded tensor must match the configured model's shape; mismatches are listed in one error.
"""

from __future__ import annotations

import logging
from pathlib import Path

import jax
import numpy as np
from flax import nnx

from fgjax import hf, models, native
from fgjax.train.optim import flatten, unflatten

PARAMS_EXPORT = "params_export"  # a run's final parameters, inside its workdir


def random_params(model_cfg, shardings: dict, seed: int) -> dict:
    """Random parameters created directly with their shardings (no host copy)."""

    def create():
        return nnx.to_pure_dict(nnx.state(models.build(model_cfg, seed=seed), nnx.Param))

    return jax.jit(create, out_shardings=shardings)()


def read_source(source: str) -> dict:
    """A pure parameter dict from "hf:DIR" or "run:DIR" (host arrays)."""
    kind, _, path = source.partition(":")
    if kind == "hf":
        model, _ = hf.load(path)
        return nnx.to_pure_dict(nnx.state(model, nnx.Param))
    if kind == "run":
        export = Path(path) / PARAMS_EXPORT
        target = export if native.is_native(export) else Path(path)
        if not native.is_native(target):
            raise FileNotFoundError(
                f"{path} holds no finished fgjax run (no {PARAMS_EXPORT}/) nor a parameters export; "
                "finish that run first or point config.init at its export"
            )
        return native.load_params(target)
    raise ValueError(f"init source {source!r} must start with 'hf:' or 'run:'")


def initial_params(init_cfg, model_cfg, shardings: dict, seed: int) -> dict:
    params = random_params(model_cfg, shardings, seed)
    for component, source in sorted(dict(init_cfg or {}).items()):
        if not source:
            continue
        loaded = read_source(source)
        what = f"{component} from {source}"
        if component in ("vlm", "model"):
            params = _place(loaded, params, shardings, what)
        elif component not in params:
            raise ValueError(
                f"config.init.{component}: the model has no component {component!r}; it has {sorted(params)}"
            )
        else:
            part = loaded[component] if _is_vlm(loaded) else loaded
            params[component] = _place(part, params[component], shardings[component], what)
        logging.info("initialized %s from %s", component, source)
    return params


def _is_vlm(tree: dict) -> bool:
    return {"encoder", "projector", "decoder"} <= set(tree)


def _place(loaded: dict, current: dict, shardings: dict, what: str) -> dict:
    """`loaded` moved onto `current`'s shardings after checking paths and shapes."""
    want, have, where = flatten(current), flatten(loaded), flatten(shardings)
    problems = [f"missing {p}" for p in sorted(set(want) - set(have))]
    problems += [f"unexpected {p}" for p in sorted(set(have) - set(want))]
    problems += [
        f"{p}: shape {tuple(np.shape(have[p]))} but the model needs {tuple(want[p].shape)}"
        for p in sorted(set(want) & set(have))
        if tuple(np.shape(have[p])) != tuple(want[p].shape)
    ]
    if problems:
        raise ValueError(f"cannot initialize {what}:\n  " + "\n  ".join(problems[:30]))
    return unflatten(
        {p: jax.device_put(np.asarray(have[p], want[p].dtype), where[p]) for p in want}
    )
