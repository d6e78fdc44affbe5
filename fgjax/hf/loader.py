"""`load`: a Hugging Face model directory -> the fgjax model with its config, and `save`,
the way back.

Loading builds the model abstractly (`nnx.eval_shape`, no memory), matches every fgjax
parameter to its HF key(s) before reading anything, then fills one parameter at a time,
stacking per-layer tensors into the scanned `[L, ...]` arrays: besides the model itself,
host memory holds about two parameters at a time.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from fgjax.hf import configs, dual_encoders, io, keymaps, writer
from fgjax.models import build
from fgjax.trees import ParameterMismatchError

_MAX_LISTED = 25


class CheckpointMismatchError(ParameterMismatchError):
    """The checkpoint's tensors do not match the model its config.json describes."""


def _param_paths(model) -> dict:
    """{"a/b/c": Variable} of every parameter of `model`."""
    others = nnx.to_flat_state(nnx.state(model, nnx.Not(nnx.Param)))
    if len(others):
        raise RuntimeError(f"unexpected non-parameter state {[p for p, _ in others]}")
    return {"/".join(map(str, path)): var for path, var in nnx.to_flat_state(nnx.state(model))}


def _listing(title: str, items: list) -> str:
    shown = "\n    ".join(items[:_MAX_LISTED])
    more = f"\n    ... and {len(items) - _MAX_LISTED} more" if len(items) > _MAX_LISTED else ""
    return f"  {title} ({len(items)}):\n    {shown}{more}"


def match(keymap: keymaps.KeyMap, params: dict, ckpt: io.Checkpoint) -> dict:
    """{fgjax path: (Entry, [checkpoint key per layer])} for every parameter, or one
    CheckpointMismatchError listing every missing, unexpected and mis-shaped tensor."""
    canonical = {}
    for key in ckpt.keys():
        name = keymap.canonical(key)
        if keymap.is_ignored(key) or keymap.is_ignored(name):
            continue
        if name in canonical:
            raise CheckpointMismatchError(
                f"{key!r} and {canonical[name]!r} are the same tensor in two key layouts"
            )
        canonical[name] = key
    plan, missing, unmapped, wrong_shape, used = {}, [], [], [], set()
    for path, var in params.items():
        entry = keymap.entries.get(path)
        if entry is None:
            unmapped.append(path)
            continue
        shape = var.get_value().shape[1:] if entry.stacked else var.get_value().shape
        want = entry.transform.hf_shape(shape)
        keys = []
        for name in entry.hf:
            used.add(name)
            if name not in canonical:
                missing.append(f"{name}  (for fgjax {path})")
                continue
            keys.append(canonical[name])
            got = ckpt.shape(canonical[name])
            if got != want:
                wrong_shape.append(f"{canonical[name]}: checkpoint {list(got)}, model {list(want)}")
        plan[path] = (entry, keys)
    unexpected = sorted(key for name, key in canonical.items() if name not in used)
    problems = [
        _listing(title, items)
        for title, items in (
            ("missing from the checkpoint", missing),
            ("unexpected in the checkpoint", unexpected),
            ("shape mismatches", wrong_shape),
            ("fgjax parameters without a mapping rule (a bug in fgjax.hf.keymaps)", unmapped),
        )
        if items
    ]
    if problems:
        raise CheckpointMismatchError(
            f"the checkpoint in {ckpt.path!r} does not match the model its config.json "
            "describes; nothing was loaded:\n" + "\n".join(problems)
        )
    return plan


def _assemble(ckpt, entry, keys, target) -> np.ndarray:
    """The value of one parameter (abstract `target`: shape, dtype) from its HF tensors,
    read one at a time; per-layer tensors fill the rows of a stacked [L, ...] array."""
    if not entry.stacked:
        value = entry.transform.to_fg(ckpt.read(keys[0]), target.shape)
        return value.astype(target.dtype, copy=False)
    host = np.empty(target.shape, target.dtype)
    for i, key in enumerate(keys):
        host[i] = entry.transform.to_fg(ckpt.read(key), target.shape[1:])
    return host


def load(
    path,
    *,
    dtype: str = "float32",
    compute_dtype: str | None = None,
    scan_layers: bool = True,
    dual_encoder: bool = False,
    **overrides,
):
    """Loads a Hugging Face model directory. Returns (model, config).

    path: a directory with config.json and model.safetensors (or shards + index).
    dtype: parameter dtype ("float32", "bfloat16", "float16"); tensors are cast to it.
    compute_dtype: activation dtype (the config's `dtype`; default float32).
    scan_layers: stack the layers and scan them (else an unrolled nnx.List).
    dual_encoder: a CLIPModel / SiglipModel as the whole image-text model, a ContrastiveModel
      (fgjax/hf/dual_encoders.py); by default such a checkpoint loads as its vision tower.
    overrides: other fgjax config fields, e.g. `feature_layer=-1`, `input_size=224`,
      `remat="full"`; for a VLM (or a dual encoder) each goes to the VLMConfig (the
      ContrastiveConfig) if it has the field, else to the sub-configs that have it.
    """
    if compute_dtype is not None:
        overrides["dtype"] = compute_dtype
    hf_config = io.read_config(path)
    settings = dict(param_dtype=dtype, scan_layers=scan_layers, **overrides)
    if dual_encoder:
        cfg = dual_encoders.contrastive_from_hf(hf_config, **settings)
        keymap = dual_encoders.key_map(cfg)
    else:
        arch, cfg = configs.from_hf(hf_config, **settings)
        keymap = keymaps.key_map(arch, cfg)
    model = nnx.eval_shape(lambda: build(cfg))
    fill(model, keymap, path)
    return model, cfg


def fill(model, keymap: keymaps.KeyMap, path) -> None:
    """Sets every parameter of `model` (abstract, from nnx.eval_shape, or concrete) from the
    checkpoint directory `path` by `keymap`, one tensor at a time, after matching them all
    (`match`: nothing is read when a tensor is missing, unexpected or mis-shaped)."""
    params = _param_paths(model)
    with io.Checkpoint(path) as ckpt:
        for path_, (entry, keys) in match(keymap, params, ckpt).items():
            var = params[path_]
            host = _assemble(ckpt, entry, keys, var.get_value())
            # wait for the copy so that the host buffer is freed before the next parameter
            var.set_value(jax.block_until_ready(jnp.asarray(host)))
            del host


def save(model, path, *, max_shard_bytes: int = 5 * 2**30) -> None:
    """Writes an fgjax model as a Hugging Face directory (config.json in the v4 schema, which
    transformers 4 and 5 both read, and safetensors in the legacy key layout), parameters in
    their own dtype. Tokenizer and processor files are not written (`fgjax.export` writes a
    training run with them)."""
    params = {path_: var.get_value() for path_, var in _param_paths(model).items()}
    writer.write_model(model.cfg, params, path, max_shard_bytes=max_shard_bytes)
