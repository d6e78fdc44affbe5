"""Vision towers: one ViT implementation whose flags give SigLIP, CLIP, DINOv2 and DINOv3,
plus a fused encoder that concatenates several towers' patch features (Prismatic).

Inputs are NHWC float32 images already normalized by the tower's preprocessing.
Outputs follow transformers: `hidden_states[0]` is the embedding output (after CLIP's
pre-norm), `hidden_states[i]` the output of block i (never post-normed), and
`last_hidden_state` is post-normed for SigLIP and DINOv2/3 but not for CLIP. DINOv3 has no
position table: its queries and keys are rotated by 2-D RoPE on the patch tokens only.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from fgjax.models.attention import Attention
from fgjax.models.config import FusedVitConfig, VitConfig
from fgjax.models.layers import Mlp, param, resize_bicubic
from fgjax.models.transformer import Stack, make_norm


class VitOutput(NamedTuple):
    last_hidden_state: jax.Array  # [B, P + N, D], P prefix (CLS, registers) and N patch tokens
    pooled: (
        jax.Array | None
    )  # [B, D]: MAP head (SigLIP), post-normed CLS (CLIP), normed CLS (DINOv2/3)
    hidden_states: tuple[jax.Array, ...]  # depth + 1 arrays [B, P + N, D], when requested


class MapHead(nnx.Module):
    """SigLIP's multihead attention pooling: a learned probe attends over the tokens."""

    def __init__(self, cfg: VitConfig, *, rngs: nnx.Rngs):
        self.probe = param(
            rngs,
            nnx.initializers.normal(0.02),
            (1, 1, cfg.width),
            cfg.params_dtype,
            (None, None, "embed"),
        )
        self.attn = Attention(cfg, rngs=rngs)
        self.norm = make_norm(cfg, rngs)
        self.mlp = Mlp(
            cfg.width, cfg.mlp_dim, kind="plain", act=cfg.act, bias=True,
            dtype=cfg.compute_dtype, param_dtype=cfg.params_dtype, rngs=rngs,
        )  # fmt: skip

    def __call__(self, x: jax.Array) -> jax.Array:
        """x: [B, T, D] -> [B, D]."""
        probe = jnp.broadcast_to(self.probe[...].astype(x.dtype), (x.shape[0], 1, x.shape[-1]))
        y, _ = self.attn(probe, context=x)
        y = y + self.mlp(self.norm(y))
        return y[:, 0]


def patch_rope(cfg: VitConfig, grid_h: int, grid_w: int) -> tuple[jax.Array, jax.Array]:
    """DINOv3's 2-D RoPE for a grid_h x grid_w patch grid: (cos, sin), each [1, P + N, H] in
    the compute dtype (P prefix tokens, N = grid_h * grid_w patches, H = head_dim).

    As transformers' DINOv3ViTRopePositionEmbedding at inference, in float32: patch centres
    ((i + 0.5) / grid) mapped to [-1, 1] per axis, H/4 frequencies theta**(-4j/H), angles
    2 pi coord freq laid out [y freqs, x freqs] twice (rotate-half pairs dim j with j + H/2).
    The coordinates depend on the grid alone, so any input size works as it is. The prefix
    rows are cos 1, sin 0: `apply_rope` then returns those tokens exactly unrotated. Training
    augmentations of the coordinates (HF's pos_embed_shift/jitter/rescale) are not applied.
    """
    head_dim, num_prefix = cfg.dim_per_head, cfg.num_prefix_tokens
    # torch.arange(0, 1, 4 / H) in float32: steps computed in float64, then rounded
    exponent = (np.arange(head_dim // 4) * (4 / head_dim)).astype(np.float32)
    inv_freq = np.float32(1) / np.float32(cfg.rope.theta) ** exponent  # [H/4]
    ys = np.arange(0.5, grid_h, dtype=np.float32) / np.float32(grid_h)
    xs = np.arange(0.5, grid_w, dtype=np.float32) / np.float32(grid_w)
    coords = np.stack(np.meshgrid(ys, xs, indexing="ij"), axis=-1).reshape(-1, 2)  # [N, (y, x)]
    coords = np.float32(2) * coords - np.float32(1)
    angles = np.float32(2 * math.pi) * coords[:, :, None] * inv_freq  # [N, 2, H/4]
    angles = np.tile(angles.reshape(len(coords), -1), 2)  # [N, H]
    cos = np.concatenate([np.ones((num_prefix, head_dim), np.float32), np.cos(angles)])
    sin = np.concatenate([np.zeros((num_prefix, head_dim), np.float32), np.sin(angles)])
    return tuple(jnp.asarray(t[None], cfg.compute_dtype) for t in (cos, sin))


class VisionEncoder(nnx.Module):
    """A ViT tower configured by `VitConfig` (see config.py for the flags)."""

    def __init__(self, cfg: VitConfig, *, rngs: nnx.Rngs):
        cfg.validate()
        self.cfg = cfg
        dtype, pdtype, width, p = cfg.compute_dtype, cfg.params_dtype, cfg.width, cfg.patch_size
        self.patch_embed = nnx.Conv(
            cfg.num_channels,
            width,
            kernel_size=(p, p),
            strides=(p, p),
            padding="VALID",
            use_bias=cfg.patch_bias,
            dtype=dtype,
            param_dtype=pdtype,
            kernel_metadata={"out_sharding": ("patch", "patch", "channels", "embed")},
            bias_metadata={"out_sharding": ("embed",)},
            rngs=rngs,
        )
        init = nnx.initializers.normal(0.02)
        if cfg.class_token:
            self.cls_token = param(rngs, init, (width,), pdtype, ("embed",))
        if cfg.num_registers:
            self.registers = param(rngs, init, (cfg.num_registers, width), pdtype, (None, "embed"))
        if cfg.mask_token:
            self.mask_token = param(rngs, nnx.initializers.zeros, (width,), pdtype, ("embed",))
        if cfg.rope is None:  # a learned position table (RoPE towers have none)
            num_positions = cfg.grid_size**2 + int(cfg.class_token)
            shape, axes = (num_positions, width), ("position", "embed")
            self.pos_embed = param(rngs, init, shape, pdtype, axes)
        if cfg.pre_norm:
            self.pre_norm = make_norm(cfg, rngs)
        self.stack = Stack(cfg, rngs=rngs)
        if cfg.post_norm:
            self.post_norm = make_norm(cfg, rngs)
        if cfg.pool == "map":
            self.head = MapHead(cfg, rngs=rngs)

    def embed(self, images: jax.Array) -> jax.Array:
        """images: f32[B, H, W, C] -> [B, P + N, D]; positions resampled if H, W differ from
        the configured size (bicubic in float32, as transformers does for DINOv2). RoPE
        towers add no positions here (see `rope_tables`)."""
        cfg = self.cfg
        x = self.patch_embed(images.astype(cfg.compute_dtype))
        batch, h, w, width = x.shape
        x = x.reshape(batch, h * w, width)
        cls_pos = None
        if cfg.rope is None:
            cls_pos, patch_pos = self._position_table(h, w)
            x = x + patch_pos.astype(x.dtype)
        prefix = []
        if cfg.class_token:
            cls = self.cls_token[...][None, :]
            prefix.append(cls if cls_pos is None else cls + cls_pos)
        if cfg.num_registers:
            prefix.append(self.registers[...])
        if prefix:
            prefix = jnp.concatenate(prefix).astype(x.dtype)
            x = jnp.concatenate([jnp.broadcast_to(prefix, (batch, *prefix.shape)), x], axis=1)
        if cfg.pre_norm:
            x = self.pre_norm(x)
        return x

    def _position_table(self, h: int, w: int) -> tuple[jax.Array | None, jax.Array]:
        """(CLS position [1, D] or None, patch positions [h * w, D]) of the learned table."""
        cfg = self.cfg
        pos = self.pos_embed[...]
        cls_pos, patch_pos = (pos[:1], pos[1:]) if cfg.class_token else (None, pos)
        if (h, w) != (cfg.grid_size, cfg.grid_size):
            grid = patch_pos.reshape(cfg.grid_size, cfg.grid_size, pos.shape[-1])
            grid = resize_bicubic(grid, (h, w), antialias=cfg.pos_interp == "bicubic_aa")
            patch_pos = grid.reshape(h * w, pos.shape[-1]).astype(pos.dtype)
        return cls_pos, patch_pos

    def rope_tables(self, images: jax.Array) -> tuple[jax.Array, jax.Array] | None:
        """The (cos, sin) tables of a RoPE tower for the size of `images` (else None)."""
        cfg = self.cfg
        if cfg.rope is None:
            return None
        return patch_rope(cfg, images.shape[1] // cfg.patch_size, images.shape[2] // cfg.patch_size)

    def __call__(self, images: jax.Array, *, return_hidden: bool = False) -> VitOutput:
        """images: f32[B, H, W, C] -> VitOutput (see the module docstring for semantics)."""
        x0 = self.embed(images)
        rope = self.rope_tables(images)
        x, hidden, _ = self.stack(x0, rope=rope, return_hidden=return_hidden)
        last = self.post_norm(x) if self.cfg.post_norm == "last" else x
        pooled = None
        if self.cfg.pool == "map":
            pooled = self.head(last)
        elif self.cfg.pool == "cls":
            pooled = self.post_norm(x[:, 0]) if self.cfg.post_norm == "pooled" else last[:, 0]
        return VitOutput(last, pooled, (x0, *hidden) if return_hidden else ())

    def features(self, images: jax.Array) -> jax.Array:
        """The image tokens a VLM consumes: hidden_states[feature_layer] (several layers are
        concatenated along channels; post-normed with `feature_norm`), prefix tokens dropped
        unless `keep_prefix`.

        images: f32[B, H, W, C] -> [B, N (+ P), D * len(feature_layers)]. Only the blocks up
        to the deepest selected layer run.
        """
        cfg = self.cfg
        layers = [layer % (cfg.depth + 1) for layer in cfg.feature_layers]
        x0 = self.embed(images)
        x, hidden, _ = self.stack(
            x0, rope=self.rope_tables(images), num_layers=max(layers), return_hidden=len(layers) > 1
        )
        states = (x0, *hidden) if len(layers) > 1 else {max(layers): x}
        selected = [states[i] for i in layers]
        if cfg.feature_norm:  # last_hidden_state (validate: the last layer alone)
            selected = [self.post_norm(selected[0])]
        if not cfg.keep_prefix:
            selected = [s[:, cfg.num_prefix_tokens :] for s in selected]
        return jnp.concatenate(selected, axis=-1) if len(selected) > 1 else selected[0]


class FusedVisionEncoder(nnx.Module):
    """Towers run on their own normalized copies of one image; features are concatenated
    along channels (Prismatic's DINOv2 + SigLIP)."""

    def __init__(self, cfg: FusedVitConfig, *, rngs: nnx.Rngs):
        cfg.validate()
        self.cfg = cfg
        self.towers = nnx.List([VisionEncoder(t, rngs=rngs) for t in cfg.towers])

    def features(self, images: tuple[jax.Array, ...]) -> jax.Array:
        """images: one f32[B, H, W, C] per tower -> [B, N, sum of tower feature dims]."""
        if not isinstance(images, (tuple, list)) or len(images) != len(self.towers):
            raise ValueError(
                f"a fused encoder takes a tuple of {len(self.towers)} images, one per tower"
            )
        return jnp.concatenate([t.features(im) for t, im in zip(self.towers, images)], axis=-1)


def build_encoder(
    cfg: VitConfig | FusedVitConfig, rngs: nnx.Rngs
) -> VisionEncoder | FusedVisionEncoder:
    if isinstance(cfg, FusedVitConfig):
        return FusedVisionEncoder(cfg, rngs=rngs)
    return VisionEncoder(cfg, rngs=rngs)
