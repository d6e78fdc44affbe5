"""Preprocessing parity with transformers' image processors (PIL backend, what
AutoImageProcessor gives without torchvision), input kinds, fused towers and batching."""

import io
import json

import numpy as np
import pytest
import transformers
from PIL import Image

from fgjax.data import images
from fgjax.models import presets

# Non-square, smaller and larger than the targets, one side tiny, one exactly square.
SIZES = [(37, 91), (500, 333), (120, 700), (1000, 17), (336, 336)]


def photo(height, width, seed=0):
    """A smooth field with texture: resampling errors show up as in real photos."""
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 256, (height // 8 + 2, width // 8 + 2, 3), dtype=np.uint8)
    field = np.asarray(Image.fromarray(coarse).resize((width, height), Image.BILINEAR))
    noisy = field.astype(np.int16) + rng.integers(-30, 31, field.shape)
    return Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8))


def hf_pixels(processor, image):
    """transformers' output as HWC float32."""
    out = processor(image, return_tensors="np")["pixel_values"][0]
    return out.transpose(1, 2, 0)


# (our config, the HF processor of the released checkpoint's preprocessor_config.json)
CASES = {
    "clip_l336": lambda: (
        images.preprocess_config_for(presets.encoder("clip_l336")),
        transformers.CLIPImageProcessorPil(
            size={"shortest_edge": 336}, crop_size={"height": 336, "width": 336}
        ),
    ),
    "siglip_so400m384": lambda: (
        images.preprocess_config_for(presets.encoder("siglip_so400m384")),
        transformers.SiglipImageProcessorPil(size={"height": 384, "width": 384}),
    ),
    "llava15_letterbox": lambda: (
        images.preprocess_config_for(presets.encoder("clip_l336"), mode="letterbox"),
        transformers.LlavaImageProcessorPil(
            do_pad=True, size={"shortest_edge": 336}, crop_size={"height": 336, "width": 336}
        ),
    ),
    "dinov2_224": lambda: (
        images.preprocess_config_for(presets.encoder("dinov2_l14_reg4")),
        transformers.BitImageProcessorPil(
            size={"shortest_edge": 256},
            crop_size={"height": 224, "width": 224},
            image_mean=[0.485, 0.456, 0.406],
            image_std=[0.229, 0.224, 0.225],
        ),
    ),
    "tiny_clip_32": lambda: (
        images.preprocess_config_for(presets.encoder("tiny_clip")),
        transformers.CLIPImageProcessorPil(
            size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}
        ),
    ),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_matches_transformers_processor(case):
    config, processor = CASES[case]()
    for index, (height, width) in enumerate(SIZES):
        image = photo(height, width, seed=index)
        ours = images.preprocess(image, config)
        ref = hf_pixels(processor, image)
        assert ours.shape == ref.shape == (config.size, config.size, 3)
        assert ours.dtype == np.float32
        np.testing.assert_allclose(ours, ref, atol=1e-5, rtol=0, err_msg=f"{case} {height}x{width}")


def test_default_processor_classes_are_the_pil_backend():
    """The names the brief and HF docs use resolve to what we match in this environment."""
    for name in ("CLIPImageProcessor", "SiglipImageProcessor", "LlavaImageProcessor"):
        assert getattr(transformers, name)().backend == "pil"


@pytest.mark.parametrize("mode", images.MODES)
def test_exported_preprocessor_config_loads_in_transformers(tmp_path, mode):
    config = images.PreprocessConfig(
        48, mode, images.IMAGENET_MEAN, images.IMAGENET_STD, resample="bicubic"
    )
    (tmp_path / "preprocessor_config.json").write_text(
        json.dumps(images.hf_preprocessor_config(config))
    )
    processor = transformers.AutoImageProcessor.from_pretrained(tmp_path)
    for index, (height, width) in enumerate(SIZES[:4]):
        image = photo(height, width, seed=10 + index)
        np.testing.assert_allclose(
            images.preprocess(image, config), hf_pixels(processor, image), atol=1e-5, rtol=0
        )


def test_encoded_and_array_inputs_match_pil_inputs():
    config = images.preprocess_config_for(presets.encoder("clip_l336"))
    processor = transformers.CLIPImageProcessorPil(
        size={"shortest_edge": 336}, crop_size={"height": 336, "width": 336}
    )
    image = photo(210, 380)
    for fmt in ("JPEG", "PNG"):
        buffer = io.BytesIO()
        image.save(buffer, format=fmt)
        data = buffer.getvalue()
        ref = hf_pixels(processor, Image.open(io.BytesIO(data)))
        np.testing.assert_allclose(images.preprocess(data, config), ref, atol=1e-5, rtol=0)
    pixels = np.asarray(image)
    np.testing.assert_array_equal(
        images.preprocess(pixels, config), images.preprocess(image, config)
    )
    # grayscale and transparent images: converted / composited onto white as HF does
    gray = image.convert("L")
    np.testing.assert_allclose(
        images.preprocess(gray, config), hf_pixels(processor, gray), atol=1e-5, rtol=0
    )
    rgba = image.convert("RGBA")
    rgba.putalpha(Image.fromarray(np.asarray(photo(210, 380, seed=3))[..., 0]))
    np.testing.assert_allclose(
        images.preprocess(rgba, config), hf_pixels(processor, rgba), atol=1e-5, rtol=0
    )
    assert not np.allclose(images.preprocess(rgba, config), images.preprocess(image, config))


@pytest.mark.parametrize("mode", ["resize_crop", "resize_naive", "letterbox"])
def test_arrays_already_at_size_skip_pil_with_the_same_pixels(mode):
    config = images.preprocess_config_for(presets.encoder("tiny_clip"), mode=mode)
    pixels = np.asarray(photo(config.size, config.size, seed=5))
    np.testing.assert_array_equal(
        images.preprocess(pixels, config), images.preprocess(Image.fromarray(pixels), config)
    )
    dinov2 = images.preprocess_config_for(presets.encoder("dinov2_l14_reg4"))  # resizes first
    assert dinov2.shortest_side > dinov2.size
    at_crop_size = np.asarray(photo(dinov2.size, dinov2.size, seed=6))
    np.testing.assert_array_equal(
        images.preprocess(at_crop_size, dinov2),
        images.preprocess(Image.fromarray(at_crop_size), dinov2),
    )


def test_fused_towers_get_their_own_normalized_copy():
    fused = presets.encoder("dinov2_siglip")
    configs = images.preprocess_config_for(fused)
    assert len(configs) == 2 and configs[0].geometry == configs[1].geometry
    assert (configs[0].mean, configs[1].mean) == (images.IMAGENET_MEAN, images.SIGLIP_MEAN)
    image = photo(300, 170)
    dino, siglip = images.preprocess(image, configs)
    for tower_pixels, cfg in ((dino, configs[0]), (siglip, configs[1])):
        processor = transformers.SiglipImageProcessorPil(
            size={"height": 224, "width": 224}, image_mean=list(cfg.mean), image_std=list(cfg.std)
        )
        np.testing.assert_allclose(tower_pixels, hf_pixels(processor, image), atol=1e-5, rtol=0)
    assert np.abs(dino - siglip).max() > 0.1  # different normalizations, not one shared copy


def test_batch_matches_single_images_with_and_without_threads():
    configs = images.preprocess_config_for(presets.encoder("tiny_dinov2_siglip"), "letterbox")
    batch = [photo(h, w, seed=i) for i, (h, w) in enumerate(SIZES)]
    batch[1] = np.asarray(batch[1])  # mixed input kinds in one batch
    serial = images.preprocess_batch(batch, configs)
    threaded = images.preprocess_batch(batch, configs, num_threads=3)
    for tower, cfg in enumerate(configs):
        assert serial[tower].shape == (len(batch), cfg.size, cfg.size, 3)
        np.testing.assert_array_equal(serial[tower], threaded[tower])
        for index, image in enumerate(batch):
            np.testing.assert_array_equal(serial[tower][index], images.preprocess(image, cfg))
    single = images.preprocess_batch(batch, configs[0])
    np.testing.assert_array_equal(single, serial[0])


def test_jpeg_draft_decodes_large_jpegs_at_reduced_scale():
    buffer = io.BytesIO()
    photo(800, 640).save(buffer, format="JPEG", quality=95)
    data = buffer.getvalue()
    assert images.to_rgb_image(data).size == (640, 800)
    assert images.to_rgb_image(data, draft_size=224).size == (320, 400)  # 1/2 keeps >= 224
    config = images.PreprocessConfig(224, "resize_crop")
    exact, draft = images.preprocess(data, config), images.preprocess(data, config, jpeg_draft=True)
    assert draft.shape == exact.shape
    # Decoding at half scale filters differently from a full decode and resize: a mean of
    # about 0.03 normalised units (two grey levels; measured 0.031). Letterboxing instead of
    # cropping, a flip or an 8-pixel shift gives about 0.8 (measured 0.76-0.79).
    assert 0 < np.abs(draft - exact).mean() < 0.35


def test_normalize_table_is_rescale_then_normalize():
    table = images.normalize_table(images.OPENAI_CLIP_MEAN, images.OPENAI_CLIP_STD)
    levels = np.arange(256, dtype=np.float64) / 255
    want = (levels[None] - np.array(images.OPENAI_CLIP_MEAN)[:, None]) / np.array(
        images.OPENAI_CLIP_STD
    )[:, None]
    # float32 rescale and normalize: a few roundings of values up to |2.2| (measured 2.8e-7)
    np.testing.assert_allclose(table, want, atol=16 * np.finfo(np.float32).eps * np.abs(want).max())


def test_bad_configs_and_inputs_are_clear_errors():
    with pytest.raises(ValueError, match="choose one of"):
        images.PreprocessConfig(224, "squash")
    with pytest.raises(ValueError, match="resize_size=200 is smaller"):
        images.PreprocessConfig(224, "resize_crop", resize_size=200)
    with pytest.raises(ValueError, match="only applies to mode 'resize_crop'"):
        images.PreprocessConfig(224, "letterbox", resize_size=256)
    with pytest.raises(TypeError, match="uint8"):
        images.preprocess(np.zeros((8, 8, 3), np.float32), images.PreprocessConfig(4))
    with pytest.raises(ValueError, match="HWC"):
        images.preprocess(np.zeros((8, 8, 2), np.uint8), images.PreprocessConfig(4))
