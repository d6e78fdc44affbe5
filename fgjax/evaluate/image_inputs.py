"""How an evaluation feeds images to each kind of VLM, and how many image tokens its prompts
hold for each image.

  fixed resolution (VLMConfig: LLaVA, Prismatic, Gemma 3, PaliGemma): the tower's
      preprocessing (fgjax.data.images, `mode`); images f32[B, S, S, 3] (a tuple per tower
      when fused); cfg.num_image_tokens per image.
  any resolution (LlavaNextConfig: LLaVA-NeXT, LLaVA-OneVision): every image first brought
      to `image_size` x `image_size` (`mode`, "resize_naive" by default: squashed, bicubic),
      then tiled as transformers' processors tile it (fgjax.data.anyres); images
      AnyresImages(f32[B, P, T, T, 3], image_sizes ((S, S),) * B); cfg.image_token_count(S, S)
      per image. One size for all images: one tile layout, one token count and one compiled
      shape for the whole evaluation (fgjax/models/llava_next.py on bucketing).
  native resolution (Qwen25VLConfig: Qwen2.5-VL, Qwen3-VL): every image brought to its
      tower's fixed_size (loading.load_vlm sets it to `image_size` for an HF directory) and
      cut into the processor's patch rows (fgjax.data.qwen_patches; Qwen3-VL's normalized
      with mean = std = 0.5, as its processor); images Qwen25Images(f32[B * N, C*T*P*P],
      grid_thw ((1, S / P, S / P),) * B); cfg.num_image_tokens per image, between
      <|vision_start|> and <|vision_end|>.
  tiled (VLMConfig with image_layout "internvl": InternVL): every image first brought to
      `image_size` x `image_size` (`mode`, "resize_naive" by default), then tiled as
      InternVLProcessor's GotOcr2 image processor tiles it (fgjax.data.internvl, its default
      1 to 12 tiles): a square gives a k x k grid of tiles plus the thumbnail (k = 1: the one
      tile alone), so every image has the same tiles; images f32[B, n, T, T, 3], n tiles x
      cfg.num_image_tokens per image between <img> and </img>.

`image_size` None: twice the tile side for any resolution (a 2 x 2 grid: 672 px for
LLaVA-NeXT, 768 for OneVision) and for InternVL (896 px: 2 x 2 tiles and the thumbnail, 5
tiles, 1280 image tokens; image_size 448 gives one tile, 256 tokens); a Qwen-VL needs one
unless its tower has a fixed_size.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import numpy as np

from fgjax.data import anyres, internvl, qwen_patches
from fgjax.data import images as image_ops
from fgjax.models.config import DecoderConfig, VLMConfig
from fgjax.models.llava_next import AnyresImages, LlavaNextConfig
from fgjax.models.qwen3_vl import Qwen3VLVisionConfig
from fgjax.models.qwen_vl import Qwen25Images, Qwen25VLConfig


@dataclasses.dataclass(frozen=True)
class ImageInput:
    """preprocess: a PreprocessConfig (a tuple of them for a fused encoder), or a function
    image (bytes, PIL image or uint8 array) -> the example's f32 array (DatasetRunner's);
    to_model: a batch's stacked arrays -> the model's `images` argument. The other fields are
    those ConversationEncoder.for_model reads from a VLMConfig: what each prompt holds."""

    preprocess: Any
    to_model: Callable[[Any], Any]
    image_token_id: int
    num_image_tokens: int
    image_layout: str
    image_boundary_ids: tuple[int, int] | None
    decoder: DecoderConfig


def _unchanged(images):
    return images


def for_model(cfg, *, mode: str | None = None, image_size: int | None = None) -> ImageInput:
    """The image input of a model config; `mode`: the image preprocessing mode (None: the
    tower's default); `image_size`: variable-resolution models only (the module docstring)."""
    if isinstance(cfg, LlavaNextConfig):
        return _any_resolution(cfg, mode, image_size)
    if isinstance(cfg, Qwen25VLConfig):
        return _native_resolution(cfg, mode, image_size)
    if isinstance(cfg, VLMConfig) and cfg.image_layout == "internvl":
        return _tiled(cfg, mode, image_size)
    if image_size is not None:
        raise ValueError(
            f"image_size={image_size}: a {type(cfg).__name__} takes images at its tower's own "
            "size; image_size is for variable-resolution models (LLaVA-NeXT, OneVision, "
            "Qwen2.5-VL, InternVL): remove it from the evaluation config"
        )
    if not isinstance(cfg, VLMConfig):
        raise ValueError(f"cannot evaluate a {type(cfg).__name__}: not a VLM")
    return ImageInput(
        image_ops.preprocess_config_for(cfg.encoder, mode=mode), _unchanged, cfg.image_token_id,
        cfg.num_image_tokens, cfg.image_layout, cfg.image_boundary_ids, cfg.decoder,
    )  # fmt: skip


def _any_resolution(cfg: LlavaNextConfig, mode, image_size) -> ImageInput:
    side = image_size or 2 * cfg.encoder.resolution
    tiles = anyres.tile_config(cfg)
    first = dataclasses.replace(tiles, size=side, mode=mode or "resize_naive", resize_size=None)

    def preprocess(image) -> np.ndarray:
        square = image_ops.apply_geometry(image_ops.to_rgb_image(image), first)
        return anyres.tile_image(square, cfg, preprocess=tiles)[0]  # f32[P, T, T, 3]

    def to_model(pixels) -> AnyresImages:  # every image of the batch S x S
        return AnyresImages(pixels, ((side, side),) * pixels.shape[0])

    return ImageInput(
        preprocess, to_model, cfg.image_token_id, cfg.image_token_count(side, side),
        cfg.image_layout, cfg.image_boundary_ids, cfg.decoder,
    )  # fmt: skip


def _native_resolution(cfg: Qwen25VLConfig, mode, image_size) -> ImageInput:
    if cfg.encoder.fixed_size is None:
        raise ValueError(
            f"a {type(cfg).__name__} is evaluated at one image size: set image_size in the "
            "evaluation config (a multiple of patch_size * spatial_merge_size, e.g. 448)"
        )
    if image_size is not None and image_size != cfg.encoder.fixed_size:
        raise ValueError(
            f"image_size={image_size} but the model's tower is at fixed_size="
            f"{cfg.encoder.fixed_size}: drop image_size to use the model's"
        )
    patches = qwen_patches.patch_config_for(cfg.encoder, mode)
    if isinstance(cfg.encoder, Qwen3VLVisionConfig):  # its processor's mean and std: 0.5
        patches = dataclasses.replace(patches, mean=image_ops.SIGLIP_MEAN, std=image_ops.SIGLIP_STD)

    def to_model(pixels) -> Qwen25Images:  # f32[B, N, D] -> every image's patches, one grid each
        return Qwen25Images(pixels.reshape(-1, pixels.shape[-1]), (patches.grid,) * len(pixels))

    return ImageInput(
        lambda image: qwen_patches.preprocess(image, patches), to_model, cfg.image_token_id,
        cfg.num_image_tokens, cfg.image_layout, cfg.image_boundary_ids, cfg.decoder,
    )  # fmt: skip


def _tiled(cfg: VLMConfig, mode, image_size) -> ImageInput:
    tiles = internvl.tile_config(cfg)
    side = image_size or 2 * tiles.size
    first = dataclasses.replace(tiles, size=side, mode=mode or "resize_naive", resize_size=None)
    count = internvl.num_tiles(side, side, tiles.size)

    def preprocess(image) -> np.ndarray:  # f32[count, T, T, 3]
        square = image_ops.apply_geometry(image_ops.to_rgb_image(image), first)
        return internvl.tile_image(square, cfg, preprocess=tiles)

    return ImageInput(
        preprocess, _unchanged, cfg.image_token_id, count * cfg.num_image_tokens,
        cfg.image_layout, cfg.image_boundary_ids, cfg.decoder,
    )  # fmt: skip
