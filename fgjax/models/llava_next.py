"""LLaVA-NeXT and LLaVA-OneVision (transformers' `LlavaNextForConditionalGeneration`,
`LlavaOnevisionForConditionalGeneration`): a LLaVA whose images are tiled at any
resolution (fgjax/models/anyres.py), with a learned `image_newline` embedding ending each row
of the packed feature grid.

Per image, the tower encodes the base tile and the grid tiles as one batch, the projector
maps every tile's features, and `pack_features` joins the grid tiles' features, cuts the
padding away, shrinks large grids (OneVision: bilinear, `max_tiles`) and appends the newline
to every row, after the base tile's features. The k-th image token of the batch (row-major,
as transformers' masked_scatter) receives the k-th packed feature of all images in order.

Images are passed as `AnyresImages(pixel_values, image_sizes)`: the tiles (the processor's
`pixel_values`, NHWC) and each image's original (height, width) as a static tuple, the part
of the tree structure a jitted function compiles for. The number of image tokens of an image
is `cfg.image_token_count(height, width)` (plain Python, no tracing), the count the prompt
must hold. A jitted function compiles once per combination of image sizes and prompt length,
so evaluation should bucket sizes: resize every image beforehand to one of a few fixed sizes,
batch images of one size together and pad prompts to a few fixed lengths. The natural buckets
are the pinpoints themselves: an image resized to its best pinpoint resolution
(`anyres.select_best_resolution`) is tiled at that resolution with nothing to unpad, so there
are at most len(image_grid_pinpoints) layouts (5 for LLaVA-NeXT, 36 for OneVision), at the
price of stretching its aspect ratio to the pinpoint's. Unbucketed images are exact but cost
one compilation per distinct size.

Videos (OneVision's `video_token_id`, frames pooled 2 x 2) are not supported: their tokens
would be read as text.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from fgjax.models import presets
from fgjax.models.anyres import TileLayout, bilinear_matrix, tile_layout
from fgjax.models.config import (
    ProjectorConfig,
    RopeConfig,
    VitConfig,
    VLMConfig,
    _check,
    register_config_type,
)
from fgjax.models.layers import param
from fgjax.models.vlm import VLM

_TINY_PINPOINTS = ((32, 64), (64, 32), (64, 64))


@register_config_type
@dataclasses.dataclass(frozen=True)
class LlavaNextConfig(VLMConfig):
    """A VLMConfig with any-resolution tiling. `image_grid_pinpoints`: the (height, width)
    resolutions an image may be tiled at, multiples of the tower's input size;
    `max_tiles`: OneVision's "anyres_max_N" (a packed grid above ~N tiles of features is
    shrunk bilinearly), None for LLaVA-NeXT; `video_token_id`: OneVision's <video> (kept for
    export; videos are not supported). Defaults: a tiny model (`llava_next_mistral_7b` and
    `llava_onevision_qwen2_7b` below are the real ones)."""

    image_grid_pinpoints: tuple[tuple[int, int], ...] = _TINY_PINPOINTS
    max_tiles: int | None = None
    video_token_id: int | None = None

    def __post_init__(self):  # hashable, whatever the source (JSON lists, numpy)
        points = tuple(tuple(int(v) for v in p) for p in self.image_grid_pinpoints)
        object.__setattr__(self, "image_grid_pinpoints", points)

    @property
    def num_image_tokens(self) -> int:
        raise ValueError(
            "an any-resolution VLM has no fixed number of image tokens: it depends on each "
            "image's size, use cfg.image_token_count(height, width)"
        )

    @property
    def tile_side(self) -> int:
        """Features per tile side (the tower's input size // patch size)."""
        return self.encoder.resolution // self.encoder.patch_size

    def layout(self, height: int, width: int, tiled: bool = True) -> TileLayout:
        """The TileLayout of an image of original size (height, width); tiled=False: its base
        tile alone (OneVision's images in multi-image rows)."""
        return tile_layout(
            int(height), int(width), pinpoints=self.image_grid_pinpoints,
            tile=self.encoder.resolution, side=self.tile_side, max_tiles=self.max_tiles,
            tiled=tiled,
        )  # fmt: skip

    def image_token_count(self, height: int, width: int, tiled: bool = True) -> int:
        """Image tokens of an image of original size (height, width) in the prompt."""
        return self.layout(height, width, tiled).num_tokens

    def validate(self) -> None:
        super().validate()
        enc = self.encoder
        _check(isinstance(enc, VitConfig), "any-resolution tiling needs one tower, not a fused one")
        _check(
            self.projector.kind != "gemma3",
            "the gemma3 projector pools a fixed grid; any-resolution tiling packs its own",
        )
        _check(
            enc.num_features == self.tile_side**2,
            f"each tile must give a {self.tile_side} x {self.tile_side} patch grid, but the "
            f"tower hands {enc.num_features} features: set keep_prefix=False (transformers' "
            "'default' strategy drops the CLS)",
        )
        tile = enc.resolution
        _check(
            len(self.image_grid_pinpoints) > 0
            and all(
                len(p) == 2 and min(p) > 0 and p[0] % tile == 0 and p[1] % tile == 0
                for p in self.image_grid_pinpoints
            ),
            f"image_grid_pinpoints {self.image_grid_pinpoints} must be (height, width) pairs, "
            f"positive multiples of the tower's input size {tile}",
        )
        _check(self.max_tiles is None or self.max_tiles >= 1, f"max_tiles={self.max_tiles}")
        _check(
            self.image_layout == "inline" and self.image_attention == "causal",
            "LLaVA-NeXT / OneVision place image tokens inline with causal attention",
        )
        _check(
            self.video_token_id is None or 0 <= self.video_token_id < self.decoder.vocab_size,
            f"video_token_id={self.video_token_id} is outside the vocabulary",
        )


@functools.partial(
    jax.tree_util.register_dataclass, data_fields=["pixel_values"],
    meta_fields=["image_sizes", "tiled"],
)  # fmt: skip
@dataclasses.dataclass(frozen=True)
class AnyresImages:
    """The images of one call.

    pixel_values: f32[I, P, T, T, C] (the processor's layout in NHWC: each image's base tile,
      then its grid tiles, zero tiles padding every image to P) or f32[N, T, T, C] (every
      image's tiles, concatenated).
    image_sizes: each image's original (height, width), static.
    tiled: per image, False for a base tile alone (OneVision's multi-image rows, see
      `tiled_for`); None: every image tiled.
    """

    pixel_values: jax.Array
    image_sizes: tuple[tuple[int, int], ...]
    tiled: tuple[bool, ...] | None = None

    def __post_init__(self):  # hashable static fields: the tree structure jit compiles for
        sizes = tuple(tuple(int(v) for v in s) for s in np.asarray(self.image_sizes).reshape(-1, 2))
        object.__setattr__(self, "image_sizes", sizes)
        if self.tiled is not None:
            object.__setattr__(self, "tiled", tuple(bool(t) for t in self.tiled))

    @staticmethod
    def tiled_for(batch_num_images) -> tuple[bool, ...]:
        """OneVision's rule from the images per row (transformers' batch_num_images): the
        images of a row with one image are tiled, those of rows with several are not."""
        return tuple(n == 1 for n in batch_num_images for _ in range(n))

    def layouts(self, cfg: LlavaNextConfig) -> list[TileLayout]:
        tiled = self.tiled or (True,) * len(self.image_sizes)
        if len(tiled) != len(self.image_sizes):
            raise ValueError(f"{len(tiled)} tiled flags for {len(self.image_sizes)} images")
        return [cfg.layout(h, w, t) for (h, w), t in zip(self.image_sizes, tiled)]

    def tiles(self, layouts: list[TileLayout]) -> jax.Array:
        """f32[N, T, T, C]: every image's tiles, in order, without the padding tiles."""
        x, counts = self.pixel_values, [layout.num_tiles for layout in layouts]
        if x.ndim == 5:
            if x.shape[0] != len(layouts) or x.shape[1] < max(counts):
                raise ValueError(
                    f"pixel_values {x.shape} do not hold {len(layouts)} images of up to "
                    f"{max(counts)} tiles (their sizes {self.image_sizes} ask for {counts})"
                )
            parts = [x[i, :n] for i, n in enumerate(counts)]
            return jnp.concatenate(parts) if len(parts) > 1 else parts[0]
        if x.ndim != 4 or x.shape[0] != sum(counts):
            raise ValueError(
                f"pixel_values {x.shape}: expected [images, tiles, T, T, C] or "
                f"[{sum(counts)}, T, T, C] (the tiles of images of sizes {self.image_sizes})"
            )
        return x


def pack_features(feats: jax.Array, layout: TileLayout, newline: jax.Array, side: int):
    """One image's projected tile features f32[tiles, side * side, D] -> its image tokens
    [layout.num_tokens, D]: the base tile's features, then the joined grid (unpadded, shrunk
    for OneVision) row after row, each row ended by `newline` [D] (transformers'
    pack_image_features)."""
    base, dim = feats[0], feats.shape[-1]
    if layout.grid == (0, 0):
        return jnp.concatenate([base, newline[None].astype(base.dtype)])
    rows, cols = layout.grid
    grid = feats[1:].reshape(rows, cols, side, side, dim).transpose(0, 2, 1, 3, 4)
    grid = grid.reshape(rows * side, cols * side, dim)
    grid = grid[layout.rows[0] : layout.rows[1], layout.cols[0] : layout.cols[1]]
    if layout.pooled is not None:
        out_h, out_w = layout.pooled
        wh = jnp.asarray(bilinear_matrix(grid.shape[0], out_h), grid.dtype)
        ww = jnp.asarray(bilinear_matrix(grid.shape[1], out_w), grid.dtype)
        hp = jax.lax.Precision.HIGHEST
        grid = jnp.einsum("oh,hwd->owd", wh, grid, precision=hp)
        grid = jnp.einsum("pw,owd->opd", ww, grid, precision=hp)
    ends = jnp.broadcast_to(newline.astype(grid.dtype), (grid.shape[0], 1, dim))
    grid = jnp.concatenate([grid, ends], axis=1).reshape(-1, dim)
    return jnp.concatenate([base, grid])


class LlavaNext(VLM):
    """LLaVA-NeXT / OneVision: VLM's encoder, projector and decoder, tiled images and the
    row-end `image_newline` [D]."""

    def __init__(self, cfg: LlavaNextConfig, *, rngs: nnx.Rngs):
        super().__init__(cfg, rngs=rngs)
        width = cfg.decoder.width
        init = nnx.initializers.normal(width**-0.5)  # transformers' 1 / sqrt(hidden_size)
        self.image_newline = param(rngs, init, (width,), cfg.decoder.params_dtype, ("embed",))

    def image_features(self, images: AnyresImages, *, stop_gradient: bool = False) -> jax.Array:
        """[M, D] in the decoder's compute dtype: the image tokens of every image, in order
        (M = the sum of cfg.image_token_count over the images)."""
        layouts = images.layouts(self.cfg)
        feats = self.encoder.features(images.tiles(layouts))
        if stop_gradient:
            feats = jax.lax.stop_gradient(feats)
        feats = self.projector(feats.astype(self.cfg.decoder.compute_dtype))
        newline, side = self.image_newline[...], self.cfg.tile_side
        packed, start = [], 0
        for layout in layouts:
            packed.append(pack_features(feats[start : start + layout.num_tiles], layout,
                                        newline, side))  # fmt: skip
            start += layout.num_tiles
        return jnp.concatenate(packed) if len(packed) > 1 else packed[0]

    def embed(
        self, tokens: jax.Array, images: AnyresImages | None = None, *,
        stop_encoder_gradient: bool = False, image_features: jax.Array | None = None,
    ) -> jax.Array:  # fmt: skip
        """tokens: i32[B, T] -> [B, T, D]; the k-th image token of the batch (row-major)
        receives the k-th image feature ([M, D] from `image_features`, or computed here)."""
        text = self.decoder.embed(tokens)
        if images is None and image_features is None:
            return text
        if image_features is None:
            image_features = self.image_features(images, stop_gradient=stop_encoder_gradient)
        is_image = tokens == self.cfg.image_token_id
        rank = jnp.cumsum(is_image.reshape(-1)).reshape(tokens.shape) - 1
        rank = jnp.clip(rank, 0, image_features.shape[0] - 1)
        return jnp.where(is_image[..., None], image_features.astype(text.dtype)[rank], text)


# -- real sizes --------------------------------------------------------------------------------

LLAVA_NEXT_PINPOINTS = ((336, 672), (672, 336), (672, 672), (1008, 336), (336, 1008))
# OneVision's: every (h, w) of 1 to 6 tiles of 384 px a side, h outer
ONEVISION_PINPOINTS = tuple((384 * i, 384 * j) for i in range(1, 7) for j in range(1, 7))


def llava_next_mistral_7b(**decoder_overrides) -> LlavaNextConfig:
    """llava-hf/llava-v1.6-mistral-7b-hf: CLIP ViT-L/14-336 (hidden_states[-2], CLS dropped),
    mlp2x_gelu, Mistral-7B-Instruct-v0.2 (RoPE base 1e6, no sliding window) with <image> =
    32000 in a vocabulary padded to 32064; tiles of 336 px, up to 2 x 2 or 1 x 3."""
    text = presets.decoder(
        "mistral7b", vocab_size=32064, rope=RopeConfig(theta=1e6), sliding_window=None,
        **decoder_overrides,
    )  # fmt: skip
    return LlavaNextConfig(
        encoder=presets.encoder("clip_l336"),
        projector=ProjectorConfig.from_name("mlp2x_gelu"),
        decoder=text,
        image_token_id=32000,
        image_grid_pinpoints=LLAVA_NEXT_PINPOINTS,
    )


def llava_onevision_qwen2_7b(**decoder_overrides) -> LlavaNextConfig:
    """llava-hf/llava-onevision-qwen2-7b-ov-hf: SigLIP So400m/14-384 without its last block
    and head (26 blocks, hidden_states[-1]), mlp2x_gelu, Qwen2-7B-Instruct with <image> =
    151646 and <video> = 151647 in a vocabulary padded to 152128; tiles of 384 px in grids up
    to 6 x 6, packed grids above 9 tiles shrunk ("anyres_max_9")."""
    text = presets.decoder(
        "qwen2_7b", vocab_size=152128, max_positions=32768, bos_token_id=151643,
        eos_token_id=151645, **decoder_overrides,
    )  # fmt: skip
    tower = presets.encoder("siglip_so400m384", depth=26, pool=None, feature_layer=-1)
    return LlavaNextConfig(
        encoder=tower,
        projector=ProjectorConfig.from_name("mlp2x_gelu"),
        decoder=text,
        image_token_id=151646,
        image_grid_pinpoints=ONEVISION_PINPOINTS,
        max_tiles=9,
        video_token_id=151647,
    )
