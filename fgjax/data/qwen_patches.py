"""Images as Qwen2.5-VL takes them at a fixed training size: resized to S x S, normalized and
cut into the flattened patch rows of transformers' `Qwen2VLImageProcessor`.

Fine-tuning Qwen2.5-VL usually resizes every image to one size (448 x 448: a 32 x 32 patch
grid, 256 tokens after the 2 x 2 merge), so that the grid, the number of image tokens and the
compiled shapes are static (`Qwen25VisionConfig.fixed_size`). The steps are those of the PIL
processor (`Qwen2VLImageProcessorPil`) given an image that is S x S already (its smart_resize
keeps a size that is a multiple of 28 and within its pixel budget):
  1. RGB, then the uint8 image to S x S with PIL (fgjax.data.images: "resize_naive" squashes,
     bicubic as the processor resizes; "letterbox" and "resize_crop" are also S x S);
  2. x / 255 in float64 cast to float32, then float32 (x - mean) / std, OpenAI CLIP's;
  3. each frame repeated temporal_patch_size times along time, and one row of C * T * P * P
     values (channel, time, row, column) per patch, the patches in merge-block order: the
     merged tokens row-major over the (S / (P * m))**2 grid, each token's m x m patches
     row-major -- the layout the tower's 3-D patch embedding and merger read.
tests/train/test_qwen25_vl_training.py checks the rows against the processor, bit for bit.

Axis legend: S image side, P patch side, m merge size, T temporal patch, N = (S / P)**2 patches.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from fgjax.data import images
from fgjax.models.qwen_vision import Qwen25VisionConfig


@dataclasses.dataclass(frozen=True)
class PatchConfig:
    """Fixed-size Qwen2.5-VL patches: images to size x size (`mode`, as images.PreprocessConfig),
    then the processor's patch rows f32[N, 3 * temporal_patch_size * patch_size**2]."""

    size: int
    patch_size: int = 14
    temporal_patch_size: int = 2
    merge_size: int = 2
    mode: str = "resize_naive"
    mean: tuple[float, float, float] = images.OPENAI_CLIP_MEAN
    std: tuple[float, float, float] = images.OPENAI_CLIP_STD
    resample: str = "bicubic"

    def __post_init__(self):
        unit = self.patch_size * self.merge_size
        if self.size < unit or self.size % unit:
            raise ValueError(
                f"size={self.size} must be a positive multiple of patch_size * merge_size = {unit}"
            )
        _ = self.image_config  # checks mode, mean, std and resample

    @property
    def image_config(self) -> images.PreprocessConfig:
        """The S x S geometry and normalization (fgjax.data.images)."""
        return images.PreprocessConfig(
            self.size, mode=self.mode, mean=self.mean, std=self.std, resample=self.resample
        )

    @property
    def grid(self) -> tuple[int, int, int]:
        """The processor's image_grid_thw row of one image: (1, S / P, S / P)."""
        side = self.size // self.patch_size
        return (1, side, side)

    @property
    def shape(self) -> tuple[int, int]:
        """(N patches, values per patch) of one image."""
        side = self.size // self.patch_size
        return side * side, 3 * self.temporal_patch_size * self.patch_size**2


def patch_config_for(cfg: Qwen25VisionConfig, mode: str | None = None) -> PatchConfig:
    """The patches a Qwen2.5-VL tower trained at `cfg.fixed_size` takes (mode None:
    "resize_naive")."""
    if cfg.fixed_size is None:
        raise ValueError(
            "this Qwen2.5-VL tower has no fixed_size: training needs one image size (a static "
            "patch grid); set it in config.model.encoder_overrides, e.g. {'fixed_size': 448}"
        )
    if cfg.num_channels != 3:
        raise ValueError(f"images have 3 channels; the tower takes num_channels={cfg.num_channels}")
    return PatchConfig(
        cfg.fixed_size, cfg.patch_size, cfg.temporal_patch_size, cfg.spatial_merge_size,
        mode=mode or "resize_naive",
    )  # fmt: skip


def patchify(pixels: np.ndarray, cfg: PatchConfig) -> np.ndarray:
    """f32[S, S, 3] normalized -> f32[N, 3 * T * P * P] in the processor's order."""
    p, m, t = cfg.patch_size, cfg.merge_size, cfg.temporal_patch_size
    side = pixels.shape[0] // (p * m)
    # [S, S, C] -> [C, S/(P m), m, P, S/(P m), m, P] -> (token row, token col, m, m, C, P, P)
    x = pixels.transpose(2, 0, 1).reshape(3, side, m, p, side, m, p).transpose(1, 4, 2, 5, 0, 3, 6)
    x = np.broadcast_to(x[:, :, :, :, :, None], (*x.shape[:5], t, p, p))  # the frame T times
    return np.ascontiguousarray(x).reshape(cfg.shape)


def preprocess(image: Any, cfg: PatchConfig) -> np.ndarray:
    """One image (encoded bytes, a PIL image or a uint8 array) -> f32[N, 3 * T * P * P]."""
    return patchify(images.preprocess(image, cfg.image_config), cfg)


def hf_preprocessor_config(cfg: PatchConfig) -> dict:
    """A preprocessor_config.json of Qwen2VLImageProcessor giving these patches for S x S
    images (its pixel budget S * S keeps them at that size; other sizes it resizes its own
    way: resize images to S x S first, as training did)."""
    return {
        "image_processor_type": "Qwen2VLImageProcessor",
        "do_convert_rgb": True,
        "do_resize": True,
        "resample": int(images.RESAMPLE[cfg.resample]),
        "size": {"shortest_edge": cfg.size**2, "longest_edge": cfg.size**2},
        "do_rescale": True,
        "rescale_factor": images.RESCALE_FACTOR,
        "do_normalize": True,
        "image_mean": list(cfg.mean),
        "image_std": list(cfg.std),
        "patch_size": cfg.patch_size,
        "temporal_patch_size": cfg.temporal_patch_size,
        "merge_size": cfg.merge_size,
    }
