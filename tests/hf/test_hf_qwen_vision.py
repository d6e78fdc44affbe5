"""Parity of the Qwen2.5-VL vision tower (fgjax.hf.qwen_vision.load_vision) against
transformers' `get_image_features` (float32), on real photographs (scikit-learn's sample
images) through the real image processor: several sizes and aspect ratios, windows cut at
the image borders, two images of different sizes in one call. Negative controls show that a
tower without the window reordering, or without the windows, misses parity by far."""

import hf_testing as ht
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import transformers as tf
from flax import nnx
from PIL import Image
from safetensors.numpy import load_file, save_file
from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

from fgjax.hf import CheckpointMismatchError
from fgjax.hf.qwen_vision import from_hf_config, load_vision
from fgjax.models import param_count, qwen_vision
from fgjax.models.config import from_dict, to_dict

datasets = pytest.importorskip("sklearn.datasets")

# windows of 112 px = 4 x 4 merged tokens; block 2 attends over the whole image
VISION = dict(depth=4, hidden_size=32, intermediate_size=48, num_heads=4, out_hidden_size=64,
              patch_size=14, window_size=112, spatial_merge_size=2, fullatt_block_indexes=[2])  # fmt: skip
TEXT = {**ht.TEXT, "num_hidden_layers": 1, "bos_token_id": 1, "eos_token_id": 2,
        "rope_parameters": {"rope_type": "default", "rope_theta": 10000.0,
                            "mrope_section": [2, 3, 3]}}  # fmt: skip


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """(transformers Qwen2_5_VLForConditionalGeneration with random weights, its directory)."""
    config = tf.Qwen2_5_VLConfig(
        text_config=TEXT, vision_config=VISION, image_token_id=250, video_token_id=251,
        vision_start_token_id=252, vision_end_token_id=253,
    )  # fmt: skip
    torch.manual_seed(0)
    model = ht.randomize(tf.Qwen2_5_VLForConditionalGeneration(config))
    return model, ht.save_pretrained(model, tmp_path_factory.mktemp("qwen2_5_vl"))


def processed(sizes):
    """The processor's (pixel_values f32[N, 1176], grid_thw tuple) of the sample photographs
    (china, flower, china, ...) resized to `sizes` [(width, height), ...]; the processor
    resizes them again to multiples of 28 px."""
    photos = datasets.load_sample_images().images
    images = [
        np.asarray(Image.fromarray(photos[i % 2]).resize(size, Image.BICUBIC))
        for i, size in enumerate(sizes)
    ]
    processor = Qwen2VLImageProcessorPil(min_pixels=56 * 56, max_pixels=400 * 400)
    out = processor(images=images, return_tensors="np")
    return out["pixel_values"], tuple(map(tuple, out["image_grid_thw"].tolist()))


def reference(hf_model, pixel_values, grid):
    """transformers' merged image embeddings, one [tokens, 64] array per image."""
    with torch.no_grad():
        out = hf_model.get_image_features(
            pixel_values=torch.from_numpy(pixel_values), image_grid_thw=torch.tensor(grid)
        )
    return [x.numpy() for x in out.pooler_output]


def per_image(cfg, out, grid):
    return np.split(np.asarray(out), np.cumsum(qwen_vision.split_sizes(cfg, grid))[:-1])


@nnx.jit(static_argnums=2)
def tower(model, pixel_values, grid):
    return model(pixel_values, grid)


# (width, height) before the processor -> patch grids (t, h, w); merged grids 8x12 (2 x 3
# whole windows), 9x6 (the last window row and column cut) and 7x7 (cut in both)
TWO_IMAGES = [(341, 227), (170, 250)]
TWO_GRIDS = ((1, 16, 24), (1, 18, 12))


@pytest.mark.parametrize(
    "sizes, grids, scan",
    [(TWO_IMAGES, TWO_GRIDS, True), ([(200, 190)], ((1, 14, 14),), False)],
    ids=["two_sizes_one_call_scanned", "square_unrolled"],
)
def test_qwen_vision_parity(saved, sizes, grids, scan):
    hf_model, path = saved
    model, cfg = load_vision(path, scan_layers=scan)
    assert (cfg.depth, cfg.width, cfg.out_dim, cfg.fullatt_block_indexes) == (4, 32, 64, (2,))
    pixel_values, grid = processed(sizes)
    assert grid == grids
    ours = per_image(cfg, tower(model, jnp.asarray(pixel_values), grid), grid)
    for i, (mine, ref) in enumerate(zip(ours, reference(hf_model, pixel_values, grid))):
        ht.check(f"qwen2.5-vl tower, image {i} of grid {grid[i]}", mine, ref)


def test_qwen_vision_two_frames(saved):
    """A grid with t = 2 (video frames, here two photographs of one size): windows and full
    attention stay within each frame, RoPE positions repeat per frame."""
    hf_model, path = saved
    model, cfg = load_vision(path)
    pixel_values, grid = processed([(341, 227), (341, 227)])
    grid = ((2, *grid[0][1:]),)
    ours = tower(model, jnp.asarray(pixel_values), grid)
    ht.check("qwen2.5-vl tower, two frames", ours, reference(hf_model, pixel_values, grid)[0])


def test_qwen_vision_negative_controls(saved):
    """The same weights and images on wrong layouts: patches left in the processor's order
    (windows cut from raster runs instead of squares), or no windows (every block full)."""
    hf_model, path = saved
    model, cfg = load_vision(path)
    pixel_values, grid = processed(TWO_IMAGES)
    ref = np.concatenate(reference(hf_model, pixel_values, grid))
    plan = qwen_vision.window_plan(cfg, grid)
    unordered = plan._replace(
        order=np.arange(len(plan.order)),
        positions=plan.positions[np.argsort(plan.order)],
        restore=np.arange(len(plan.restore)),
    )
    x = jnp.asarray(pixel_values)
    for name, wrong in [("no window reordering", unordered), ("no windows", plan._replace(windows=plan.frames))]:  # fmt: skip
        err = ht.rel_err(model.run(x, wrong), ref)
        print(f"[negative control] {name}: {err:.2e}")
        assert err > 10 * ht.TOL, f"{name}: {err:.2e} (the parity test could not tell)"


def test_qwen_vision_keys_and_config(saved, tmp_path):
    """transformers 5's module names (`model.visual.*`) load the same tensors; a missing one
    is named; the config survives to_dict / from_dict."""
    _, path = saved
    model, cfg = load_vision(path)
    tensors = load_file(f"{path}/model.safetensors")
    renamed = {("model." + k if k.startswith("visual.") else k): v for k, v in tensors.items()}
    save_file(renamed, str(tmp_path / "model.safetensors"), metadata={"format": "pt"})
    (tmp_path / "config.json").write_text(open(f"{path}/config.json").read())
    again, _ = load_vision(tmp_path)
    for (p, a), (_, b) in zip(nnx.to_flat_state(nnx.state(model)), nnx.to_flat_state(nnx.state(again))):  # fmt: skip
        np.testing.assert_array_equal(a.get_value(), b.get_value(), err_msg=str(p))
    del renamed["model.visual.blocks.1.attn.qkv.weight"]
    save_file(renamed, str(tmp_path / "model.safetensors"), metadata={"format": "pt"})
    with pytest.raises(CheckpointMismatchError, match=r"visual\.blocks\.1\.attn\.qkv\.weight"):
        load_vision(tmp_path)
    assert from_dict(to_dict(cfg)) == cfg


def test_qwen_vision_param_count_7b():
    """At Qwen2.5-VL-7B's size, from shapes only: fgjax's tower has transformers' parameter
    count (676,550,144)."""
    vision = dict(depth=32, hidden_size=1280, intermediate_size=3420, num_heads=16,
                  out_hidden_size=3584, fullatt_block_indexes=[7, 15, 23, 31])  # fmt: skip
    hf = tf.Qwen2_5_VLConfig(vision_config=vision)
    with torch.device("meta"):
        tower = tf.models.qwen2_5_vl.modeling_qwen2_5_vl.Qwen2_5_VisionTransformerPretrainedModel(
            hf.vision_config
        )
    expected = sum(p.numel() for p in tower.parameters())
    assert param_count(from_hf_config(hf.to_dict())) == expected == 676_550_144
