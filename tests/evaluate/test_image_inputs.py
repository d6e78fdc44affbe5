"""What an evaluation feeds each kind of VLM (fgjax/evaluate/image_inputs.py): the default
size of any-resolution models, and the errors of an image_size a model cannot take.
tests/hf/test_hf_protocol_scores.py checks the scores of every family against transformers."""

from __future__ import annotations

import numpy as np
import pytest

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
