"""InternVL's dynamic tiling (fgjax/hf/internvl.py), as transformers 5.24's
`GotOcr2ImageProcessorPil` does it for `InternVLProcessor` (crop_to_patches=True;
tests/hf/test_hf_internvl.py checks the output is the processor's to 1e-6):

  1. convert to RGB (fgjax.data.images.to_rgb_image);
  2. pick the grid of `columns x rows` tiles, min_tiles <= columns * rows <= max_tiles, whose
     aspect ratio is closest to the image's (`tile_grid`);
  3. resize the uint8 image with PIL to (rows * T, columns * T) and cut it into T x T tiles,
     row after row;
  4. with more than one tile, a thumbnail last: the whole image resized to T x T;
  5. normalize every tile with the tower's mean and std (fgjax.data.images.normalize).

Each tile is one image of the VLM, `cfg.num_image_tokens` tokens between the image's
`<img>` and `</img>` (InternVLProcessor writes `<img>`, tiles * num_image_tokens image tokens,
`</img>` for each image). `tile_rows` stacks the tiles of each row, in prompt order, into
f32[B, M, T, T, 3], zero tiles after a row's last (the VLM reads as many image features as
the row has image tokens, so they are never read).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from fgjax.data import images as image_ops
from fgjax.models.config import VLMConfig

# InternVLProcessor's defaults for its image processor (the published processor configs)
MIN_TILES, MAX_TILES = 1, 12


def tile_grid(
    height: int, width: int, tile: int, min_tiles: int = MIN_TILES, max_tiles: int = MAX_TILES
) -> tuple[int, int]:
    """(columns, rows) for an image of height x width: the grid whose columns / rows is
    closest to width / height; on a tie the one with more tiles while the image's area is
    more than half the grid's (transformers' get_optimal_tiled_canvas)."""
    grids = [
        (c, r)
        for c in range(1, max_tiles + 1)
        for r in range(1, max_tiles + 1)
        if min_tiles <= c * r <= max_tiles
    ]
    grids.sort(key=lambda g: g[0] * g[1])  # stable: the order transformers visits them in
    aspect, area = width / height, width * height
    best, best_diff = (1, 1), float("inf")
    for columns, rows in grids:
        diff = abs(aspect - columns / rows)
        if diff < best_diff:
            best, best_diff = (columns, rows), diff
        elif diff == best_diff and area > 0.5 * tile * tile * columns * rows:
            best = (columns, rows)
    return best


def num_tiles(
    height: int, width: int, tile: int, min_tiles: int = MIN_TILES, max_tiles: int = MAX_TILES
) -> int:
    """The tiles of one image: columns * rows, plus the thumbnail when that is more than 1
    (max_tiles 1: the image squashed to one tile)."""
    if max_tiles <= 1:
        return 1
    columns, rows = tile_grid(height, width, tile, min_tiles, max_tiles)
    return 1 if columns * rows == 1 else columns * rows + 1


def tile_config(cfg: VLMConfig, **overrides) -> image_ops.PreprocessConfig:
    """The per-tile preprocessing of the model's tower (its family's mean, std, bicubic
    resampling at its input size); `overrides` replace fields."""
    return image_ops.preprocess_config_for(cfg.encoder, mode="resize_naive", **overrides)


def tile_image(
    image: Any, cfg: VLMConfig, *, min_tiles: int = MIN_TILES, max_tiles: int = MAX_TILES,
    preprocess: image_ops.PreprocessConfig | None = None,
) -> np.ndarray:  # fmt: skip
    """One image (bytes, PIL image or uint8 array) -> its tiles f32[n, T, T, 3], row after
    row, the thumbnail last; n = num_tiles(height, width, T, min_tiles, max_tiles)."""
    preprocess = preprocess or tile_config(cfg)
    size, resample = preprocess.size, image_ops.RESAMPLE[preprocess.resample]
    rgb = image_ops.to_rgb_image(image)
    columns, rows = (1, 1)
    if max_tiles > 1:
        columns, rows = tile_grid(rgb.height, rgb.width, size, min_tiles, max_tiles)
    canvas = np.asarray(rgb.resize((columns * size, rows * size), resample=resample))
    tiles = [
        canvas[i : i + size, j : j + size]
        for i in range(0, rows * size, size)
        for j in range(0, columns * size, size)
    ]
    if len(tiles) > 1:
        tiles.append(np.asarray(rgb.resize((size, size), resample=resample)))
    return image_ops.normalize(np.stack(tiles), preprocess)


def tile_rows(rows: Sequence[Sequence[np.ndarray]]) -> np.ndarray:
    """Per row, the tiles of its images in prompt order (each f32[n, T, T, 3]) ->
    f32[B, M, T, T, 3], M the most tiles of a row, zero tiles after each row's last."""
    stacked = [np.concatenate(images) for images in rows]
    most = max(len(tiles) for tiles in stacked)
    out = np.zeros((len(stacked), most, *stacked[0].shape[1:]), np.float32)
    for b, tiles in enumerate(stacked):
        out[b, : len(tiles)] = tiles
    return out
