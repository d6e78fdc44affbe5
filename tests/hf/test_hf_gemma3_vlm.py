"""Gemma 3 as an fgjax VLM (transformers' Gemma3ForConditionalGeneration, loaded with
fgjax.hf.load) against transformers 5.24 in float32, on real photographs prepared by Gemma 3's
own image processor: logits with two images per row, greedy generation, likelihood ranking,
export.

The tiny model keeps what makes Gemma 3's attention its own: a 6-key sliding window on two
of its three layers, shorter than the 20 tokens of an image ("\\n\\n", <start_of_image>, 16
image tokens, <end_of_image>, "\\n\\n"), so that the bidirectional image blocks and the
window overlap (transformers: full layers OR(causal, image blocks), sliding layers
AND(window, OR(causal, image blocks))).
"""

import hf_testing as ht
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import transformers as tf
import vlm_testing as vt
from flax import nnx
from safetensors import safe_open
from safetensors.torch import save_file

import fgjax.hf
from fgjax.data import images as image_ops
from fgjax.data.packing import segment_attention_mask
from fgjax.evaluate import inference
from fgjax.evaluate.prompts import pad_prompts
from fgjax.models import VLM
from fgjax.models.vlm import image_blocks
from fgjax.train.tasks import VlmTask

BOS, NEWLINES, BOI, EOI, IMAGE = 2, 108, 297, 298, 299  # NEWLINES: a "\n\n" token
IMAGE_SIZE, TOKENS_PER_IMAGE = 32, 16  # an 8 x 8 patch grid pooled 2 x 2
ROPES = {
    "full_attention": dict(rope_type="linear", factor=8.0, rope_theta=1_000_000.0),
    "sliding_attention": dict(rope_type="default", rope_theta=10_000.0),
}


def hf_config():
    text = tf.Gemma3TextConfig(
        **{**ht.TEXT, "vocab_size": 300, "num_hidden_layers": 3, "max_position_embeddings": 128},
        head_dim=16, sliding_window=6, sliding_window_pattern=3, query_pre_attn_scalar=20,
        rope_parameters=ROPES,
    )  # fmt: skip
    vision = tf.SiglipVisionConfig(
        **{**ht.VISION, "num_hidden_layers": 2, "patch_size": 4}, vision_use_head=False
    )
    return tf.Gemma3Config(
        text_config=text, vision_config=vision, mm_tokens_per_image=TOKENS_PER_IMAGE,
        image_token_index=IMAGE, boi_token_index=BOI, eoi_token_index=EOI,
    )  # fmt: skip


PROCESSOR = tf.Gemma3ImageProcessorPil(size={"height": IMAGE_SIZE, "width": IMAGE_SIZE})


def image_span():
    return [NEWLINES, BOI, *[IMAGE] * TOKENS_PER_IMAGE, EOI, NEWLINES]


def row(*parts, seed):
    """BOS, then text runs of the given lengths and images ("I") in order: i32[T]."""
    rng = np.random.default_rng(seed)
    out = [BOS]
    for part in parts:
        out += image_span() if part == "I" else list(rng.integers(3, 290, part))
    return np.asarray(out, np.int32)


# two rows, two images each in opposite orders: pixel_values [A, B, B, A]
TOKENS = np.stack([row(3, "I", 5, "I", 3, seed=1), row(5, "I", 3, "I", 3, seed=2)])
TOKEN_TYPES = torch.from_numpy((TOKENS == IMAGE).astype(np.int64))


@pytest.fixture(scope="module")
def pixels():
    a, b = vt.photos()
    return PROCESSOR([a, b, b, a], return_tensors="pt")["pixel_values"]


@pytest.fixture(scope="module")
def saved(tmp_path_factory, pixels):
    """(transformers model, its directory, its logits on TOKENS)."""

    def reference(model):
        ids = torch.from_numpy(TOKENS.astype(np.int64))
        return model(input_ids=ids, pixel_values=pixels, token_type_ids=TOKEN_TYPES).logits.numpy()

    cases = {"gemma3": lambda: tf.Gemma3ForConditionalGeneration(hf_config())}
    return ht.saved_models(tmp_path_factory, cases, reference)("gemma3")


def fgjax_images(pixels):
    """[A, B, B, A] as two rows of two images: f32[2, 2, H, W, 3]."""
    return jnp.asarray(vt.nchw_to_nhwc(pixels).reshape(2, 2, IMAGE_SIZE, IMAGE_SIZE, 3))


@nnx.jit
def forward(model, tokens, images):
    return model(tokens, images).logits


def test_fgjax_preprocessing_equals_the_gemma3_processor(pixels):
    """The imported tower's preprocessing (SigLIP's, resampled bilinearly as Gemma 3's
    processor does) is Gemma 3's processor: fgjax pipelines feed the model what it expects."""
    _, cfg = fgjax.hf.from_hf(hf_config().to_dict())
    preprocess = image_ops.preprocess_config_for(cfg.encoder)
    assert preprocess.resample == "bilinear"
    ours = np.stack([image_ops.preprocess(photo, preprocess) for photo in vt.photos()])
    np.testing.assert_allclose(ours, vt.nchw_to_nhwc(pixels[:2]), atol=1e-6, rtol=0)


@pytest.mark.parametrize("scan_layers", [True, False])
def test_logits_parity_two_images_per_row(saved, pixels, scan_layers):
    _, path, reference = saved
    model, cfg = fgjax.hf.load(path, scan_layers=scan_layers)
    assert isinstance(model, VLM) and cfg.image_attention == "bidirectional"
    assert cfg.num_image_tokens == TOKENS_PER_IMAGE and cfg.image_boundary_ids == (BOI, EOI)
    ours = forward(model, jnp.asarray(TOKENS), fgjax_images(pixels))
    ht.check(f"gemma3 vlm logits (scan_layers={scan_layers})", ours, reference)


@nnx.jit
def forward_window_exempt(model, tokens, images):
    """Logits with the image blocks exempt from the sliding window (PaliGemma 2's rule)."""
    blocks = image_blocks(tokens, model.cfg.image_token_id)
    mask = jnp.tril(jnp.ones(tokens.shape[1:] * 2, bool))[None] | blocks
    embeds = model.embed(tokens, images)
    return model.decoder(embeds=embeds, attn_mask=mask, window_exempt=blocks).logits


def test_the_mask_matters(saved, pixels):
    """Negative controls: causal attention among image tokens, or image blocks that ignore
    the sliding window, miss transformers' logits by far more than TOL."""
    _, path, reference = saved
    causal, _ = fgjax.hf.load(path, image_attention="causal")
    err = ht.rel_err(forward(causal, jnp.asarray(TOKENS), fgjax_images(pixels)), reference)
    print(f"[control] causal image attention: {err:.2e}")
    assert err > 10 * ht.TOL
    model, _ = fgjax.hf.load(path)
    err = ht.rel_err(
        forward_window_exempt(model, jnp.asarray(TOKENS), fgjax_images(pixels)), reference
    )
    print(f"[control] image blocks exempt from the sliding window: {err:.2e}")
    assert err > 10 * ht.TOL


def test_greedy_generation_equals_transformers_generate(saved, pixels):
    """20 tokens after 52-token prompts, through fgjax's KV cache and evaluation loop."""
    hf_model, path, _ = saved
    ids = torch.from_numpy(TOKENS.astype(np.int64))
    theirs = vt.hf_generate(
        hf_model, 20, input_ids=ids, pixel_values=pixels, token_type_ids=TOKEN_TYPES
    )
    model, cfg = fgjax.hf.load(path)
    graphdef, state = nnx.split(model)
    never = jnp.asarray([cfg.decoder.vocab_size])  # no stop token: 20 tokens, as generate
    ours = inference.greedy_generate(
        graphdef, state, jnp.asarray(TOKENS), jnp.ones(TOKENS.shape, bool),
        fgjax_images(pixels), never, max_new_tokens=20,
    )  # fmt: skip
    np.testing.assert_array_equal(np.asarray(ours), theirs)


def test_likelihood_ranking_equals_transformers(saved):
    """score_continuations (the prompt once into the KV cache, classes packed into chunks
    after it) against transformers' summed log-probs of each class after each prompt, with
    prompts of different lengths (right-padded in fgjax) and one photograph each."""
    hf_model, path, _ = saved
    prompts = [row(4, "I", 6, seed=3), row(2, "I", 3, seed=4)]
    photos = vt.photos()
    pixel_rows = [PROCESSOR([photo], return_tensors="pt")["pixel_values"] for photo in photos]
    rng = np.random.default_rng(5)
    classes = [list(rng.integers(3, 290, n)) for n in (1, 3, 2, 4, 1)]

    def token_types(ids, _):
        return {"token_type_ids": (ids == IMAGE).long()}

    theirs = vt.hf_class_log_likelihoods(hf_model, prompts, pixel_rows, classes, token_types)
    model, _ = fgjax.hf.load(path)
    graphdef, state = nnx.split(model)
    tokens, mask = pad_prompts(prompts, bucket=8)
    images = jnp.asarray(np.concatenate([vt.nchw_to_nhwc(p) for p in pixel_rows]))
    chunks = inference.pack_continuations(classes, 5)
    ours = inference.score_continuations(
        graphdef, state, tokens, mask, images, chunks, num_classes=len(classes)
    )
    print(f"[parity] gemma3 class log-likelihoods: {ht.rel_err(ours, theirs):.2e}")
    np.testing.assert_allclose(np.asarray(ours), theirs, rtol=1e-4, atol=0)


def test_training_loss_equals_transformers_loss_with_labels(saved, pixels):
    """fgjax's VLM training loss (no mask passed: the model builds it) equals transformers'
    loss with labels on each row's last 3 tokens."""
    hf_model, path, _ = saved
    targets = np.zeros(TOKENS.shape, bool)
    targets[:, -3:] = True
    ids = torch.from_numpy(TOKENS.astype(np.int64))
    labels = torch.where(torch.from_numpy(targets), ids, -100)
    with torch.no_grad():
        out = hf_model(
            input_ids=ids, pixel_values=pixels, token_type_ids=TOKEN_TYPES, labels=labels
        )
    model, _ = fgjax.hf.load(path)
    batch = {
        "tokens": jnp.asarray(TOKENS),
        "images": fgjax_images(pixels),
        "input_mask": jnp.ones(TOKENS.shape, bool),
        "loss_mask": jnp.asarray(targets),
    }
    total, count, _ = nnx.jit(VlmTask().loss_fn({"decoder": True}))(model, batch)
    print(f"[parity] gemma3 training loss {float(total / count):.6f} vs {out.loss.item():.6f}")
    np.testing.assert_allclose(float(total / count), out.loss.item(), rtol=1e-5)


@nnx.jit
def forward_packed(model, tokens, images, segment_ids, positions):
    mask = segment_attention_mask(segment_ids)
    return model(tokens, images, attn_mask=mask, positions=positions).logits


def test_packed_rows_keep_each_samples_image_blocks(saved, pixels):
    """Two samples packed into one row (training's packing: a segment mask, positions
    restarting) give each sample's own logits: the image blocks stay inside their sample."""
    _, path, _ = saved
    model, _ = fgjax.hf.load(path)
    first, second = row(3, "I", 2, seed=7), row(2, "I", 3, seed=8)
    a, b = fgjax_images(pixels)[0]  # the photographs A and B
    alone = [
        forward(model, jnp.asarray(x[None]), im[None, None]) for x, im in ((first, a), (second, b))
    ]
    packed = np.concatenate([first, second])[None]
    segments = np.repeat([1, 2], [len(first), len(second)])[None]
    positions = np.concatenate([np.arange(len(first)), np.arange(len(second))])[None]
    both = jnp.stack([a, b])[None]
    ours = forward_packed(model, jnp.asarray(packed), both, segments, positions)
    ht.check("gemma3 packed row", ours, np.concatenate([np.asarray(a) for a in alone], axis=1))


def test_save_round_trip(saved, pixels, tmp_path):
    """fgjax.hf.save writes the published layout, which transformers loads back bit-exactly
    and with which it reproduces fgjax's logits."""
    hf_model, path, _ = saved
    model, cfg = fgjax.hf.load(path)
    fgjax.hf.save(model, tmp_path / "out")
    with safe_open(f"{tmp_path}/out/model.safetensors", "np") as f:
        keys = set(f.keys())
    assert "multi_modal_projector.mm_input_projection_weight" in keys
    assert all(k.startswith(("vision_tower.vision_model.", "language_model.model.",
                             "multi_modal_projector.")) for k in keys)  # fmt: skip
    again = tf.Gemma3ForConditionalGeneration.from_pretrained(tmp_path / "out")
    assert ht.state_dicts_equal(hf_model, again) == []
    assert fgjax.hf.load(tmp_path / "out")[1] == cfg
    ids = torch.from_numpy(TOKENS.astype(np.int64))
    with torch.no_grad():
        theirs = again(input_ids=ids, pixel_values=pixels, token_type_ids=TOKEN_TYPES).logits
    ours = forward(model, jnp.asarray(TOKENS), fgjax_images(pixels))
    ht.check("transformers on fgjax's export", theirs.numpy(), ours)


def test_in_memory_key_layout(saved, pixels, tmp_path):
    """A raw state_dict dump (transformers 5's in-memory names: model.language_model.*,
    model.vision_tower.vision_model.*, model.multi_modal_projector.*) loads the same."""
    hf_model, path, reference = saved
    tied = "lm_head.weight"  # the embedding's, which safetensors will not store twice
    tensors = {k: v.contiguous() for k, v in hf_model.state_dict().items() if k != tied}
    assert any(k.startswith("model.vision_tower.") for k in tensors)
    save_file(tensors, tmp_path / "model.safetensors")
    (tmp_path / "config.json").write_text(open(f"{path}/config.json").read())
    model, _ = fgjax.hf.load(tmp_path)
    ours = forward(model, jnp.asarray(TOKENS), fgjax_images(pixels))
    ht.check("gemma3 vlm logits, in-memory key layout", ours, reference)


def test_text_only_rows_are_causal(saved):
    """Without images the model is Gemma 3's decoder: transformers' text-only forward."""
    hf_model, path, _ = saved
    text = np.random.default_rng(6).integers(3, 290, (2, 12)).astype(np.int32)
    with torch.no_grad():
        theirs = hf_model(input_ids=torch.from_numpy(text.astype(np.int64))).logits.numpy()
    model, _ = fgjax.hf.load(path)
    ht.check("gemma3 vlm, text only", forward(model, jnp.asarray(text), None), theirs)
