"""Writing fgjax parameters as a Hugging Face model directory: config.json (v4 schema, which
transformers 4 and 5 read) and safetensors in the legacy key layout, streamed: parameters
are read from `params` (any mapping, e.g. one that restores each from disk on access),
converted and written one tensor at a time, at most one shard in memory.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Mapping

import numpy as np

from fgjax.hf import config_export, io, keymaps
from fgjax.models.config import FusedVitConfig, VLMConfig
from fgjax.models.qwen_vl import Qwen25VLConfig


def with_param_dtype(cfg, dtype: str):
    """`cfg` with every parameter dtype set to `dtype` (a VLM's projector follows the decoder)."""
    if isinstance(cfg, (VLMConfig, Qwen25VLConfig)):
        return dataclasses.replace(
            cfg, encoder=with_param_dtype(cfg.encoder, dtype),
            decoder=with_param_dtype(cfg.decoder, dtype),
        )  # fmt: skip
    if isinstance(cfg, FusedVitConfig):
        return FusedVitConfig(tuple(with_param_dtype(t, dtype) for t in cfg.towers))
    return dataclasses.replace(cfg, param_dtype=dtype)


def write_model(
    cfg, params: Mapping, path, *, dtype: str | None = None, max_shard_bytes: int = 5 * 2**30
) -> dict:
    """Writes config.json and the weights of the fgjax model `cfg` with parameters `params`
    ({"a/b/c": array}), cast to `dtype` if given. Returns the config.json dict; raises
    UnsupportedModelError (before writing anything) when HF cannot represent `cfg`."""
    if dtype is not None:
        cfg = with_param_dtype(cfg, dtype)
    hf_config = config_export.to_hf(cfg)
    keymap = keymaps.key_map(hf_config["architectures"][0], cfg)
    unmapped = sorted(set(params) - set(keymap.entries))
    if unmapped:
        raise RuntimeError(f"fgjax parameters without a mapping rule: {unmapped}")
    tensors = keymaps.hf_tensors(keymap, params)
    if dtype is not None:
        tensors = ((key, value.astype(np.dtype(dtype), copy=False)) for key, value in tensors)
    os.makedirs(path, exist_ok=True)
    io.write_checkpoint(path, tensors, max_shard_bytes=max_shard_bytes)
    with open(os.path.join(path, "config.json"), "w") as f:
        json.dump(hf_config, f, indent=2)
    return hf_config
