"""What an evaluation feeds each kind of VLM (fgjax/evaluate/image_inputs.py): the default
size of any-resolution models, InternVL's tiles at one size, and the errors of an image_size
a model cannot take.
tests/hf/test_hf_protocol_scores.py checks the scores of every family against transformers."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from fgjax.data import internvl
from fgjax.evaluate import image_inputs
from fgjax.models import presets
from fgjax.models.llava_next import LlavaNextConfig


def test_any_resolution_images_default_to_a_two_by_two_grid():
    cfg = LlavaNextConfig()  # 32 px tiles, pinpoints up to 64 x 64
    images = image_inputs.for_model(cfg)
    photo = np.random.default_rng(0).integers(0, 256, (50, 90, 3), dtype=np.uint8)
    tiles = images.preprocess(photo)
    layout = cfg.layout(64, 64)
    assert layout.grid == (2, 2) and tiles.shape == (layout.num_tiles, 32, 32, 3)
    assert images.num_image_tokens == cfg.image_token_count(64, 64)
    assert images.to_model(tiles[None]).image_sizes == ((64, 64),)


def test_image_size_of_a_fixed_resolution_model_is_an_error():
    cfg = presets.vlm("tiny_clip", "tiny_llama")
    with pytest.raises(ValueError, match="image_size=64: a VLMConfig takes images at its tower"):
        image_inputs.for_model(cfg, image_size=64)


@pytest.mark.parametrize("size,tiles", [(None, 5), (32, 1), (96, 10)])
def test_internvl_images_are_tiled_at_one_size(size, tiles):
    """InternVL: a square image gives a k x k grid plus the thumbnail (k = 1: one tile alone);
    the default size is two tiles a side (2 x 2 + thumbnail). The tiles are those of the image
    squashed to that size; the prompt holds every tile's tokens."""
    cfg = presets.tiny_internvl()  # 32 px tiles of 16 tokens
    images = image_inputs.for_model(cfg, image_size=size)
    photo = np.random.default_rng(0).integers(0, 256, (50, 90, 3), dtype=np.uint8)
    pixels = images.preprocess(photo)
    assert pixels.shape == (tiles, 32, 32, 3) and pixels.dtype == np.float32
    side = size or 64
    square = np.asarray(Image.fromarray(photo).resize((side, side), Image.Resampling.BICUBIC))
    np.testing.assert_array_equal(pixels, internvl.tile_image(square, cfg))
    assert images.num_image_tokens == tiles * 16 and images.image_layout == "internvl"
