"""Qwen2.5-VL (transformers' `Qwen2_5_VLForConditionalGeneration`): the Qwen2.5-VL vision
tower (qwen_vision.py, its patch merger is the projector) and a Qwen2 decoder with
multimodal RoPE (M-RoPE, `RopeConfig.mrope_section`).

The prompt holds, for each image, `t * h * w / spatial_merge_size**2` copies of
`image_token_id` (the processor's expansion of `<|image_pad|>`, between
`<|vision_start|>` and `<|vision_end|>`); the tower's merged tokens of all images of the
batch, concatenated, replace them in row-major order (transformers' `masked_scatter`).

Positions (`mrope_positions`, transformers' `get_rope_index` for images): every token has
a (temporal, height, width) position. Text tokens advance all three together; the tokens of
an image get start + (frame, row, column) of their merged grid, and the text after it
continues at start + max(rows, columns). Decoding after such a prompt goes on after its
largest position: the decoder shifts 1-D text positions by the KV cache's `mrope_delta`
(transformers' `rope_deltas`), so fgjax.evaluate's cached scoring and greedy decoding work
unchanged. Videos (`video_token_id`, temporal positions spaced by `tokens_per_second`) are
not supported: their tokens would be read as text.

Images are passed as `Qwen25Images(pixel_values, grid_thw)`, a pytree whose grid is static
(part of the tree structure): a jitted function taking it compiles once per distinct
combination of image grids and prompt length. To bound the compilations, evaluation should
bucket image sizes: resize every image beforehand to one of a few fixed sizes (multiples of
patch_size * spatial_merge_size = 28 px, e.g. one per aspect-ratio bucket at a fixed pixel
budget; the processor's smart_resize then keeps them), put images of one bucket into one
batch (grid_thw = the bucket's grid repeated) and pad prompts to a few fixed lengths; the
number of compilations is then buckets x prompt lengths.

Training at one image size (`Qwen25VisionConfig.fixed_size`, e.g. 448 px: a 32 x 32 patch
grid, 256 merged tokens; fgjax/data/qwen_patches.py makes the patches) takes `images` as
f32[B, N, C*T*P*P], one image per row (a dummy for text-only rows, never read): the tower runs
the rows batched (`Qwen25VisionTower.run_rows`), row b's image tokens get row b's merged
tokens (as fgjax's VLM places them) and the positions are `row_positions`, per row.

Axis legend: B batch, T tokens, N patches of all images (of one image, per row), M merged
image tokens of all images (of one image, per row), D decoder width.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from fgjax.models.config import DecoderConfig, RopeConfig, _check, register_config_type
from fgjax.models.decoder import Decoder, DecoderOutput
from fgjax.models.qwen_vision import Qwen25VisionConfig, Qwen25VisionTower, check_grid_thw

_TINY_DECODER = DecoderConfig(
    family="qwen2", qkv_bias=True, rope=RopeConfig(mrope_section=(2, 3, 3)), bos_token_id=None
)


@register_config_type
@dataclasses.dataclass(frozen=True)
class Qwen25VLConfig:
    """The Qwen2.5-VL tower, its Qwen2 decoder (with `rope.mrope_section`) and the special
    tokens; defaults are a tiny model (presets.qwen25_vl_7b is the real one)."""

    encoder: Qwen25VisionConfig = Qwen25VisionConfig()
    decoder: DecoderConfig = _TINY_DECODER
    image_token_id: int = 250  # <|image_pad|>, one per merged image token
    video_token_id: int = 251  # <|video_pad|> (videos are not supported)
    vision_start_token_id: int = 252  # <|vision_start|>
    vision_end_token_id: int = 253  # <|vision_end|>
    tokens_per_second: int = 4  # video temporal spacing: kept for export, unused by fgjax

    # what fgjax.data.conversation needs of a model whose prompts it builds (a VLMConfig's
    # fields), for training at the tower's fixed_size
    image_layout = "qwen_vl"

    @property
    def image_boundary_ids(self) -> tuple[int, int]:
        """<|vision_start|>, <|vision_end|> around each image's tokens."""
        return (self.vision_start_token_id, self.vision_end_token_id)

    @property
    def num_image_tokens(self) -> int:
        """Merged tokens of one image at the tower's fixed_size."""
        t, h, w = self.encoder.fixed_grid
        return t * h * w // self.encoder.merge_unit

    def validate(self) -> None:
        self.encoder.validate()
        self.decoder.validate()
        _check(
            self.decoder.rope.mrope_section is not None,
            "a Qwen2.5-VL decoder needs multimodal RoPE: set decoder.rope.mrope_section",
        )
        _check(
            self.encoder.out_dim == self.decoder.width,
            f"encoder.out_dim={self.encoder.out_dim} must equal decoder.width="
            f"{self.decoder.width} (the merger feeds the decoder directly)",
        )
        ids = (self.image_token_id, self.video_token_id, self.vision_start_token_id,
               self.vision_end_token_id)  # fmt: skip
        _check(
            all(0 <= i < self.decoder.vocab_size for i in ids),
            f"special token ids {ids} must lie in the vocabulary ({self.decoder.vocab_size})",
        )


@functools.partial(
    jax.tree_util.register_dataclass, data_fields=["pixel_values"], meta_fields=["grid_thw"]
)
@dataclasses.dataclass(frozen=True)
class Qwen25Images:
    """The images of one call: the processor's `pixel_values` f32[N, C * T * P * P] (all
    images concatenated) and `image_grid_thw` as a static tuple of (t, h, w) tuples."""

    pixel_values: jax.Array
    grid_thw: tuple[tuple[int, int, int], ...]

    def __post_init__(self):  # a hashable grid: the tree structure jit compiles for
        grid = tuple(tuple(int(v) for v in row) for row in np.asarray(self.grid_thw).reshape(-1, 3))
        object.__setattr__(self, "grid_thw", grid)


def mrope_positions(
    cfg: Qwen25VLConfig, tokens: jax.Array, grid_thw, input_mask: jax.Array | None = None
) -> tuple[jax.Array, jax.Array]:
    """Positions of right-padded rows with images, as transformers' `get_rope_index`.

    tokens: i32[B, T] with each image's merged tokens as consecutive `image_token_id`s, the
    images in grid_thw order (row after row); grid_thw: static (t, h, w) patch grids;
    input_mask: bool[B, T], False for padding. Works under jit (tokens may be traced).
    Returns (positions i32[B, T, 3], 0 at padding; rope deltas i32[B], the largest position
    + 1 - the row's length).
    """
    m = cfg.encoder.spatial_merge_size
    grid = () if grid_thw is None or not len(grid_thw) else check_grid_thw(cfg.encoder, grid_thw)
    # per merged image token of the batch: its (frame, row, column), and how far the
    # position runs on after it (max(rows, columns) after an image's last token, else 0)
    coords, advance = [np.zeros((1, 3), np.int32)], [np.zeros(1, np.int32)]
    for t, h, w in grid:
        axes = np.meshgrid(np.arange(t), np.arange(h // m), np.arange(w // m), indexing="ij")
        coords.append(np.stack(axes, -1).reshape(-1, 3))
        advance.append(np.zeros(t * h * w // m**2, np.int32))
        advance[-1][-1] = max(h, w) // m
    coords, advance = np.concatenate(coords[1:] or coords), np.concatenate(advance[1:] or advance)
    mask = jnp.ones(tokens.shape, bool) if input_mask is None else input_mask
    is_image = (tokens == cfg.image_token_id) & mask
    rank = jnp.cumsum(is_image.reshape(-1)).reshape(tokens.shape) - 1  # row-major, as HF
    rank = jnp.clip(rank, 0, len(coords) - 1)
    step = jnp.where(is_image, jnp.asarray(advance)[rank], mask.astype(jnp.int32))
    start = jnp.cumsum(step, axis=1) - step  # the position the token's text or image starts at
    offset = jnp.where(is_image[..., None], jnp.asarray(coords)[rank], 0)
    positions = jnp.where(mask[..., None], start[..., None] + offset, 0).astype(jnp.int32)
    top = jnp.max(jnp.where(mask[..., None], positions, -1), axis=(1, 2))
    return positions, (top + 1 - mask.sum(axis=1)).astype(jnp.int32)


def row_positions(
    cfg: Qwen25VLConfig, tokens: jax.Array, input_mask: jax.Array | None = None
) -> jax.Array:
    """i32[B, T, 3]: `mrope_positions` of each row on its own, a row holding the tokens of at
    most one image at the tower's fixed_size (tokens i32[B, T]; input_mask bool[B, T])."""
    mask = jnp.ones(tokens.shape, bool) if input_mask is None else input_mask
    grid = (cfg.encoder.fixed_grid,)

    def one(row, real):
        return mrope_positions(cfg, row[None], grid, real[None])[0][0]

    return jax.vmap(one)(tokens, mask)


def place_image_features(is_image: jax.Array, features: jax.Array, fill) -> jax.Array:
    """is_image: bool[B, T] (the image tokens); features: [..., M, D], the batch's merged
    image tokens in order -> [..., B, T, D]: the k-th image token of the batch (row-major)
    gets features[..., k, :] (transformers' masked_scatter), other tokens `fill` ([B, T, D],
    or 0)."""
    rank = jnp.cumsum(is_image.reshape(-1)).reshape(is_image.shape) - 1
    rank = jnp.clip(rank, 0, features.shape[-2] - 1)
    dtype = features.dtype if isinstance(fill, (int, float)) else fill.dtype
    picked = jnp.take(features.astype(dtype), rank, axis=-2)  # [..., B, T, D]
    return jnp.where(is_image[..., None], picked, fill)


class Qwen25VL(nnx.Module):
    """Qwen2.5-VL: tower -> merged tokens at the image-token positions -> M-RoPE decoder."""

    tower = Qwen25VisionTower  # the vision tower's class (Qwen3-VL has its own)

    def __init__(self, cfg: Qwen25VLConfig, *, rngs: nnx.Rngs):
        cfg.validate()
        self.cfg = cfg
        self.encoder = self.tower(cfg.encoder, rngs=rngs)
        self.decoder = Decoder(cfg.decoder, rngs=rngs)

    def image_features(self, images: Qwen25Images) -> jax.Array:
        """[M, D] in the decoder's compute dtype: every image's merged tokens, concatenated."""
        feats = self.encoder(images.pixel_values, images.grid_thw)
        return feats.astype(self.cfg.decoder.compute_dtype)

    def embed(
        self, tokens: jax.Array, images: Qwen25Images | None = None, *,
        image_features: jax.Array | None = None,
    ) -> jax.Array:  # fmt: skip
        """tokens: i32[B, T] -> [B, T, D]; the k-th image token of the batch (row-major)
        receives the k-th merged image token (`image_features` replaces the tower's run)."""
        text = self.decoder.embed(tokens)
        if images is None and image_features is None:
            return text
        if image_features is None:
            image_features = self.image_features(images)
        return place_image_features(tokens == self.cfg.image_token_id, image_features, text)

    def __call__(
        self,
        tokens: jax.Array,
        images: Qwen25Images | jax.Array | None = None,
        *,
        image_features: jax.Array | None = None,
        positions: jax.Array | None = None,
        input_mask: jax.Array | None = None,
        stop_encoder_gradient: bool = False,
        **decoder_kwargs,
    ) -> DecoderOutput:
        """tokens: i32[B, T] right-padded (input_mask bool[B, T]); images: those of the
        batch (None: text only; also gives the grids when `image_features` [M, D] were
        computed already), or f32[B, N, C*T*P*P], one image per row at the tower's fixed_size
        (see the module docstring; `stop_encoder_gradient`: no backward pass into the tower's
        blocks). positions default to `mrope_positions` when there are images
        (the prompt: images go into an empty cache), else to the decoder's (text positions,
        after a cache shifted by its rope delta). Other keyword arguments (attn_mask, cache,
        return_hidden, return_logits) go to `Decoder.__call__`."""
        if images is not None and not isinstance(images, Qwen25Images):  # one image per row
            return self._call_rows(
                tokens, images, positions, input_mask, stop_encoder_gradient, decoder_kwargs
            )
        if stop_encoder_gradient:
            raise ValueError("stop_encoder_gradient takes images per row (f32[B, N, C*T*P*P])")
        embeds = self.embed(tokens, images, image_features=image_features)
        if positions is None and images is not None:
            positions, _ = mrope_positions(self.cfg, tokens, images.grid_thw, input_mask)
        return self.decoder(
            embeds=embeds, positions=positions, input_mask=input_mask, **decoder_kwargs
        )

    def _call_rows(self, tokens, pixels, positions, input_mask, stop_gradient, decoder_kwargs):
        """`__call__` with one fixed-size image per row (pixels f32[B, N, C*T*P*P])."""
        feats = self.encoder.run_rows(pixels, stop_gradient=stop_gradient)  # [B, M, D]
        feats = feats.astype(self.cfg.decoder.compute_dtype)
        text = self.decoder.embed(tokens)
        is_image = tokens == self.cfg.image_token_id
        index = jnp.clip(jnp.cumsum(is_image, axis=1) - 1, 0, feats.shape[1] - 1)
        picked = jnp.take_along_axis(feats.astype(text.dtype), index[..., None], axis=1)
        embeds = jnp.where(is_image[..., None], picked, text)
        if positions is None:
            positions = row_positions(self.cfg, tokens, input_mask)
        return self.decoder(
            embeds=embeds, positions=positions, input_mask=input_mask, **decoder_kwargs
        )
