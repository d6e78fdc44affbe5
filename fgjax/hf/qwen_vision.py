"""The vision tower of a Qwen2.5-VL checkpoint (`Qwen2_5_VLForConditionalGeneration`) ->
fgjax's `Qwen25VisionTower`, weights and config.

    model, cfg = fgjax.hf.qwen_vision.load_vision("path/to/Qwen2.5-VL-7B-Instruct")
    embeddings = model(pixel_values, image_grid_thw)  # the processor's outputs

Only the tower (`fgjax.hf.load` of the same directory gives the whole model,
fgjax.models.qwen_vl). The keys are read in both layouts: `visual.*` (what transformers 5
save_pretrained writes and the published checkpoints hold) and `model.visual.*`
(transformers 5's module names); the decoder's tensors are left unread. The tower's rules
and config reader live with the whole model's, in keymaps.py and configs.py.
"""

from __future__ import annotations

import dataclasses

from flax import nnx

from fgjax.hf import io, loader
from fgjax.hf.configs import UnsupportedModelError
from fgjax.hf.keymaps import QWEN25_VISION_RULES, KeyMap, _expand
from fgjax.hf.vlm_configs import qwen25_vision_from_hf
from fgjax.models import build
from fgjax.models.qwen_vision import Qwen25VisionConfig

MODEL_TYPES = ("qwen2_5_vl",)
ALIASES = [(r"^model\.visual\.", "visual.")]  # transformers 5's module names
IGNORED = [r"^(?!(model\.)?visual\.)"]  # the decoder and the LM head


def key_map(cfg: Qwen25VisionConfig) -> KeyMap:
    """The KeyMap of the tower inside a Qwen2.5-VL checkpoint."""
    entries = _expand(QWEN25_VISION_RULES, cfg.depth, cfg.scan_layers, "", "visual.")
    return KeyMap(entries, ALIASES, IGNORED)


def from_hf_config(hf: dict, **overrides) -> Qwen25VisionConfig:
    """The tower's config from a Qwen2.5-VL config.json dict (its `vision_config`; v4 and
    v5 schemas, absent fields at transformers' defaults). overrides: other
    Qwen25VisionConfig fields (param_dtype, dtype, scan_layers, remat, ...)."""
    if hf.get("model_type") not in MODEL_TYPES or not isinstance(hf.get("vision_config"), dict):
        raise UnsupportedModelError(
            f"model_type={hf.get('model_type')!r}: load_vision reads the vision tower of a "
            f"Qwen2.5-VL checkpoint (model_type {MODEL_TYPES}, with a vision_config)"
        )
    return dataclasses.replace(qwen25_vision_from_hf(hf["vision_config"]), **overrides)


def load_vision(
    path, *, dtype: str = "float32", compute_dtype: str | None = None, scan_layers: bool = True,
    **overrides,
):  # fmt: skip
    """The vision tower of the Qwen2.5-VL directory `path`. Returns (model, config).

    dtype: parameter dtype (tensors are cast to it); compute_dtype: activation dtype (default
    float32); scan_layers: stack the blocks and scan them; overrides: other config fields.
    Raises what `fgjax.hf.load` raises (CheckpointError, CheckpointMismatchError listing every
    missing, unexpected or mis-shaped tower tensor, UnsupportedModelError).
    """
    if compute_dtype is not None:
        overrides["dtype"] = compute_dtype
    cfg = from_hf_config(
        io.read_config(path), param_dtype=dtype, scan_layers=scan_layers, **overrides
    )
    model = nnx.eval_shape(lambda: build(cfg))
    loader.fill(model, key_map(cfg), path)
    return model, cfg
