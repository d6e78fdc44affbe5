"""Analytic FLOP counts of a training step, accounting for frozen components, and MFU.

Forward FLOPs per token of a block stack (2 FLOPs per multiply-add):
    2 * (D*N*H + 2*D*K*H + N*H*D)        q, k, v, o projections
  + 2 * m * D * F                        MLP (m = 3 gated, 2 plain)
  + 2 * 2 * N * H * T_attn               scores and weighted sum over T_attn keys
with T_attn = T / 2 for causal decoders (average visible keys) and T for vision towers.
Training multiplies each component's forward count by
    3  if it trains (forward + activation gradients + weight gradients),
    2  if it is frozen but gradients flow through it (the LLM when only the projector trains),
    1  if it is frozen and nothing before it trains (a frozen encoder: no backward pass at all).
"""

from __future__ import annotations

import dataclasses

from fgjax.models.config import FusedVitConfig, TransformerConfig, VitConfig, VLMConfig
from fgjax.models.projector import input_dim, projector_dims
from fgjax.models.qwen_vision import Qwen25VisionConfig
from fgjax.models.qwen_vl import Qwen25VLConfig

# Dense bf16 peak FLOP/s per chip, for MFU. Extend as needed or set config.peak_flops_per_device.
PEAK_FLOPS = {
    "TPU v4": 275e12,
    "TPU v5 lite": 197e12,
    "TPU v5e": 197e12,
    "TPU v5p": 459e12,
    "TPU v5": 459e12,
    "TPU v6 lite": 918e12,
    "TPU v6e": 918e12,
    "NVIDIA H100": 989e12,
    "NVIDIA H200": 989e12,
    "NVIDIA A100": 312e12,
}


def stack_flops_per_token(cfg: TransformerConfig, attended: float) -> float:
    d, n, k, h, f = cfg.width, cfg.num_heads, cfg.kv_heads, cfg.dim_per_head, cfg.mlp_dim
    projections = 2 * (d * n * h + 2 * d * k * h + n * h * d)
    mlp = 2 * (3 if cfg.mlp == "gated" else 2) * d * f
    attention = 4 * n * h * attended
    return cfg.depth * (projections + mlp + attention)


def vit_forward_flops(cfg: VitConfig, blocks: int | None = None) -> float:
    """Forward FLOPs of one image through the first `blocks` blocks of the tower (all)."""
    blocks = cfg.depth if blocks is None else blocks
    tokens = cfg.num_patches + cfg.num_prefix_tokens
    patch = 2 * cfg.patch_size**2 * cfg.num_channels * cfg.width * cfg.num_patches
    return patch + tokens * stack_flops_per_token(cfg, tokens) * blocks / cfg.depth


def encoder_forward_flops(cfg: VitConfig | FusedVitConfig) -> float:
    """Every block of every tower (a contrastive model's image tower)."""
    towers = cfg.towers if isinstance(cfg, FusedVitConfig) else (cfg,)
    return sum(vit_forward_flops(t) for t in towers)


def encoder_feature_flops(cfg: VitConfig | FusedVitConfig) -> float:
    """As a VLM runs its towers: only up to the deepest feature layer (LLaVA's penultimate
    layer skips the last block; `VisionEncoder.features`)."""
    towers = cfg.towers if isinstance(cfg, FusedVitConfig) else (cfg,)
    return sum(
        vit_forward_flops(t, max(layer % (t.depth + 1) for layer in t.feature_layers))
        for t in towers
    )


def decoder_forward_flops(cfg, seq_len: int) -> float:
    """Forward FLOPs of one sequence of `seq_len` tokens, LM head included."""
    return seq_len * (stack_flops_per_token(cfg, seq_len / 2) + 2 * cfg.width * cfg.vocab_size)


@dataclasses.dataclass(frozen=True)
class StepFlops:
    encoder: float
    projector: float
    decoder: float

    @property
    def total(self) -> float:
        return self.encoder + self.projector + self.decoder


def vlm_train_flops(
    cfg: VLMConfig, batch: int, seq_len: int, trainable: dict[str, bool], images_per_row: int = 1
) -> StepFlops:
    """FLOPs of one training step on `batch` sequences of `seq_len` tokens with
    `images_per_row` images each (packed rows: every image slot is encoded, used or not)."""
    images = batch * images_per_row
    dims = projector_dims(cfg.projector, input_dim(cfg), cfg.decoder.width)
    projector = 2 * cfg.num_image_tokens * sum(a * b for a, b in zip(dims[:-1], dims[1:]))
    enc_mult = 3 if trainable.get("encoder") else 1
    proj_mult = 3 if trainable.get("projector") else (2 if trainable.get("encoder") else 1)
    upstream = trainable.get("encoder") or trainable.get("projector")
    dec_mult = 3 if trainable.get("decoder") else (2 if upstream else 1)
    return StepFlops(
        encoder=images * enc_mult * encoder_feature_flops(cfg.encoder),
        projector=images * proj_mult * projector,
        decoder=batch * dec_mult * decoder_forward_flops(cfg.decoder, seq_len),
    )


def qwen25_vision_flops(cfg: Qwen25VisionConfig) -> tuple[float, float]:
    """Forward FLOPs of one image at the tower's fixed_size: (patch embedding and blocks, the
    merger). Windowed blocks attend within their window (window_size**2 / patch_size**2
    patches, border windows counted whole), the full-attention ones over the image."""
    _, h, w = cfg.fixed_grid
    patches = h * w
    side = cfg.window_tokens
    window = patches if side is None else min(patches, (side * cfg.spatial_merge_size) ** 2)
    full = cfg.depth if side is None else len(cfg.fullatt_block_indexes)
    per_block = patches / cfg.depth  # stack_flops_per_token counts every block
    blocks = per_block * (
        full * stack_flops_per_token(cfg, patches)
        + (cfg.depth - full) * stack_flops_per_token(cfg, window)
    )
    merged = cfg.width * cfg.merge_unit
    merger = 2 * (patches // cfg.merge_unit) * (merged * merged + merged * cfg.out_dim)
    return 2 * patches * cfg.patch_dim * cfg.width + blocks, merger


def qwen25_vl_train_flops(
    cfg: Qwen25VLConfig, batch: int, seq_len: int, trainable: dict[str, bool]
) -> StepFlops:
    """As `vlm_train_flops`, one fixed-size image per row; the merger is the projector."""
    tower, merger = qwen25_vision_flops(cfg.encoder)
    enc_mult = 3 if trainable.get("encoder") else 1
    proj_mult = 3 if trainable.get("projector") else (2 if trainable.get("encoder") else 1)
    upstream = trainable.get("encoder") or trainable.get("projector")
    dec_mult = 3 if trainable.get("decoder") else (2 if upstream else 1)
    return StepFlops(
        encoder=batch * enc_mult * tower,
        projector=batch * proj_mult * merger,
        decoder=batch * dec_mult * decoder_forward_flops(cfg.decoder, seq_len),
    )


def lm_train_flops(cfg, batch: int, seq_len: int) -> float:
    return 3 * batch * decoder_forward_flops(cfg, seq_len)


def peak_flops(device_kind: str, override: float | None = None) -> float | None:
    """Peak FLOP/s of one device, or None when unknown (MFU is then not reported)."""
    if override:
        return float(override)
    for prefix, value in PEAK_FLOPS.items():
        if device_kind.startswith(prefix):
            return value
    return None
