"""Qwen3-VL (fgjax/models/qwen3_vl.py, loaded with fgjax.hf.load from a saved
Qwen3VLForConditionalGeneration) against transformers 5.24 in float32.

Inputs come from transformers' own Qwen3VLProcessor (its token expansion, on a word-level
tokenizer, with the PIL Qwen2VLImageProcessor at patch 16, merge 2) on two real photographs
of different sizes and aspect ratios, so the two images of a batch get different grids and
image-token counts (96 and 54). The tiny model keeps what is Qwen3-VL's own: a 16 x 16
position table read bilinearly at both grids (rows and columns up- and down-sampled), DeepStack
taps at vision blocks 0 and 2 added after decoder blocks 0 and 1 of 3, and interleaved
M-RoPE over 16 rotary frequencies (6 turned by the frame, 5 by the row, 5 by the column).
Checked: the tower's merged and DeepStack features, the M-RoPE positions (get_rope_index),
the logits of a right-padded batch and of one row with both images, greedy decoding through
the KV cache, likelihood ranking, the export back to transformers, the real sizes.
Negative controls: DeepStack off, contiguous instead of interleaved M-RoPE.
"""

import dataclasses

import hf_testing as ht
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import transformers as tf
import vlm_testing as vt
from flax import nnx
from safetensors.numpy import load_file
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

import fgjax.hf
from fgjax.evaluate import inference
from fgjax.hf import config_export, configs
from fgjax.models import Qwen3VL, abstract, param_count, presets
from fgjax.models.config import from_dict, to_dict
from fgjax.models.qwen_vl import Qwen25Images, mrope_positions

IMAGE, VIDEO, START, END = 250, 251, 252, 253
SPECIAL = {"<|image_pad|>": IMAGE, "<|video_pad|>": VIDEO, "<|vision_start|>": START,
           "<|vision_end|>": END}  # fmt: skip
VISION = dict(
    depth=4, hidden_size=32, intermediate_size=48, num_heads=4, out_hidden_size=64,
    patch_size=16, temporal_patch_size=2, spatial_merge_size=2, num_position_embeddings=256,
    deepstack_visual_indexes=[0, 2],
)  # fmt: skip
TEXT = {**ht.TEXT, "num_hidden_layers": 3, "head_dim": 32, "max_position_embeddings": 512,
        "rope_parameters": {"rope_type": "default", "rope_theta": 10000.0,
                            "mrope_section": [6, 5, 5], "mrope_interleaved": True}}  # fmt: skip
V = "<|vision_start|><|image_pad|><|vision_end|>"
GRIDS = ((1, 16, 24), (1, 12, 18))  # the photographs' patch grids: 96 and 54 image tokens
PADDED = [f"w1 w2 w3 {V} w4 w5", f"w6 {V} w7 w8 w9 w10 w11 w12 w13 w14"]  # one image each
TWO_IMAGES = [f"w1 w2 {V} w3 w4 w5 {V} w6 w7"]


def word_tokenizer() -> tf.PreTrainedTokenizerFast:
    """w1..w249 -> 1..249 and Qwen's four vision tokens; no BOS, padding with id 0."""
    vocab = {"[UNK]": 0, **{f"w{i}": i for i in range(1, 250)}, **SPECIAL}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.add_special_tokens(list(SPECIAL))
    return tf.PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[UNK]")


class ImageProcessor(tf.Qwen3VLProcessor):
    """transformers' Qwen3VLProcessor without its video processor (torchvision only)."""

    def __init__(self, image_processor=None, tokenizer=None, **kwargs):
        super().__init__(image_processor=image_processor, tokenizer=tokenizer, **kwargs)


PROCESSOR = ImageProcessor(
    image_processor=Qwen2VLImageProcessorPil(
        patch_size=16, merge_size=2, temporal_patch_size=2, min_pixels=64 * 64,
        max_pixels=320 * 320, image_mean=[0.5] * 3, image_std=[0.5] * 3,
    ),
    tokenizer=word_tokenizer(),
)  # fmt: skip


def processed(prompts, photos):
    return PROCESSOR(images=photos, text=prompts, return_tensors="pt", padding=True)


@pytest.fixture(scope="module")
def batches():
    """name -> the processor's batch: two right-padded rows with one photograph each (the
    landscape one in the shorter row), or one row with both."""
    photos = vt.photos()
    return {"padded_batch": processed(PADDED, photos), "two_images": processed(TWO_IMAGES, photos)}


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """(transformers Qwen3VLForConditionalGeneration with random weights, tied embeddings as
    Qwen3-VL-2B and -4B, its directory)."""
    config = tf.Qwen3VLConfig(
        text_config=TEXT, vision_config=VISION, image_token_id=IMAGE, video_token_id=VIDEO,
        vision_start_token_id=START, vision_end_token_id=END, tie_word_embeddings=True,
    )  # fmt: skip
    torch.manual_seed(0)
    model = ht.randomize(tf.Qwen3VLForConditionalGeneration(config))
    return model, ht.save_pretrained(model, tmp_path_factory.mktemp("qwen3_vl"))


@pytest.fixture(scope="module")
def loaded(saved):
    return fgjax.hf.load(saved[1])


def fgjax_inputs(batch):
    """A processor batch -> (tokens i32[B, T], mask bool[B, T], Qwen25Images)."""
    grid = tuple(map(tuple, batch["image_grid_thw"].tolist()))
    images = Qwen25Images(jnp.asarray(batch["pixel_values"].numpy()), grid)
    tokens = np.asarray(batch["input_ids"].numpy(), np.int32)
    return tokens, np.asarray(batch["attention_mask"].numpy(), bool), images


@nnx.jit
def forward(model, tokens, mask, images, image_features=None, positions=None):
    out = model(tokens, images, input_mask=mask, image_features=image_features, positions=positions)
    return out.logits


@nnx.jit(static_argnums=2)
def tower(model, pixel_values, grid):
    return model.encoder(pixel_values, grid)


@pytest.mark.parametrize("scan", [True, False], ids=["scanned", "unrolled"])
def test_qwen3_vl_tower_parity(saved, batches, scan):
    """The merged tokens and both DeepStack features of two images of different grids in one
    call equal transformers' get_image_features (pooler_output, deepstack_features)."""
    hf_model, path = saved
    model, cfg = fgjax.hf.load(path, scan_layers=scan)
    batch = batches["padded_batch"]
    _, _, images = fgjax_inputs(batch)
    assert images.grid_thw == GRIDS and cfg.encoder.deepstack_indexes == (0, 2)
    with torch.no_grad():
        out = hf_model.get_image_features(batch["pixel_values"], batch["image_grid_thw"])
    theirs = [torch.cat(out.pooler_output)] + [torch.cat(f) for f in out.deepstack_features]
    ours = tower(model, images.pixel_values, images.grid_thw)
    for k, (mine, ref) in enumerate(zip(ours, theirs)):
        name = "merger" if k == 0 else f"deepstack {k - 1}"
        ht.check(f"qwen3-vl tower ({name}), {'scanned' if scan else 'unrolled'}", mine, ref.numpy())


@pytest.mark.parametrize("name", ["padded_batch", "two_images"])
def test_qwen3_vl_logits_parity(saved, loaded, batches, name):
    hf_model, _ = saved
    model, cfg = loaded
    assert isinstance(model, Qwen3VL) and cfg.decoder.rope.mrope_interleaved
    batch = batches[name]
    tokens, mask, images = fgjax_inputs(batch)
    with torch.no_grad():
        reference = hf_model(**batch).logits.numpy()
        hf_positions, hf_deltas = hf_model.model.get_rope_index(
            batch["input_ids"], batch["mm_token_type_ids"], batch["image_grid_thw"],
            attention_mask=batch["attention_mask"],
        )  # fmt: skip
    positions, deltas = mrope_positions(cfg, jnp.asarray(tokens), images.grid_thw, mask)
    np.testing.assert_array_equal(np.moveaxis(np.asarray(positions), -1, 0), hf_positions)
    np.testing.assert_array_equal(np.asarray(deltas), hf_deltas[:, 0])
    ours = forward(model, tokens, mask, images)
    ht.check(f"qwen3-vl logits, {name}", np.asarray(ours)[mask], reference[mask])


def test_qwen3_vl_negative_controls(saved, loaded, batches):
    """The same weights and inputs without DeepStack (the merged tokens only), or with the
    M-RoPE frequencies in contiguous sections (Qwen2.5-VL's) instead of interleaved: both
    miss transformers' logits by far."""
    hf_model, _ = saved
    model, cfg = loaded
    batch = batches["padded_batch"]
    tokens, mask, images = fgjax_inputs(batch)
    with torch.no_grad():
        reference = hf_model(**batch).logits.numpy()[mask]
    features = nnx.jit(lambda m, x: m.image_features(x))(model, images)
    rope = dataclasses.replace(cfg.decoder.rope, mrope_interleaved=False)
    contiguous = abstract(
        dataclasses.replace(cfg, decoder=dataclasses.replace(cfg.decoder, rope=rope))
    )
    nnx.update(contiguous, nnx.state(model))
    wrong = {
        "DeepStack off": forward(model, tokens, mask, images, features[:1]),
        "contiguous M-RoPE": forward(contiguous, tokens, mask, images),
    }
    for name, logits in wrong.items():
        err = ht.rel_err(np.asarray(logits)[mask], reference)
        print(f"[negative control] {name}: {err:.2e}")
        assert err > 10 * ht.TOL, f"{name}: {err:.2e} (the parity test could not tell)"


@nnx.jit
def _prompt(model, tokens, images, cache):
    out = model(tokens, images, cache=cache)
    return out.logits[:, -1], out.cache


@nnx.jit
def _decode(model, token, cache):
    out = model.decoder(token[:, None], cache=cache)
    return out.logits[:, 0], out.cache


def decode_logits(model, tokens, images, steps) -> np.ndarray:
    """f32[steps, V]: the prompt into a KV cache, then `steps - 1` greedy tokens one at a
    time at text positions (shifted by the cache's rope delta in the decoder)."""
    cache = model.decoder.init_cache(1, tokens.shape[1] + steps)
    first, cache = _prompt(model, jnp.asarray(tokens), images, cache)
    logits = [first]
    for _ in range(steps - 1):
        token = jnp.argmax(logits[-1], axis=-1).astype(jnp.int32)
        step_logits, cache = _decode(model, token, cache)
        logits.append(step_logits)
    return np.concatenate(logits)


def test_qwen3_vl_greedy_generation(saved, loaded, batches):
    """20 greedy tokens after a prompt with both images: fgjax.evaluate's greedy_generate
    (KV cache, a while loop) gives transformers' generate, and the logits of every step
    agree too (a tiny random model's tokens repeat after a few steps, its logits do not)."""
    hf_model, _ = saved
    model, _ = loaded
    batch = batches["two_images"]
    tokens, mask, images = fgjax_inputs(batch)
    settings = dict(do_sample=False, eos_token_id=None, max_new_tokens=20, pad_token_id=0)
    with torch.no_grad():
        out = hf_model.generate(
            **batch, **settings, output_logits=True, return_dict_in_generate=True
        )
    theirs = out.sequences[:, tokens.shape[1] :].numpy()
    graphdef, state = nnx.split(model)
    no_stop = jnp.zeros((0,), jnp.int32)
    ours = inference.greedy_generate(graphdef, state, tokens, mask, images, no_stop, 20)
    np.testing.assert_array_equal(np.asarray(ours), theirs)
    ht.check(
        "qwen3-vl logits of 20 decoding steps", decode_logits(model, tokens, images, 20),
        torch.cat(out.logits).numpy(),
    )  # fmt: skip


def test_qwen3_vl_cached_scoring(saved, loaded, batches):
    """fgjax.evaluate's shared-prefix scoring of class names after each row's prompt (a
    right-padded batch, one image per row, the prompt once into the KV cache) equals
    transformers' log-likelihoods of each prompt + class name as a sequence of its own."""
    hf_model, _ = saved
    model, _ = loaded
    batch = batches["padded_batch"]
    tokens, mask, images = fgjax_inputs(batch)
    classes = [[10, 11, 12], [40], [99, 98]]
    graphdef, state = nnx.split(model)
    chunks = inference.pack_continuations(classes, 8)
    ours = inference.score_continuations(graphdef, state, tokens, mask, images, chunks, 3)
    pixel_rows = torch.split(batch["pixel_values"], [t * h * w for t, h, w in GRIDS])
    theirs = []
    for row, pixels in enumerate(pixel_rows):  # each prompt with its own image

        def extra(ids, _, row=row):
            grid = batch["image_grid_thw"][row : row + 1]
            return dict(image_grid_thw=grid, mm_token_type_ids=(ids == IMAGE).long())

        prompt = tokens[row][mask[row]]
        theirs += [vt.hf_class_log_likelihoods(hf_model, [prompt], [pixels], classes, extra)]
    theirs = np.concatenate(theirs)
    ht.check("qwen3-vl cached class scores, padded batch", ours, theirs)


def test_qwen3_vl_export_round_trip(saved, loaded, batches, tmp_path):
    """fgjax.hf.save writes transformers 5's layout (model.visual.*, model.language_model.*;
    no lm_head: tied), which transformers loads back bit-exactly and which reads back to the
    same config; the unrolled model loaded from it gives the same logits."""
    hf_model, _ = saved
    model, cfg = loaded
    fgjax.hf.save(model, tmp_path)
    keys = load_file(tmp_path / "model.safetensors").keys()
    assert {".".join(k.split(".")[:2]) for k in keys} == {"model.visual", "model.language_model"}
    back = tf.Qwen3VLForConditionalGeneration.from_pretrained(tmp_path)
    assert ht.state_dicts_equal(hf_model, back) == []
    again, cfg_again = fgjax.hf.load(tmp_path, scan_layers=False)
    assert cfg_again == dataclasses.replace(
        cfg, encoder=dataclasses.replace(cfg.encoder, scan_layers=False),
        decoder=dataclasses.replace(cfg.decoder, scan_layers=False),
    )  # fmt: skip
    assert from_dict(to_dict(cfg)) == cfg
    batch = batches["two_images"]
    tokens, mask, images = fgjax_inputs(batch)
    with torch.no_grad():
        reference = back(**batch).logits.numpy()
    ht.check("qwen3-vl logits, exported, unrolled", forward(again, tokens, mask, images), reference)


# The published config.json files of Qwen/Qwen3-VL-{2B,4B,8B}-Instruct (the fields that
# matter; v4 schema, the vision model_type "qwen3_vl" as published)
def _published(text: dict, vision: dict, tie: bool) -> dict:
    return dict(
        architectures=["Qwen3VLForConditionalGeneration"], model_type="qwen3_vl",
        image_token_id=151655, video_token_id=151656, vision_start_token_id=151652,
        vision_end_token_id=151653, tie_word_embeddings=tie,
        text_config=dict(
            model_type="qwen3_vl_text", attention_bias=False, bos_token_id=151643,
            eos_token_id=151645, head_dim=128, hidden_act="silu", max_position_embeddings=262144,
            rms_norm_eps=1e-06, rope_theta=5000000, tie_word_embeddings=tie, vocab_size=151936,
            rope_scaling={"mrope_interleaved": True, "mrope_section": [24, 20, 20],
                          "rope_type": "default"},
            **text,
        ),
        vision_config=dict(
            model_type="qwen3_vl", hidden_act="gelu_pytorch_tanh", in_channels=3, num_heads=16,
            num_position_embeddings=2304, patch_size=16, spatial_merge_size=2,
            temporal_patch_size=2, **vision,
        ),
    )  # fmt: skip


_TOWER_2B_4B = dict(depth=24, hidden_size=1024, intermediate_size=4096,
                    deepstack_visual_indexes=[5, 11, 17])  # fmt: skip
PUBLISHED = {
    "2b": _published(
        dict(hidden_size=2048, intermediate_size=6144, num_attention_heads=16,
             num_hidden_layers=28, num_key_value_heads=8),
        {**_TOWER_2B_4B, "out_hidden_size": 2048}, tie=True,
    ),
    "4b": _published(
        dict(hidden_size=2560, intermediate_size=9728, num_attention_heads=32,
             num_hidden_layers=36, num_key_value_heads=8),
        {**_TOWER_2B_4B, "out_hidden_size": 2560}, tie=True,
    ),
    "8b": _published(
        dict(hidden_size=4096, intermediate_size=12288, num_attention_heads=32,
             num_hidden_layers=36, num_key_value_heads=8),
        dict(depth=27, hidden_size=1152, intermediate_size=4304, out_hidden_size=4096,
             deepstack_visual_indexes=[8, 16, 24]), tie=False,
    ),
}  # fmt: skip
COUNTS = {"2b": 2_127_532_032, "4b": 4_437_815_808, "8b": 8_767_123_696}


@pytest.mark.parametrize("size", list(PUBLISHED))
def test_qwen3_vl_real_sizes(size):
    """From shapes only: each published config reads as presets.qwen3_vl(size), whose
    parameter count equals transformers' (torch meta device)."""
    _, cfg = configs.from_hf(PUBLISHED[size])
    preset = presets.qwen3_vl(size)
    assert config_export.resolved(cfg) == config_export.resolved(preset)
    assert param_count(preset) == ht.transformers_count(PUBLISHED[size]) == COUNTS[size]
