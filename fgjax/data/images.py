"""Image preprocessing for the vision towers: decode, resize, crop or letterbox, normalize.

What this matches, exactly (tests/data/test_images.py checks it to 1e-5, in practice bit for
bit): the PIL backend of transformers 5.24's image processors -- `CLIPImageProcessorPil`,
`SiglipImageProcessorPil`, `LlavaImageProcessorPil` (`do_pad=True`) and
`BitImageProcessorPil` (DINOv2). That is the class `AutoImageProcessor` and
`CLIPImageProcessor(...)` give in an environment without torchvision (fgjax's), and it is
the preprocessing the original CLIP / LLaVA / Prismatic models were trained with (PIL
bicubic on uint8 images). Their steps are:

  1. convert to RGB; transparent images are composited onto white;
  2. letterbox only: pad to a square with `int(255 * mean)` per channel, image centred;
  3. resize with PIL (`Image.resize`, bicubic, on the uint8 image): to S x S, or the shortest
     side to R with the long side `int(R * long / short)`;
  4. centre crop to S x S (top = (H - S) // 2);
  5. float64 `x * (1/255)` cast to float32, then float32 `(x - mean) / std`.

We run steps 1-4 with the same PIL calls on the same uint8 pixels, and step 5 as a 256-entry
lookup table per channel computed with exactly that arithmetic, so the output is identical.

The torchvision backend (`CLIPImageProcessor` when torchvision is installed) resizes with
`torch.nn.functional.interpolate(uint8, bicubic, antialias=True)` instead. That kernel
approximates PIL: measured on photo-like images it differs by 1-2 grey levels on <1% of the
pixels, and when one axis is downscaled while the other is upscaled (a 300x200 image to
224x224) on ~27% of them by up to 8 levels (0.12 after CLIP normalization). That is far beyond
1e-5, so one implementation cannot match both backends; we match the PIL one.

Layout: images are NHWC float32 (a single image HWC). A fused encoder's config is a tuple of
per-tower configs, and preprocessing returns a tuple of arrays (one normalized copy per tower);
towers with the same geometry share one decode and one resize.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import functools
import io
from collections.abc import Sequence
from typing import Any

import numpy as np
from PIL import Image

OPENAI_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
SIGLIP_MEAN = (0.5, 0.5, 0.5)
SIGLIP_STD = (0.5, 0.5, 0.5)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

MODES = ("resize_naive", "letterbox", "resize_crop")
RESAMPLE = {
    "nearest": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "lanczos": Image.Resampling.LANCZOS,
}
RESCALE_FACTOR = 1 / 255

# Per ViT family: (mean, std, default mode), as the HF image processors of the released models.
FAMILY_DEFAULTS = {
    "clip": (OPENAI_CLIP_MEAN, OPENAI_CLIP_STD, "resize_crop"),
    "siglip": (SIGLIP_MEAN, SIGLIP_STD, "resize_naive"),
    "dinov2": (IMAGENET_MEAN, IMAGENET_STD, "resize_crop"),
    "dinov3": (IMAGENET_MEAN, IMAGENET_STD, "resize_naive"),
    # InternViT: each 448 x 448 tile squashed (fgjax/data/internvl.py tiles the image first)
    "internvl": (IMAGENET_MEAN, IMAGENET_STD, "resize_naive"),
}
# DINOv2's HF processor resizes the shortest side to 256 and crops 224 (crop fraction 0.875).
DINOV2_CROP_FRACTION = 0.875
# DINOv3's squashes to S x S, bilinear (its eval transform). Its HF processor is torchvision
# only (it resizes float pixels with antialias); we resize the uint8 image with PIL, as the
# PIL processors do, which can differ by a grey level (see the module docstring).
DINOV3_RESAMPLE = "bilinear"


@dataclasses.dataclass(frozen=True)
class PreprocessConfig:
    """How one vision tower wants its images.

    size: output height = width S. mode: "resize_naive" (squash to S x S, SigLIP),
    "letterbox" (pad to square with the mean colour, then S x S; LLaVA-1.5),
    "resize_crop" (shortest side to `resize_size`, then centre crop S x S; CLIP, DINOv2).
    resize_size: resize_crop only; None means S. resample: a key of RESAMPLE.
    """

    size: int
    mode: str = "resize_crop"
    mean: tuple[float, float, float] = OPENAI_CLIP_MEAN
    std: tuple[float, float, float] = OPENAI_CLIP_STD
    resample: str = "bicubic"
    resize_size: int | None = None

    def __post_init__(self):
        if self.mode not in MODES:
            raise ValueError(f"preprocessing mode {self.mode!r} is unknown; choose one of {MODES}")
        if self.resample not in RESAMPLE:
            raise ValueError(f"resample={self.resample!r}; choose one of {tuple(RESAMPLE)}")
        if self.size < 1:
            raise ValueError(f"size={self.size} must be positive")
        if len(self.mean) != 3 or len(self.std) != 3 or min(self.std) <= 0:
            raise ValueError(f"mean {self.mean} and std {self.std} need 3 values, std > 0")
        if self.resize_size is not None:
            if self.mode != "resize_crop":
                raise ValueError(
                    f"resize_size only applies to mode 'resize_crop', not {self.mode!r}"
                )
            if self.resize_size < self.size:
                raise ValueError(
                    f"resize_size={self.resize_size} is smaller than the crop size={self.size}; "
                    "the crop would need padding -- use resize_size >= size"
                )

    @property
    def shortest_side(self) -> int:
        """resize_crop: the shortest side after resizing, before the crop."""
        return self.resize_size or self.size

    @property
    def fill(self) -> tuple[int, int, int]:
        """The letterbox colour: int(255 * mean) per channel (truncated, as LLaVA and HF do)."""
        return tuple(int(m * 255) for m in self.mean)

    @property
    def geometry(self) -> tuple:
        """Everything that decides the uint8 pixels before normalization."""
        fill = self.fill if self.mode == "letterbox" else None
        return (self.mode, self.size, self.shortest_side, self.resample, fill)


Configs = PreprocessConfig | Sequence[PreprocessConfig]


def preprocess_config_for(vit_cfg: Any, mode: str | None = None, **overrides) -> Configs:
    """The preprocessing a `VitConfig` (or `FusedVitConfig`) expects, at its input resolution.

    mode None takes the family's HF default (CLIP/DINOv2 "resize_crop", SigLIP/DINOv3
    "resize_naive"; DINOv2 resizes the shortest side to size/0.875 first, 256 for 224; DINOv3
    resamples bilinearly, the others bicubically). A fused encoder gets one config per
    tower, all with the same mode (None means "resize_naive", Prismatic's default) because
    its towers' patch features are concatenated position by position. `overrides` replace
    fields (e.g. `resize_size=224`).
    """
    towers = getattr(vit_cfg, "towers", None)
    if towers is not None:
        fused_mode = mode or "resize_naive"
        return tuple(preprocess_config_for(t, mode=fused_mode, **overrides) for t in towers)
    if vit_cfg.family not in FAMILY_DEFAULTS:
        raise ValueError(f"no preprocessing defaults for ViT family {vit_cfg.family!r}")
    mean, std, default_mode = FAMILY_DEFAULTS[vit_cfg.family]
    mode = mode or default_mode
    size = vit_cfg.resolution
    resize_size = None
    if vit_cfg.family == "dinov2" and mode == "resize_crop":
        resize_size = int(size / DINOV2_CROP_FRACTION)
    fields = dict(size=size, mode=mode, mean=mean, std=std, resize_size=resize_size)
    if vit_cfg.family == "dinov3":
        fields["resample"] = DINOV3_RESAMPLE
    if getattr(vit_cfg, "resample", None):  # the model's own (VitConfig.resample)
        fields["resample"] = vit_cfg.resample
    return PreprocessConfig(**{**fields, **overrides})


# -- decoding ----------------------------------------------------------------------------------


def to_rgb_image(image: Any, draft_size: int | None = None) -> Image.Image:
    """A PIL RGB image from encoded bytes, a PIL image or a uint8 array (HW, HWC with C 1/3/4).

    Transparency is composited onto white (as transformers' `convert_to_rgb`). draft_size:
    for JPEG bytes, let libjpeg decode at a reduced scale (1/2, 1/4, 1/8) that keeps both sides
    >= draft_size -- several times faster on large photos, but no longer identical to HF.
    """
    if isinstance(image, (bytes, bytearray, memoryview)):
        image = Image.open(io.BytesIO(image))
        if draft_size is not None and image.format == "JPEG":
            image.draft("RGB", (draft_size, draft_size))
    elif isinstance(image, np.ndarray):
        if image.dtype != np.uint8:
            raise TypeError(
                f"image arrays must be uint8 (got {image.dtype}); scale to 0..255 first"
            )
        if image.ndim == 3 and image.shape[-1] == 1:
            image = image[..., 0]
        if image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[-1] not in (3, 4)):
            raise ValueError(f"image array must be HW, HWC with C in (1, 3, 4); got {image.shape}")
        image = Image.fromarray(image)
    elif not isinstance(image, Image.Image):
        raise TypeError(f"cannot read an image from a {type(image).__name__}")
    if "A" in image.getbands() or image.info.get("transparency") is not None:
        rgba = image.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return image.convert("RGB")


# -- geometry: uint8 in, uint8 S x S out --------------------------------------------------------


def resize_shortest_side_size(height: int, width: int, shortest: int) -> tuple[int, int]:
    """(new_height, new_width) with the shortest side = `shortest`, long side truncated (HF)."""
    if width <= height:
        return int(shortest * height / width), shortest
    return shortest, int(shortest * width / height)


def letterbox(image: Image.Image, fill: tuple[int, int, int]) -> Image.Image:
    """Pads to a square of the longer side with `fill`, the image centred (offset floored)."""
    width, height = image.size
    if width == height:
        return image
    side = max(width, height)
    square = Image.new("RGB", (side, side), fill)
    square.paste(image, ((side - width) // 2, (side - height) // 2))
    return square


def apply_geometry(image: Image.Image, cfg: PreprocessConfig) -> np.ndarray:
    """Pad / resize / crop an RGB PIL image. Returns uint8[S, S, 3] (possibly a view)."""
    resample = RESAMPLE[cfg.resample]
    size = cfg.size
    if cfg.mode == "letterbox":
        image = letterbox(image, cfg.fill)
    if cfg.mode in ("resize_naive", "letterbox"):
        if image.size != (size, size):
            image = image.resize((size, size), resample=resample)
        return np.asarray(image)
    height, width = image.height, image.width
    new_height, new_width = resize_shortest_side_size(height, width, cfg.shortest_side)
    if (new_height, new_width) != (height, width):
        image = image.resize((new_width, new_height), resample=resample)
    pixels = np.asarray(image)
    if new_height < size or new_width < size:
        raise ValueError(f"image resized to {new_height}x{new_width} cannot be cropped to {size}")
    top, left = (new_height - size) // 2, (new_width - size) // 2
    return pixels[top : top + size, left : left + size]


# -- normalization: a lookup table per channel --------------------------------------------------


@functools.lru_cache(maxsize=64)
def normalize_table(mean: tuple[float, ...], std: tuple[float, ...]) -> np.ndarray:
    """float32[3, 256]: the normalized value of each uint8 level, per channel.

    Computed with transformers' arithmetic: float64 rescale by 1/255, cast to float32, then
    float32 (x - mean) / std.
    """
    levels = (np.arange(256, dtype=np.float64) * RESCALE_FACTOR).astype(np.float32)
    mean32, std32 = np.asarray(mean, np.float32), np.asarray(std, np.float32)
    table = (levels[None, :] - mean32[:, None]) / std32[:, None]
    table.setflags(write=False)
    return table


def normalize(pixels: np.ndarray, cfg: PreprocessConfig, out: np.ndarray | None = None):
    """uint8[..., H, W, 3] -> float32[..., H, W, 3] with the config's mean and std."""
    if pixels.dtype != np.uint8 or pixels.shape[-1] != 3:
        raise ValueError(
            f"normalize expects uint8[..., 3] pixels, got {pixels.dtype}{pixels.shape}"
        )
    table = normalize_table(tuple(cfg.mean), tuple(cfg.std))
    if out is None:
        out = np.empty(pixels.shape, np.float32)
    for channel in range(3):  # one gather per channel: ~3x faster than float arithmetic
        out[..., channel] = table[channel][pixels[..., channel]]
    return out


# -- the public entry points --------------------------------------------------------------------


def _as_tuple(config: Configs) -> tuple[tuple[PreprocessConfig, ...], bool]:
    if isinstance(config, PreprocessConfig):
        return (config,), False
    configs = tuple(config)
    if not configs or not all(isinstance(c, PreprocessConfig) for c in configs):
        raise TypeError("config must be a PreprocessConfig or a non-empty sequence of them")
    return configs, True


def _draft_size(configs: Sequence[PreprocessConfig]) -> int:
    return max(c.shortest_side if c.mode == "resize_crop" else c.size for c in configs)


def _already_in_shape(image: Any, cfg: PreprocessConfig) -> bool:
    """True for a uint8[S, S, 3] array that the config's geometry would leave as it is (every
    mode: no padding, no resize, a crop of the whole): the in-memory datasets' images."""
    return (
        isinstance(image, np.ndarray)
        and image.dtype == np.uint8
        and image.shape == (cfg.size, cfg.size, 3)
        and cfg.shortest_side == cfg.size
    )


def preprocess_into(image: Any, configs: Sequence[PreprocessConfig], outs, jpeg_draft=False):
    """Preprocesses one image into preallocated float32[S, S, 3] arrays, one per config."""
    if all(_already_in_shape(image, cfg) for cfg in configs):
        # the same pixels as the PIL round trip below, without it: 0.030 ms per 32-px image
        # against 0.068 (the miniature study's and the in-memory datasets' images)
        for cfg, out in zip(configs, outs, strict=True):
            normalize(image, cfg, out=out)
        return
    rgb = to_rgb_image(image, _draft_size(configs) if jpeg_draft else None)
    shared: dict[tuple, np.ndarray] = {}
    for cfg, out in zip(configs, outs, strict=True):
        if cfg.geometry not in shared:
            shared[cfg.geometry] = apply_geometry(rgb, cfg)
        normalize(shared[cfg.geometry], cfg, out=out)


def preprocess(image: Any, config: Configs, *, jpeg_draft: bool = False):
    """One image -> float32[S, S, 3] normalized; a tuple of arrays for a tuple of configs.

    image: encoded bytes (JPEG, PNG, ...), a PIL image, or a uint8 array (HW / HWC).
    jpeg_draft: decode large JPEGs at reduced scale first (faster, not identical to HF).
    """
    configs, is_tuple = _as_tuple(config)
    outs = tuple(np.empty((c.size, c.size, 3), np.float32) for c in configs)
    preprocess_into(image, configs, outs, jpeg_draft=jpeg_draft)
    return outs if is_tuple else outs[0]


def preprocess_batch(
    images: Sequence[Any], config: Configs, *, num_threads: int = 1, jpeg_draft: bool = False
):
    """A list of images -> float32[B, S, S, 3]; a tuple of such batches for a tuple of configs.

    Images may differ in size and kind. num_threads > 1 spreads the images over a thread pool
    (PIL decodes and resizes without holding the GIL).
    """
    configs, is_tuple = _as_tuple(config)
    outs = tuple(np.empty((len(images), c.size, c.size, 3), np.float32) for c in configs)

    def one(index: int) -> None:
        preprocess_into(images[index], configs, [out[index] for out in outs], jpeg_draft=jpeg_draft)

    if num_threads <= 1 or len(images) <= 1:
        for index in range(len(images)):
            one(index)
    else:
        with concurrent.futures.ThreadPoolExecutor(num_threads) as pool:
            list(pool.map(one, range(len(images))))  # list() re-raises worker errors
    return outs if is_tuple else outs[0]


# -- transformers interop -----------------------------------------------------------------------

_HF_PROCESSOR_FOR_MODE = {
    "resize_crop": "CLIPImageProcessor",
    "resize_naive": "SiglipImageProcessor",
    "letterbox": "LlavaImageProcessor",
}


def hf_preprocessor_config(cfg: PreprocessConfig) -> dict:
    """A `preprocessor_config.json` dict with which transformers reproduces `cfg` exactly."""
    out = {
        "image_processor_type": _HF_PROCESSOR_FOR_MODE[cfg.mode],
        "do_convert_rgb": True,
        "do_resize": True,
        "resample": int(RESAMPLE[cfg.resample]),
        "do_rescale": True,
        "rescale_factor": RESCALE_FACTOR,
        "do_normalize": True,
        "image_mean": list(cfg.mean),
        "image_std": list(cfg.std),
    }
    if cfg.mode == "resize_crop":
        out.update(
            size={"shortest_edge": cfg.shortest_side},
            do_center_crop=True,
            crop_size={"height": cfg.size, "width": cfg.size},
        )
    elif cfg.mode == "letterbox":
        # The LLaVA processor pads, then resizes the (now square) shortest side and crops.
        out.update(
            do_pad=True,
            size={"shortest_edge": cfg.size},
            do_center_crop=True,
            crop_size={"height": cfg.size, "width": cfg.size},
        )
    else:
        out.update(size={"height": cfg.size, "width": cfg.size}, do_center_crop=False)
    return out
