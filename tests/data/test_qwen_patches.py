"""Qwen2.5-VL's fixed-size patches (fgjax/data/qwen_patches.py) against transformers'
Qwen2VLImageProcessor (its PIL backend): real photographs of other sizes and aspect ratios,
resized to S x S as fine-tuning does, give the processor's pixel_values and image_grid_thw
bit for bit, and its exported preprocessor_config.json loads as that processor."""

import json

import numpy as np
import pytest
import transformers as tf
from PIL import Image
from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

from fgjax.data import qwen_patches
from fgjax.models import presets
from tests.hf.vlm_testing import photos


@pytest.mark.parametrize("size", [448, 112])
def test_patches_are_the_processors(size):
    """Each photo resized with PIL bicubic to S x S, then the processor (whose smart_resize
    keeps S x S): the same rows as fgjax's, from the original photo, and a (1, S/14, S/14)
    grid."""
    cfg = qwen_patches.PatchConfig(size)
    processor = Qwen2VLImageProcessorPil(min_pixels=56 * 56, max_pixels=28 * 28 * 1280)
    for photo in photos():
        resized = Image.fromarray(photo).resize((size, size), Image.BICUBIC)
        theirs = processor(images=[resized], return_tensors="np")
        ours = qwen_patches.preprocess(photo, cfg)
        assert ours.shape == cfg.shape == theirs["pixel_values"].shape
        np.testing.assert_array_equal(ours, theirs["pixel_values"])
        assert tuple(theirs["image_grid_thw"][0]) == cfg.grid == (1, size // 14, size // 14)


def test_the_exported_processor_config_gives_the_same_patches(tmp_path):
    """preprocessor_config.json of the 7B preset's tower (448 px): AutoImageProcessor reads
    it, and on a 448 x 448 image gives fgjax's rows."""
    cfg = qwen_patches.patch_config_for(presets.whole_vlm("qwen25vl_7b").encoder)
    (tmp_path / "preprocessor_config.json").write_text(
        json.dumps(qwen_patches.hf_preprocessor_config(cfg))
    )
    processor = tf.AutoImageProcessor.from_pretrained(tmp_path)
    image = np.asarray(Image.fromarray(photos()[0]).resize((448, 448), Image.BICUBIC))
    theirs = processor(images=[image], return_tensors="np")["pixel_values"]
    np.testing.assert_array_equal(qwen_patches.preprocess(image, cfg), theirs)


def test_sizes_that_are_not_whole_merge_blocks_are_refused():
    with pytest.raises(ValueError, match="multiple of patch_size"):
        qwen_patches.PatchConfig(450)
    with pytest.raises(ValueError, match="fixed_size"):
        qwen_patches.patch_config_for(presets.qwen25_vl_7b().encoder)
