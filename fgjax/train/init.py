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

import jax
import numpy as np
from flax import nnx

from fgjax import hf, models, native
from fgjax.models import vlm
from fgjax.models.config import VLMConfig
from fgjax.rundir import run_export
from fgjax.trees import ParameterMismatchError, flatten, mismatches, unflatten


def random_params(model_cfg, shardings: dict, seed: int, only: set[str] | None = None) -> dict:
    """Random parameters created directly with their shardings (no host copy). With `only`,
    just those top-level parts of a VLM (the others are left out of the result)."""

    def create():
        if only is None:
            return nnx.to_pure_dict(nnx.state(models.build(model_cfg, seed=seed), nnx.Param))
        rngs = nnx.Rngs(seed)
        build = vlm.components(model_cfg)
        return {
            name: nnx.to_pure_dict(nnx.state(build[name](rngs), nnx.Param)) for name in sorted(only)
        }

    if only is not None and not only:
        return {}
    target = shardings if only is None else {name: shardings[name] for name in only}
    return jax.jit(create, out_shardings=target)()


def read_source(source: str) -> dict:
    """A pure parameter dict from a source (host arrays):
    "hf:DIR"            a Hugging Face directory
    "run:DIR"           an fgjax run's final parameters (or a parameters export directory)
    "run:DIR@STEP"      the export that run wrote at STEP (config.export_steps)
    any of them + "#SUBTREE", e.g. "run:DIR#image": only that part of the parameters."""
    source, _, subtree = source.partition("#")
    kind, _, path = source.partition(":")
    if kind == "hf":
        model, _ = hf.load(path)
        params = nnx.to_pure_dict(nnx.state(model, nnx.Param))
    elif kind == "run":
        params = native.load_params(run_export(path))
    else:
        raise ValueError(f"init source {source!r} must start with 'hf:' or 'run:'")
    for key in filter(None, subtree.split("/")):
        if key not in params:
            raise ValueError(
                f"{source}#{subtree}: no {key!r} in the parameters; options: {sorted(params)}"
            )
        params = params[key]
    return params


def initial_params(init_cfg, model_cfg, shardings: dict, seed: int) -> dict:
    """Random parameters, then each configured component replaced by its source. A component
    is "vlm"/"model" (everything) or a '/'-path into the parameters ("encoder",
    "encoder/towers/0", "decoder", ...)."""
    sources = {k: v for k, v in dict(init_cfg or {}).items() if v}
    abstract = nnx.to_pure_dict(nnx.state(models.abstract(model_cfg), nnx.Param))
    if sources.keys() & {"vlm", "model"}:  # everything comes from the source
        params = dict(abstract)
    elif isinstance(model_cfg, VLMConfig):
        # random weights only for the parts no source replaces whole: compiling the random
        # init of a large model takes time, and its weights would be thrown away
        replaced = {k for k in sources if "/" not in k}
        unknown = sorted(replaced - set(abstract))
        if unknown:
            raise ValueError(
                f"config.init names {unknown}, which the model does not have; it has {sorted(abstract)}"
            )
        params = {
            **{k: abstract[k] for k in replaced},
            **random_params(model_cfg, shardings, seed, set(abstract) - replaced),
        }
    else:
        params = random_params(model_cfg, shardings, seed)
    for component, source in sorted(sources.items()):
        loaded = read_source(source)
        what = f"{component} from {source}"
        if component in ("vlm", "model"):
            params = _place(loaded, params, shardings, what)
        else:
            keys = component.split("/")
            current, where = _subtree(params, keys, component), _subtree(shardings, keys, component)
            part = loaded[keys[0]] if _is_vlm(loaded) and len(keys) == 1 else loaded
            _set_subtree(params, keys, _place(part, current, where, what))
        logging.info("initialized %s from %s", component, source)
    return params


def _subtree(tree: dict, keys: list[str], name: str) -> dict:
    node = tree
    for i, key in enumerate(keys):
        if not isinstance(node, dict) or key not in node:
            options = sorted(node) if isinstance(node, dict) else []
            raise ValueError(
                f"config.init[{name!r}]: no {'/'.join(keys[: i + 1])!r} in the model; options there: {options}"
            )
        node = node[key]
    return node


def _set_subtree(tree: dict, keys: list[str], value) -> None:
    for key in keys[:-1]:
        tree = tree[key]
    tree[keys[-1]] = value


def _is_vlm(tree: dict) -> bool:
    return {"encoder", "projector", "decoder"} <= set(tree)


def _extend_vocab(name: str, value: np.ndarray, shape: tuple) -> np.ndarray | None:
    """Grows an embedding [V, D] or LM head [D, V] loaded with a smaller vocabulary to the
    model's, new rows set to the mean of the old ones (as LLaVA initializes `<image>`/`<pad>`).
    None if `name` is not such a tensor or only the vocabulary axis differs not."""
    leaf = name.rsplit("/", 1)[-1]
    axis = {"embedding": 0, "lm_head": 1}.get(leaf)
    if axis is None or value.ndim != 2 or len(shape) != 2:
        return None
    other = 1 - axis
    if value.shape[other] != shape[other] or value.shape[axis] >= shape[axis]:
        return None
    extra = shape[axis] - value.shape[axis]
    mean = value.mean(axis=axis, keepdims=True)
    return np.concatenate([value, np.repeat(mean, extra, axis=axis)], axis=axis)


def _place(loaded: dict, current: dict, shardings: dict, what: str) -> dict:
    """`loaded` moved onto `current`'s shardings after checking paths and shapes (a smaller
    vocabulary is extended, and logged)."""
    want, have, where = flatten(current), flatten(loaded), flatten(shardings)
    for p in sorted(want.keys() & have.keys()):
        if tuple(np.shape(have[p])) != tuple(want[p].shape):
            grown = _extend_vocab(p, np.asarray(have[p]), tuple(want[p].shape))
            if grown is not None:
                logging.info(
                    "%s: vocabulary extended from %s to %s rows",
                    p,
                    np.shape(have[p]),
                    want[p].shape,
                )
                have[p] = grown
    problems = mismatches(
        {p: w.shape for p, w in want.items()}, {p: np.shape(h) for p, h in have.items()}
    )
    if problems:
        raise ParameterMismatchError(f"cannot initialize {what}:\n  " + "\n  ".join(problems[:30]))
    return unflatten(
        {p: jax.device_put(np.asarray(have[p], want[p].dtype), where[p]) for p in want}
    )
