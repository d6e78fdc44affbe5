"""Any-resolution tiling of images for LLaVA-NeXT / LLaVA-OneVision
(fgjax/models/llava_next.py), as transformers 5.24's PIL processors do it
(`LlavaNextImageProcessorPil`, `LlavaOnevisionImageProcessorPil`; tests/hf/test_hf_llava_next.py
checks the output is theirs to 1e-6):

  1. convert to RGB (fgjax.data.images.to_rgb_image);
  2. pick the best pinpoint resolution (fgjax.models.anyres.select_best_resolution), resize
     the uint8 image into it with PIL, aspect kept (short side rounded up), and zero-pad it
     to that resolution, centred (the odd pixel after);
  3. cut it into T x T tiles, row after row, after a base tile: the whole image squashed to
     T x T;
  4. normalize every tile with the tower's mean and std (fgjax.data.images.normalize).

OneVision's images in multi-image rows (tiled=False) are a base tile alone: the image padded
to a square with the mean colour, then resized to T x T (fgjax.data.images' "letterbox").
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from fgjax.data import images as image_ops
from fgjax.models.anyres import resized_size, select_best_resolution
from fgjax.models.llava_next import AnyresImages, LlavaNextConfig


def tile_config(cfg: LlavaNextConfig, **overrides) -> image_ops.PreprocessConfig:
    """The per-tile preprocessing of the model's tower: its family's mean, std and
    resampling at its input size (`overrides` replace fields, e.g. the mean and std of a
    processor that differs)."""
    return image_ops.preprocess_config_for(cfg.encoder, mode="resize_naive", **overrides)


def tile_image(
    image: Any, cfg: LlavaNextConfig, *, tiled: bool = True,
    preprocess: image_ops.PreprocessConfig | None = None,
) -> tuple[np.ndarray, tuple[int, int]]:  # fmt: skip
    """One image (bytes, PIL image or uint8 array) -> (its tiles f32[P, T, T, 3], base tile
    first; its original (height, width)), P = cfg.layout(height, width, tiled).num_tiles."""
    preprocess = preprocess or tile_config(cfg)
    size, resample = preprocess.size, image_ops.RESAMPLE[preprocess.resample]
    rgb = image_ops.to_rgb_image(image)
    height, width = rgb.height, rgb.width
    if not tiled:
        square = image_ops.letterbox(rgb, preprocess.fill)
        base = np.asarray(square.resize((size, size), resample=resample))
        return image_ops.normalize(base[None], preprocess), (height, width)
    best_h, best_w = select_best_resolution(height, width, cfg.image_grid_pinpoints)
    new_h, new_w = resized_size(height, width, (best_h, best_w))
    canvas = np.zeros((best_h, best_w, 3), np.uint8)
    top, left = (best_h - new_h) // 2, (best_w - new_w) // 2
    canvas[top : top + new_h, left : left + new_w] = rgb.resize((new_w, new_h), resample=resample)
    tiles = [np.asarray(rgb.resize((size, size), resample=resample))]
    tiles += [
        canvas[i : i + size, j : j + size]
        for i in range(0, best_h, size)
        for j in range(0, best_w, size)
    ]
    return image_ops.normalize(np.stack(tiles), preprocess), (height, width)


def tile_batch(
    images: Sequence[Any], cfg: LlavaNextConfig, *, tiled: Sequence[bool] | None = None,
    preprocess: image_ops.PreprocessConfig | None = None,
) -> AnyresImages:  # fmt: skip
    """Images -> AnyresImages with pixel_values f32[I, P, T, T, 3], every image's tiles
    followed by zero tiles up to the most tiles of the batch (the processor's do_pad)."""
    flags = tuple(tiled) if tiled is not None else (True,) * len(images)
    results = [tile_image(im, cfg, tiled=t, preprocess=preprocess) for im, t in zip(images, flags)]
    most = max(len(tiles) for tiles, _ in results)
    pixels = np.zeros((len(results), most, *results[0][0].shape[1:]), np.float32)
    for i, (tiles, _) in enumerate(results):
        pixels[i, : len(tiles)] = tiles
    return AnyresImages(pixels, tuple(s for _, s in results), None if tiled is None else flags)
