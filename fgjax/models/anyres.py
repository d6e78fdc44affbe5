"""Any-resolution tiling (LLaVA-NeXT, LLaVA-OneVision): its geometry, in plain Python.

An image of original size (height, width) is resized, aspect kept, into the best of the
`pinpoints` resolutions (transformers' `select_best_resolution`), zero-padded to it and cut
into T x T tiles (T: the tower's input size), after a base tile: the whole image squashed to
T x T. Each tile gives a side x side feature grid (side = T // patch). The tiles' grids are
joined into one (rows * side) x (columns * side) grid, the rows or columns that only saw the
padding are cut away ("unpad"), OneVision then shrinks a grid larger than about `max_tiles`
tiles bilinearly, and a learned newline embedding ends every row. The decoder sees the base
tile's features, then that grid row after row:

    tokens = side**2 + kept_rows * (kept_columns + 1)

Everything here depends only on the original size, so it is static when a model is traced:
`TileLayout` tells the model what to cut and how many image tokens the prompt needs.
"""

from __future__ import annotations

import functools
import math
from typing import NamedTuple

import numpy as np


def select_best_resolution(height: int, width: int, pinpoints) -> tuple[int, int]:
    """The (height, width) among `pinpoints` that keeps the most of the image's pixels when
    it is resized into it (aspect kept), the least wasted area breaking ties; the first such
    one wins (transformers' `select_best_resolution`, exactly)."""
    best, best_effective, best_wasted = None, 0, float("inf")
    for target_h, target_w in pinpoints:
        scale = min(target_w / width, target_h / height)
        effective = min(int(width * scale) * int(height * scale), width * height)
        wasted = target_w * target_h - effective
        if effective > best_effective or (effective == best_effective and wasted < best_wasted):
            best, best_effective, best_wasted = (target_h, target_w), effective, wasted
    return best


def resized_size(height: int, width: int, target: tuple[int, int]) -> tuple[int, int]:
    """The size the image is resized to inside `target` (h, w), aspect kept, the short side
    rounded up (transformers' `get_patch_output_size`)."""
    target_h, target_w = target
    scale_w, scale_h = target_w / width, target_h / height
    if scale_w < scale_h:
        return min(math.ceil(height * scale_w), target_h), target_w
    return target_h, min(math.ceil(width * scale_h), target_w)


class TileLayout(NamedTuple):
    """How one image is tiled and packed.

    grid: (rows, columns) of tiles after the base tile; (0, 0) for a base tile alone
      (OneVision's images in multi-image rows).
    rows, cols: the [start, stop) range of the joined (rows * side) x (columns * side) feature
      grid that is kept (unpadding).
    pooled: OneVision's bilinear output size of the kept grid, or None (kept as is).
    num_tokens: image tokens in the prompt (the newline embeddings included).
    """

    grid: tuple[int, int]
    rows: tuple[int, int]
    cols: tuple[int, int]
    pooled: tuple[int, int] | None
    num_tokens: int

    @property
    def num_tiles(self) -> int:
        """Tower inputs of the image: the base tile, then the grid row by row."""
        return 1 + self.grid[0] * self.grid[1]

    @property
    def packed_size(self) -> tuple[int, int]:
        """(rows, columns) of the packed feature grid before the newlines are appended."""
        if self.pooled is not None:
            return self.pooled
        return self.rows[1] - self.rows[0], self.cols[1] - self.cols[0]


def tile_layout(
    height: int, width: int, *, pinpoints, tile: int, side: int, max_tiles: int | None,
    tiled: bool = True,
) -> TileLayout:  # fmt: skip
    """The TileLayout of an image of original size (height, width): tiles of `tile` pixels
    with side x side features each, `pinpoints` the (h, w) resolutions to choose from,
    `max_tiles` OneVision's "anyres_max_N" (None: LLaVA-NeXT, no shrinking). tiled=False: the
    base tile alone, then one newline (OneVision's multi-image rows)."""
    base = side * side
    if not tiled:
        return TileLayout((0, 0), (0, 0), (0, 0), None, base + 1)
    best_h, best_w = select_best_resolution(height, width, pinpoints)
    grid = (best_h // tile, best_w // tile)
    cur_h, cur_w = grid[0] * side, grid[1] * side
    rows, cols = (0, cur_h), (0, cur_w)
    # transformers' unpad_image: the same float expressions, so the same rounding
    if width / height > cur_w / cur_h:
        new_h = int(round(height * (cur_w / width), 7))
        pad = (cur_h - new_h) // 2
        rows = (pad, cur_h - pad)
    else:
        new_w = int(round(width * (cur_h / height), 7))
        pad = (cur_w - new_w) // 2
        cols = (pad, cur_w - pad)
    kept_h, kept_w = rows[1] - rows[0], cols[1] - cols[0]
    pooled = None
    if max_tiles is not None:
        ratio = math.sqrt(kept_h * kept_w / (max_tiles * side**2))
        if ratio > 1.1:
            pooled = (int(kept_h // ratio), int(kept_w // ratio))
    out_h, out_w = pooled or (kept_h, kept_w)
    return TileLayout(grid, rows, cols, pooled, base + out_h * (out_w + 1))


@functools.lru_cache(maxsize=256)
def bilinear_matrix(in_size: int, out_size: int) -> np.ndarray:
    """The [out, in] float64 weights of torch's 1-D bilinear resampling with
    align_corners=False and no antialiasing (`F.interpolate(mode="bilinear")` given a size):
    source x = (o + 0.5) * in / out - 0.5, clamped at 0, between its two neighbours."""
    scale = in_size / out_size
    weights = np.zeros((out_size, in_size))
    for o in range(out_size):
        src = max((o + 0.5) * scale - 0.5, 0.0)
        low = min(int(src), in_size - 1)
        high = min(low + 1, in_size - 1)
        frac = src - low
        weights[o, low] += 1.0 - frac
        weights[o, high] += frac
    weights.setflags(write=False)
    return weights
