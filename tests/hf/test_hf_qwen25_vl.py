"""The whole Qwen2.5-VL (fgjax.hf.load of a Qwen2_5_VLForConditionalGeneration) against
transformers (float32): real photographs through the real image processor at two sizes and
aspect ratios, each image's tokens expanded to the processor's t * h * w / merge**2 count
between <|vision_start|> and <|vision_end|>, text before, between and after. Checked: the
M-RoPE positions (get_rope_index), the logits of one row with two images and of a
right-padded batch, greedy decoding through the KV cache (transformers' rope_deltas) with
fgjax.evaluate's greedy_generate, its shared-prefix scoring, the export back to
transformers, and the real 7B and 3B sizes.
Negative controls: 1-D positions instead of M-RoPE, and decoding without the rope delta."""

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

import fgjax.hf
from fgjax.evaluate import inference
from fgjax.hf import configs
from fgjax.models import Qwen25Images, Qwen25VL, param_count, presets
from fgjax.models.config import from_dict, to_dict
from fgjax.models.qwen_vl import mrope_positions

datasets = pytest.importorskip("sklearn.datasets")

IMAGE, VIDEO, START, END = 250, 251, 252, 253
VISION = dict(depth=4, hidden_size=32, intermediate_size=48, num_heads=4, out_hidden_size=64,
              patch_size=14, window_size=112, spatial_merge_size=2, fullatt_block_indexes=[2])  # fmt: skip
# head_dim 16: 8 rotary frequencies, 2 turned by the frame, 3 by the row, 3 by the column
TEXT = {**ht.TEXT, "bos_token_id": 1, "eos_token_id": 2, "max_position_embeddings": 512,
        "rope_parameters": {"rope_type": "default", "rope_theta": 10000.0,
                            "mrope_section": [2, 3, 3]}}  # fmt: skip
# (width, height) before the processor -> patch grids (1, 16, 24) and (1, 18, 12): 96 and 54
# image tokens, landscape and portrait
SIZES = [(341, 227), (170, 250)]
GRIDS = ((1, 16, 24), (1, 18, 12))


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """(transformers Qwen2_5_VLForConditionalGeneration with random weights, its directory)."""
    config = tf.Qwen2_5_VLConfig(
        text_config=TEXT, vision_config=VISION, image_token_id=IMAGE, video_token_id=VIDEO,
        vision_start_token_id=START, vision_end_token_id=END,
    )  # fmt: skip
    torch.manual_seed(0)
    model = ht.randomize(tf.Qwen2_5_VLForConditionalGeneration(config))
    return model, ht.save_pretrained(model, tmp_path_factory.mktemp("qwen2_5_vl"))


@pytest.fixture(scope="module")
def loaded(saved):
    return fgjax.hf.load(saved[1])


@pytest.fixture(scope="module")
def images():
    """The processor's (pixel_values f32[N, 1176], grid_thw) of the two photographs."""
    photos = datasets.load_sample_images().images
    resized = [
        np.asarray(Image.fromarray(photos[i]).resize(size, Image.BICUBIC))
        for i, size in enumerate(SIZES)
    ]
    processor = Qwen2VLImageProcessorPil(min_pixels=56 * 56, max_pixels=400 * 400)
    out = processor(images=resized, return_tensors="np")
    grid = tuple(map(tuple, out["image_grid_thw"].tolist()))
    assert grid == GRIDS
    return out["pixel_values"], grid


def row(pieces, seed=0) -> list[int]:
    """A prompt: an int n is n random text tokens, a (t, h, w) grid the image's tokens."""
    rng = np.random.default_rng(seed)
    tokens = []
    for piece in pieces:
        if isinstance(piece, int):
            tokens += rng.integers(3, IMAGE, piece).tolist()
        else:
            tokens += [START] + [IMAGE] * (int(np.prod(piece)) // 4) + [END]
    return tokens


def batch(rows) -> tuple[np.ndarray, np.ndarray]:
    """Right-padded (tokens i32[B, T], mask bool[B, T])."""
    length = max(map(len, rows))
    tokens = np.zeros((len(rows), length), np.int32)
    mask = np.zeros((len(rows), length), bool)
    for i, r in enumerate(rows):
        tokens[i, : len(r)], mask[i, : len(r)] = r, True
    return tokens, mask


def hf_inputs(tokens, mask, pixel_values, grid) -> dict:
    return dict(
        input_ids=torch.from_numpy(tokens.astype(np.int64)),
        attention_mask=torch.from_numpy(mask.astype(np.int64)),
        pixel_values=torch.from_numpy(pixel_values),
        image_grid_thw=torch.tensor(grid),
        mm_token_type_ids=torch.from_numpy((tokens == IMAGE).astype(np.int64)),
    )


@nnx.jit
def forward(model, tokens, mask, images, positions=None):
    return model(tokens, images, input_mask=mask, positions=positions).logits


# one row with both images (text before, between, after); a right-padded batch of two rows
# with one image each (the portrait one in the longer row)
CASES = {
    "two_images_one_row": ([[5, GRIDS[0], 4, GRIDS[1], 6]], True),
    "padded_batch": ([[3, GRIDS[0], 5], [4, GRIDS[1], 20]], False),
}


@pytest.mark.parametrize("name", list(CASES))
def test_qwen25_vl_logits_parity(saved, loaded, images, name):
    hf_model, _ = saved
    model, cfg = loaded
    assert isinstance(model, Qwen25VL) and cfg.decoder.rope.mrope_section == (2, 3, 3)
    rows, _ = CASES[name]
    tokens, mask = batch([row(r, seed=i) for i, r in enumerate(rows)])
    pixel_values, grid = images
    inputs = hf_inputs(tokens, mask, pixel_values, grid)
    with torch.no_grad():
        reference = hf_model(**inputs).logits.numpy()
        hf_positions, hf_deltas = hf_model.model.get_rope_index(
            inputs["input_ids"], inputs["mm_token_type_ids"], inputs["image_grid_thw"],
            attention_mask=inputs["attention_mask"],
        )  # fmt: skip
    positions, deltas = mrope_positions(cfg, jnp.asarray(tokens), grid, jnp.asarray(mask))
    np.testing.assert_array_equal(np.moveaxis(np.asarray(positions), -1, 0), hf_positions)
    np.testing.assert_array_equal(np.asarray(deltas), hf_deltas[:, 0])
    ours = forward(model, tokens, mask, Qwen25Images(jnp.asarray(pixel_values), grid))
    ht.check(f"qwen2.5-vl logits, {name}", np.asarray(ours)[mask], reference[mask])


def test_qwen25_vl_negative_control_1d_positions(saved, loaded, images):
    """The same model and inputs with the slot index on all three axes (plain RoPE)."""
    hf_model, _ = saved
    model, _ = loaded
    tokens, mask = batch([row(CASES["two_images_one_row"][0][0])])
    pixel_values, grid = images
    with torch.no_grad():
        reference = hf_model(**hf_inputs(tokens, mask, pixel_values, grid)).logits.numpy()
    slots = jnp.broadcast_to(jnp.arange(tokens.shape[1]), tokens.shape)
    ours = forward(model, tokens, mask, Qwen25Images(jnp.asarray(pixel_values), grid), slots)
    err = ht.rel_err(ours, reference)
    print(f"[negative control] 1-D positions: {err:.2e}")
    assert err > 10 * ht.TOL, f"1-D positions: {err:.2e} (the parity test could not tell)"


@nnx.jit
def _prompt(model, tokens, images, cache):
    out = model(tokens, images, cache=cache)
    return out.logits[:, -1], out.cache


@nnx.jit
def _decode(model, token, position, cache):
    out = model.decoder(token[:, None], positions=position[:, None], cache=cache)
    return out.logits[:, 0], out.cache


def decode_logits(model, tokens, images, steps, shift=None) -> np.ndarray:
    """f32[steps, V]: the prompt into a KV cache, then `steps` greedy tokens one at a time at
    text positions (shifted by the cache's rope delta in the decoder); `shift` replaces them by
    3-D positions slot + shift (shift 0: no rope delta)."""
    cache = model.decoder.init_cache(1, tokens.shape[1] + steps)
    first, cache = _prompt(model, jnp.asarray(tokens), images, cache)
    logits = [first]
    for step in range(steps - 1):
        position = jnp.full((1,), tokens.shape[1] + step, jnp.int32)
        if shift is not None:
            position = jnp.broadcast_to(position[:, None] + shift, (1, 3))
        token = jnp.argmax(logits[-1], axis=-1).astype(jnp.int32)
        step_logits, cache = _decode(model, token, position, cache)
        logits.append(step_logits)
    return np.concatenate(logits)


def test_qwen25_vl_greedy_generation(saved, loaded, images):
    """20 greedy tokens: fgjax.evaluate's greedy_generate (KV cache, a while loop) gives
    transformers' generate; the logits of every step agree too (the tokens of a tiny random
    model repeat themselves after a few steps, the logits do not), and decoding without the
    rope delta (positions continuing at the slot index) misses them by far."""
    hf_model, _ = saved
    model, _ = loaded
    tokens, mask = batch([row(CASES["two_images_one_row"][0][0])])
    pixel_values, grid = images
    settings = dict(do_sample=False, eos_token_id=None, max_new_tokens=20, pad_token_id=0)
    with torch.no_grad():
        out = hf_model.generate(
            **hf_inputs(tokens, mask, pixel_values, grid), **settings,
            output_logits=True, return_dict_in_generate=True,
        )  # fmt: skip
    theirs = out.sequences[:, tokens.shape[1] :].numpy()
    their_logits = torch.cat(out.logits).numpy()
    qimages = Qwen25Images(jnp.asarray(pixel_values), grid)
    graphdef, state = nnx.split(model)
    no_stop = jnp.zeros((0,), jnp.int32)
    ours = inference.greedy_generate(graphdef, state, tokens, mask, qimages, no_stop, 20)
    np.testing.assert_array_equal(np.asarray(ours), theirs)
    ht.check("qwen2.5-vl logits of 20 decoding steps", decode_logits(model, tokens, qimages, 20), their_logits)  # fmt: skip
    wrong = decode_logits(model, tokens, qimages, 20, shift=0)
    err = ht.rel_err(wrong[1:], their_logits[1:])
    print(f"[negative control] decoding without the rope delta: {err:.2e}")
    assert err > 10 * ht.TOL, f"no rope delta: {err:.2e} (the decoding test could not tell)"


def test_qwen25_vl_cached_scoring(saved, loaded, images):
    """fgjax.evaluate's shared-prefix scoring on a right-padded batch with images: each row's
    prompt once into the KV cache, the class names packed into one chunk at text positions
    after it (shifted by each row's rope delta), equals transformers' log-probabilities of
    each prompt + class name as a sequence of its own."""
    hf_model, _ = saved
    model, _ = loaded
    pixel_values, grid = images
    rows = [row(r, seed=i) for i, r in enumerate(CASES["padded_batch"][0])]
    tokens, mask = batch(rows)
    classes = [[10, 11, 12], [40], [99, 98]]
    graphdef, state = nnx.split(model)
    qimages = Qwen25Images(jnp.asarray(pixel_values), grid)
    chunks = inference.pack_continuations(classes, 8)
    ours = inference.score_continuations(graphdef, state, tokens, mask, qimages, chunks, 3)
    per_image = np.split(pixel_values, np.cumsum([t * h * w for t, h, w in grid])[:-1])
    reference = np.zeros((len(rows), len(classes)))
    for i, prompt in enumerate(rows):
        for c, name in enumerate(classes):
            sequence, full = batch([prompt + name])
            inputs = hf_inputs(sequence, full, per_image[i], grid[i : i + 1])
            with torch.no_grad():
                logp = torch.log_softmax(hf_model(**inputs).logits[0], dim=-1).numpy()
            reference[i, c] = sum(logp[len(prompt) - 1 + k, t] for k, t in enumerate(name))
    ht.check("qwen2.5-vl cached class scores, padded batch", ours, reference)


def test_qwen25_vl_keys_round_trip(saved, loaded, images, tmp_path):
    """transformers 5's module names (model.visual.*, model.language_model.*) load the same
    tensors; fgjax.hf.save writes the published layout (visual.*, model.*, lm_head.weight),
    which transformers loads back bit-exactly, and reads back to the same config."""
    hf_model, path = saved
    model, cfg = loaded
    tensors = load_file(f"{path}/model.safetensors")
    renames = [("visual.", "model.visual."), ("model.", "model.language_model."), ("lm_head.", "lm_head.")]  # fmt: skip
    renamed = {}
    for key, value in tensors.items():
        old, new = next((old, new) for old, new in renames if key.startswith(old))
        renamed[new + key[len(old) :]] = value
    save_file(renamed, str(tmp_path / "model.safetensors"), metadata={"format": "pt"})
    (tmp_path / "config.json").write_text(open(f"{path}/config.json").read())
    again, _ = fgjax.hf.load(tmp_path, scan_layers=False)
    fgjax.hf.save(model, tmp_path / "out")
    keys = load_file(tmp_path / "out" / "model.safetensors").keys()
    assert {k.split(".")[0] for k in keys} == {"visual", "model", "lm_head"}
    back = tf.Qwen2_5_VLForConditionalGeneration.from_pretrained(tmp_path / "out")
    assert ht.state_dicts_equal(hf_model, back) == []
    assert fgjax.hf.load(tmp_path / "out")[1] == cfg
    assert from_dict(to_dict(cfg)) == cfg
    tokens, mask = batch([row([3, GRIDS[1], 4])])
    pixel_values, grid = images[0][-(18 * 12) :], GRIDS[1:]
    logits = forward(again, tokens, mask, Qwen25Images(jnp.asarray(pixel_values), grid))
    with torch.no_grad():
        reference = back(**hf_inputs(tokens, mask, pixel_values, grid)).logits.numpy()
    ht.check("qwen2.5-vl logits, transformers 5 key names, unrolled", logits, reference)


# Qwen/Qwen2.5-VL-7B-Instruct's config.json as published (the text model's fields at the
# top level, rope_scaling type "mrope"; the fields that matter)
QWEN25_VL_7B = dict(
    architectures=["Qwen2_5_VLForConditionalGeneration"], model_type="qwen2_5_vl",
    bos_token_id=151643, eos_token_id=151645, vision_start_token_id=151652,
    vision_end_token_id=151653, vision_token_id=151654, image_token_id=151655,
    video_token_id=151656, hidden_act="silu", hidden_size=3584, intermediate_size=18944,
    max_position_embeddings=128000, max_window_layers=28, num_attention_heads=28,
    num_hidden_layers=28, num_key_value_heads=4, rms_norm_eps=1e-06, rope_theta=1000000.0,
    sliding_window=32768, tie_word_embeddings=False, torch_dtype="bfloat16",
    use_sliding_window=False, vocab_size=152064,
    rope_scaling={"type": "mrope", "mrope_section": [16, 24, 24]},
    vision_config=dict(
        depth=32, hidden_act="silu", hidden_size=1280, intermediate_size=3420, num_heads=16,
        in_chans=3, out_hidden_size=3584, patch_size=14, spatial_merge_size=2,
        spatial_patch_size=14, window_size=112, fullatt_block_indexes=[7, 15, 23, 31],
        tokens_per_second=2, temporal_patch_size=2,
    ),
)  # fmt: skip


# Qwen/Qwen2.5-VL-3B-Instruct's: a narrower decoder with tied embeddings, the same tower
QWEN25_VL_3B = {
    **QWEN25_VL_7B, "hidden_size": 2048, "intermediate_size": 11008, "max_window_layers": 70,
    "num_attention_heads": 16, "num_hidden_layers": 36, "num_key_value_heads": 2,
    "tie_word_embeddings": True, "vocab_size": 151936,
    "vision_config": {**QWEN25_VL_7B["vision_config"], "out_hidden_size": 2048},
}  # fmt: skip
SIZES_AND_PRESETS = {
    "7b": (QWEN25_VL_7B, presets.qwen25_vl_7b, 8_292_166_656),
    "3b": (QWEN25_VL_3B, presets.qwen25_vl_3b, 3_754_622_976),
}


@pytest.mark.parametrize("size", list(SIZES_AND_PRESETS))
def test_qwen25_vl_real_sizes_and_presets(size):
    """At Qwen2.5-VL-7B's and -3B's sizes, from shapes only: the published config reads as the
    preset, whose parameter count equals transformers'."""
    published, preset_fn, count = SIZES_AND_PRESETS[size]
    hf = tf.Qwen2_5_VLConfig(**published)
    with torch.device("meta"):
        model = tf.Qwen2_5_VLForConditionalGeneration(hf)
    expected = sum(p.numel() for p in model.parameters())
    _, cfg = configs.from_hf(published)
    preset = preset_fn()
    assert cfg == preset
    assert param_count(preset) == expected == count
    assert (hf.text_config.rope_parameters["mrope_section"], hf.text_config.hidden_size) == (
        list(preset.decoder.rope.mrope_section), preset.decoder.width,
    )  # fmt: skip
