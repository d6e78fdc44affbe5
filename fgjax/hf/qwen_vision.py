"""The vision tower of a Qwen2.5-VL checkpoint (`Qwen2_5_VLForConditionalGeneration`) ->
fgjax's `Qwen25VisionTower`, weights and config.

    model, cfg = fgjax.hf.qwen_vision.load_vision("path/to/Qwen2.5-VL-7B-Instruct")
    embeddings = model(pixel_values, image_grid_thw)  # the processor's outputs

Only the tower: `fgjax.hf.load` of the whole model needs the decoder's M-RoPE, not built yet.
The keys are read in both layouts: `visual.*` (what transformers 5 save_pretrained writes and
the published checkpoints hold) and `model.visual.*` (transformers 5's module names); the
decoder's tensors are left unread.
"""

from __future__ import annotations

import dataclasses

from flax import nnx

from fgjax.hf import io, loader
from fgjax.hf.configs import UnsupportedModelError, _act
from fgjax.hf.keymaps import FLAT, LINEAR, LINEAR_OUT, SAME, KeyMap, Part, Rule, _expand
from fgjax.models import build
from fgjax.models.qwen_vision import Qwen25VisionConfig

MODEL_TYPES = ("qwen2_5_vl",)


@dataclasses.dataclass(frozen=True)
class Conv3d:
    """torch Conv3d weight [O, I, kt, kh, kw] <-> fgjax kernel [I, kt, kh, kw, O]."""

    def hf_shape(self, fg_shape):
        *kernel, out = fg_shape
        return (out, *kernel)

    def to_fg(self, x, fg_shape):
        return x.transpose(1, 2, 3, 4, 0)

    def to_hf(self, x):
        return x.transpose(4, 0, 1, 2, 3)


_BLOCK, _LAYER = "stack/blocks/{i}", "blocks.{i}"
# fgjax path <-> key under `visual.`; the fused qkv is split into q, k, v (rows in that order)
QWEN25_VISION_RULES = [
    Rule("patch_embed", "patch_embed.proj.weight", Conv3d()),
    Rule(f"{_BLOCK}/attn_norm/scale", f"{_LAYER}.norm1.weight"),
    *[
        Rule(f"{_BLOCK}/attn/{n}/kernel", f"{_LAYER}.attn.qkv.weight", Part(j, 3, LINEAR))
        for j, n in enumerate("qkv")
    ],
    *[
        Rule(f"{_BLOCK}/attn/{n}/bias", f"{_LAYER}.attn.qkv.bias", Part(j, 3, FLAT))
        for j, n in enumerate("qkv")
    ],
    Rule(f"{_BLOCK}/attn/o/kernel", f"{_LAYER}.attn.proj.weight", LINEAR_OUT),
    Rule(f"{_BLOCK}/attn/o/bias", f"{_LAYER}.attn.proj.bias"),
    Rule(f"{_BLOCK}/mlp_norm/scale", f"{_LAYER}.norm2.weight"),
    *[
        Rule(f"{_BLOCK}/mlp/{name}/{kind}", f"{_LAYER}.mlp.{name}_proj.{hf}", transform)
        for name in ("gate", "up", "down")
        for kind, hf, transform in (("kernel", "weight", LINEAR), ("bias", "bias", SAME))
    ],
    Rule("merger/norm/scale", "merger.ln_q.weight"),
    Rule("merger/fc1/kernel", "merger.mlp.0.weight", LINEAR),
    Rule("merger/fc1/bias", "merger.mlp.0.bias"),
    Rule("merger/fc2/kernel", "merger.mlp.2.weight", LINEAR),
    Rule("merger/fc2/bias", "merger.mlp.2.bias"),
]
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
    v = hf["vision_config"]
    rope = v.get("rope_parameters") or {}
    if rope.get("rope_type", "axial") != "axial":
        raise UnsupportedModelError(f"vision rope_type {rope['rope_type']!r}: only 'axial'")
    fields = dict(
        width=v.get("hidden_size", 3584),
        depth=v.get("depth", v.get("num_hidden_layers", 32)),
        num_heads=v.get("num_heads", v.get("num_attention_heads", 16)),
        mlp_dim=v.get("intermediate_size", 3420),
        act=_act(v.get("hidden_act", "silu"), "vision_config"),
        patch_size=v.get("patch_size", 14),
        temporal_patch_size=v.get("temporal_patch_size", 2),
        num_channels=v.get("in_channels", v.get("in_chans", 3)),  # in_chans: v4 configs
        spatial_merge_size=v.get("spatial_merge_size", 2),
        window_size=v.get("window_size", 112),
        fullatt_block_indexes=tuple(v.get("fullatt_block_indexes", (7, 15, 23, 31))),
        out_dim=v.get("out_hidden_size", 3584),
        rope_theta=float(rope.get("rope_theta", 10000.0)),
    )
    return Qwen25VisionConfig(**{**fields, **overrides})


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
