"""Qwen3-VL (transformers' `Qwen3VLForConditionalGeneration`): Qwen2.5-VL's design
(qwen_vl.py, qwen_vision.py) with

  - a tower of LayerNorm blocks (with biases) and a GELU(tanh) MLP, 16 px patches embedded
    with a bias, no windowed attention (every block attends over its image), and a learned
    square table of absolute positions read bilinearly (align_corners) at each patch's place
    in its image's grid, added to the patch embeddings before the blocks (the 2-D RoPE of
    the Qwen2.5-VL tower stays);
  - DeepStack: the outputs of blocks `deepstack_indexes` go through mergers of their own
    (LayerNorm over the 4 concatenated patches, then the MLP) and are added to the decoder's
    hidden states at the image tokens after decoder blocks 0, 1, ... (one tapped block each);
  - a Qwen3 decoder (qk-norm) with interleaved M-RoPE (`RopeConfig.mrope_interleaved`: the
    rotary frequencies take turns t, h, w, t, h, w, ... instead of one section per axis).

Positions (`qwen_vl.mrope_positions`) are those of Qwen2.5-VL for images: transformers'
Qwen3-VL `get_rope_index` differs only for videos (each frame its own grid, after a
timestamp in the text), which fgjax does not support. Images are passed as
`qwen_vl.Qwen25Images(pixel_values, grid_thw)`, the grid static (one compilation per
combination of image grids; see qwen_vl.py on bucketing image sizes). The processor
(`Qwen3VLProcessor`, its image processor Qwen2VLImageProcessor with patch_size 16,
merge_size 2) picks each image's grid.

Axis legend: N patches of all images, M merged image tokens of all images, K DeepStack
taps, B batch, T tokens, D width, E out_dim (the decoder width).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from fgjax.models.config import DecoderConfig, RopeConfig, _check, register_config_type
from fgjax.models.decoder import DecoderOutput
from fgjax.models.layers import at_least_float32, param
from fgjax.models.qwen_vision import (
    PatchMerger,
    Qwen25VisionConfig,
    Qwen25VisionTower,
    WindowPlan,
    check_grid_thw,
    window_plan,
)
from fgjax.models.qwen_vl import (
    Qwen25Images,
    Qwen25VL,
    Qwen25VLConfig,
    mrope_positions,
    place_image_features,
)


@register_config_type
@dataclasses.dataclass(frozen=True)
class Qwen3VLVisionConfig(Qwen25VisionConfig):
    """The Qwen3-VL vision tower; defaults are a tiny tower (presets.qwen3_vl gives the real
    ones: width 1024, depth 24, taps (5, 11, 17) for 2B and 4B; 1152, 27, (8, 16, 24) for
    8B; 16 heads, a 48 x 48 position table).

    Input: f32[N, num_channels * temporal_patch_size * patch_size**2] patches and grid_thw;
    output: [1 + K, M, out_dim]: the merger's tokens, then each DeepStack merger's.
    """

    patch_size: int = 16
    window_size: int | None = None  # no windows: every block attends over its image
    fullatt_block_indexes: tuple[int, ...] = ()
    norm: str = "layernorm"
    mlp: str = "plain"
    act: str = "gelu_tanh"
    num_position_embeddings: int = 16  # a square table (HF num_position_embeddings)
    deepstack_indexes: tuple[int, ...] = (0,)  # blocks tapped for DeepStack (HF
    # deepstack_visual_indexes), increasing

    @property
    def position_grid(self) -> int:
        """Side of the learned position table."""
        return round(self.num_position_embeddings**0.5)

    def validate(self) -> None:
        super().validate()
        _check(self.window_size is None, "the Qwen3-VL tower has no windows: window_size=None")
        _check(
            self.position_grid**2 == self.num_position_embeddings,
            f"num_position_embeddings={self.num_position_embeddings} is not a square",
        )
        taps = self.deepstack_indexes
        _check(
            list(taps) == sorted(set(taps)) and all(0 <= i < self.depth for i in taps),
            f"deepstack_indexes={taps} must be increasing block indexes below depth={self.depth}",
        )


def position_taps(cfg: Qwen3VLVisionConfig, grid_thw) -> tuple[np.ndarray, np.ndarray]:
    """(rows int[N, 4], weights f32[N, 4]) into the flattened position table for every patch
    in the processor's order (merge units consecutive): the bilinear taps, align_corners=True,
    at the patch's (row, col) of its h x w grid, the same for every frame (transformers'
    get_vision_interpolation_indices_and_weights, its float32 arithmetic)."""
    side, m = cfg.position_grid, cfg.spatial_merge_size
    rows, weights = [], []
    for t, h, w in check_grid_thw(cfg, grid_thw):
        # each patch's (row, col), merge units consecutive (the processor's order)
        r, c = (
            a.reshape(h // m, m, w // m, m).transpose(0, 2, 1, 3).ravel()
            for a in np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
        )
        (ri, rw), (ci, cw) = _axis_taps(r, h, side), _axis_taps(c, w, side)
        rows.append(np.tile((ri[:, :, None] * side + ci[:, None, :]).reshape(-1, 4), (t, 1)))
        weights.append(np.tile((rw[:, :, None] * cw[:, None, :]).reshape(-1, 4), (t, 1)))
    return np.concatenate(rows), np.concatenate(weights)


def _axis_taps(index: np.ndarray, size: int, side: int) -> tuple[np.ndarray, np.ndarray]:
    """Linear interpolation along one axis of `side` table rows at `index` of `size`."""
    src = index.astype(np.float32) * np.float32(side - 1) / np.float32(max(size - 1, 1))
    floor = np.floor(src)
    offsets = np.arange(2)
    taps = np.clip(floor.astype(np.int64)[:, None] + offsets, 0, side - 1)
    weights = np.maximum(1 - np.abs(src[:, None] - floor[:, None] - offsets), 0)
    return taps, weights.astype(np.float32)


class Qwen3VLVisionTower(Qwen25VisionTower):
    """The Qwen3-VL vision tower: Qwen2.5-VL's without windows, plus a patch bias, the
    learned positions and the DeepStack mergers; see the module docstring.

    Usage under jit (grid_thw static, a tuple of (t, h, w) tuples):
        run = nnx.jit(lambda model, x, grid: model(x, grid), static_argnums=2)
    """

    def __init__(self, cfg: Qwen3VLVisionConfig, *, rngs: nnx.Rngs):
        super().__init__(cfg, rngs=rngs)
        pdtype = cfg.params_dtype
        self.patch_bias = param(rngs, nnx.initializers.zeros, (cfg.width,), pdtype, ("embed",))
        self.pos_embed = param(
            rngs, nnx.initializers.normal(0.02), (cfg.num_position_embeddings, cfg.width), pdtype,
            ("position", "embed"),
        )  # fmt: skip
        self.deepstack = nnx.List(
            [PatchMerger(cfg, postshuffle=True, rngs=rngs) for _ in cfg.deepstack_indexes]
        )

    def __call__(self, pixel_values: jax.Array, grid_thw) -> jax.Array:
        """pixel_values: f32[N, C * T * P * P], the processor's `pixel_values` of all images;
        grid_thw: [images, 3] static ints, its `image_grid_thw`. Returns [1 + K, M, E] in the
        compute dtype: transformers' `pooler_output`, then its `deepstack_features`, each the
        merged tokens of all images concatenated."""
        cfg = self.cfg
        return self.run(pixel_values, window_plan(cfg, grid_thw), position_taps(cfg, grid_thw))

    def run(self, pixel_values: jax.Array, plan: WindowPlan, taps) -> jax.Array:
        """The tower on an explicit layout (`window_plan`) and position taps (`position_taps`);
        f32[N, C*T*P*P] -> [1 + K, M, E]."""
        cfg = self.cfg
        if pixel_values.shape != (len(plan.order), cfg.patch_dim):
            raise ValueError(
                f"pixel_values has shape {pixel_values.shape}; grid_thw describes "
                f"{len(plan.order)} patches of {cfg.patch_dim} values"
            )
        dtype, acc = cfg.compute_dtype, at_least_float32(cfg.compute_dtype)
        kernel = self.patch_embed[...].reshape(cfg.patch_dim, cfg.width).astype(dtype)
        x = pixel_values[plan.order].astype(dtype) @ kernel + self.patch_bias[...].astype(dtype)
        rows, weights = (np.asarray(a)[plan.order] for a in taps)
        table = self.pos_embed[...].astype(acc)
        positions = jnp.einsum("NKD,NK->ND", table[rows], jnp.asarray(weights, acc))
        x = x + positions.astype(dtype)  # [N, D] in window order (= the processor's here)
        x, tapped = self._blocks(x[None], self._rope(plan.positions), plan, cfg.deepstack_indexes)
        merged = [self.merger(x[0])] + [m(y[0]) for m, y in zip(self.deepstack, tapped)]
        return jnp.stack(merged)[:, plan.restore]


_TINY_DECODER = DecoderConfig(
    family="qwen3", qk_norm=True, bos_token_id=None,
    rope=RopeConfig(mrope_section=(2, 3, 3), mrope_interleaved=True),
)  # fmt: skip


@register_config_type
@dataclasses.dataclass(frozen=True)
class Qwen3VLConfig(Qwen25VLConfig):
    """The Qwen3-VL tower, its Qwen3 decoder (with `rope.mrope_section` and
    `rope.mrope_interleaved`) and the special tokens; defaults are a tiny model
    (presets.qwen3_vl gives the real ones)."""

    encoder: Qwen3VLVisionConfig = Qwen3VLVisionConfig()
    decoder: DecoderConfig = _TINY_DECODER

    def validate(self) -> None:
        super().validate()
        taps = len(self.encoder.deepstack_indexes)
        _check(
            taps <= self.decoder.depth,
            f"{taps} DeepStack taps (encoder.deepstack_indexes) for a decoder of depth "
            f"{self.decoder.depth}: each is added after one decoder block",
        )


class Qwen3VL(Qwen25VL):
    """Qwen3-VL: tower -> merged tokens at the image-token positions -> interleaved-M-RoPE
    Qwen3 decoder, the DeepStack features added after its first blocks."""

    tower = Qwen3VLVisionTower  # image_features: [1 + K, M, D], the merged tokens of every
    # image (concatenated), then the K DeepStack features of the same tokens

    def embed(
        self, tokens: jax.Array, images: Qwen25Images | None = None, *,
        image_features: jax.Array | None = None,
    ) -> jax.Array:  # fmt: skip
        """tokens: i32[B, T] -> [B, T, D]; the k-th image token of the batch (row-major)
        receives the k-th merged image token (`image_features` [1 + K, M, D] replaces the
        tower's run; the DeepStack features are not part of the embeddings)."""
        if image_features is None and images is not None:
            image_features = self.image_features(images)
        if image_features is None:
            return self.decoder.embed(tokens)
        return super().embed(tokens, image_features=image_features[0])

    def __call__(
        self,
        tokens: jax.Array,
        images: Qwen25Images | None = None,
        *,
        image_features: jax.Array | None = None,
        positions: jax.Array | None = None,
        input_mask: jax.Array | None = None,
        **decoder_kwargs,
    ) -> DecoderOutput:
        """As `Qwen25VL.__call__`; `image_features` [1 + K, M, D] (from `image_features`;
        [1, M, D] runs without DeepStack) replaces the tower's run. The DeepStack features go
        to the decoder at the image tokens (zeros elsewhere) of this call."""
        if images is not None and not isinstance(images, Qwen25Images):
            raise TypeError(
                f"Qwen3-VL takes its images as qwen_vl.Qwen25Images (the processor's patches "
                f"and grids), not {type(images).__name__}: training on one fixed-size image "
                "per row is implemented for Qwen2.5-VL only"
            )
        if image_features is None and images is not None:
            image_features = self.image_features(images)
        embeds = self.embed(tokens, image_features=image_features)
        deepstack = None
        if image_features is not None and image_features.shape[0] > 1:
            is_image = tokens == self.cfg.image_token_id
            deepstack = place_image_features(is_image, image_features[1:], 0)  # [K, B, T, D]
        if positions is None and images is not None:
            positions, _ = mrope_positions(self.cfg, tokens, images.grid_thw, input_mask)
        return self.decoder(
            embeds=embeds, positions=positions, input_mask=input_mask, deepstack=deepstack,
            **decoder_kwargs,
        )  # fmt: skip
