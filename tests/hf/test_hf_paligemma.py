"""PaliGemma 2 (and 1) as an fgjax VLM (transformers' PaliGemmaForConditionalGeneration,
loaded with fgjax.hf.load) against transformers 5.24 in float32, on real photographs
prepared by PaliGemma's image processor (SigLIP's): logits of prompt + answer rows and of
prompts alone, greedy generation, likelihood ranking, export.

Rows are PaliGemma's: 16 image tokens, BOS, the prompt, "\\n" (the prefix, attending both
ways), then the answer and EOS (causal). The prefix (23-26 tokens) outgrows Gemma 2's 6-key
window: transformers' sliding layers see the whole prefix (OR(window AND causal, prefix)).
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

import fgjax.hf
from fgjax.data import images as image_ops
from fgjax.data.packing import segment_attention_mask
from fgjax.evaluate import inference
from fgjax.evaluate.prompts import pad_prompts
from fgjax.models.vlm import prefix_before_targets
from fgjax.train.tasks import VlmTask

BOS, EOS, NEWLINE, IMAGE = 2, 1, 108, 299  # NEWLINE: the "\n" token ending the prompt
IMAGE_SIZE, TOKENS_PER_IMAGE = 32, 16  # 4 x 4 patches of 8 px
TEXT = {**ht.TEXT, "vocab_size": 300, "max_position_embeddings": 128, "head_dim": 16}
VISION = {**ht.VISION, "num_hidden_layers": 2}
CASES = {
    "paligemma2": lambda: tf.Gemma2Config(
        **TEXT,
        sliding_window=6,
        query_pre_attn_scalar=24,
        attn_logit_softcapping=0.5,
        final_logit_softcapping=0.6,
    ),  # fmt: skip
    "paligemma1": lambda: tf.GemmaConfig(**{**TEXT, "num_key_value_heads": 1}),
}
PROCESSOR = tf.SiglipImageProcessorPil(size={"height": IMAGE_SIZE, "width": IMAGE_SIZE})


def hf_config(name):
    vision = tf.SiglipVisionConfig(**VISION, vision_use_head=False)
    return tf.PaliGemmaConfig(
        text_config=CASES[name](), vision_config=vision, image_token_index=IMAGE,
        projection_dim=TEXT["hidden_size"], vocab_size=300,
    )  # fmt: skip


def prefix(length, seed):
    """Image tokens, BOS, a prompt of `length` tokens, "\\n": i32[16 + length + 2]."""
    prompt = np.random.default_rng(seed).integers(3, 290, length)
    return np.asarray([IMAGE] * TOKENS_PER_IMAGE + [BOS, *prompt, NEWLINE], np.int32)


def suffix(length, seed):
    return np.asarray([*np.random.default_rng(seed).integers(3, 290, length), EOS], np.int32)


# two rows of 31 tokens: prefixes of 23 and 26, answers of 8 and 5
PREFIXES = [prefix(5, seed=1), prefix(8, seed=2)]
TOKENS = np.stack([np.concatenate([PREFIXES[0], suffix(7, 3)]),
                   np.concatenate([PREFIXES[1], suffix(4, 4)])])  # fmt: skip
IS_PREFIX = np.arange(TOKENS.shape[1])[None] < np.asarray([len(p) for p in PREFIXES])[:, None]


@pytest.fixture(scope="module")
def pixels():
    return PROCESSOR(vt.photos(), return_tensors="pt")["pixel_values"]


@pytest.fixture(scope="module")
def saved(tmp_path_factory, pixels):
    """saved(name) -> (transformers model, its directory, (logits of TOKENS with the answers
    causal, logits of the prefixes alone))."""

    def reference(model):
        ids = torch.from_numpy(TOKENS.astype(np.int64))
        types = torch.from_numpy((~IS_PREFIX).astype(np.int64))  # token_type_ids: 1 = suffix
        full = model(input_ids=ids, pixel_values=pixels, token_type_ids=types).logits.numpy()
        alone = [
            model(input_ids=torch.from_numpy(p.astype(np.int64))[None], pixel_values=pixels[i : i + 1],
                  token_type_ids=torch.zeros((1, len(p)), dtype=torch.long)).logits[0].numpy()
            for i, p in enumerate(PREFIXES)
        ]  # fmt: skip
        return full, alone

    cases = {
        name: lambda n=name: tf.PaliGemmaForConditionalGeneration(hf_config(n)) for name in CASES
    }
    return ht.saved_models(tmp_path_factory, cases, reference)


def fgjax_images(pixels):
    return jnp.asarray(vt.nchw_to_nhwc(pixels))


@nnx.jit
def forward(model, tokens, images, prefix_mask):
    return model(tokens, images, prefix_mask=prefix_mask).logits


@nnx.jit
def forward_prompts(model, tokens, mask, images):
    """Right-padded prompts alone: the default prefix, every real token of the call."""
    return model(tokens, images, input_mask=mask).logits


def test_fgjax_preprocessing_equals_the_siglip_processor(pixels):
    """The imported tower's default preprocessing (SigLIP's) is PaliGemma's processor."""
    _, cfg = fgjax.hf.from_hf(hf_config("paligemma2").to_dict())
    cfg = image_ops.preprocess_config_for(cfg.encoder)
    ours = np.stack([image_ops.preprocess(photo, cfg) for photo in vt.photos()])
    np.testing.assert_allclose(ours, vt.nchw_to_nhwc(pixels), atol=1e-6, rtol=0)


@pytest.mark.parametrize("name", list(CASES))
def test_logits_parity(saved, pixels, name):
    """Prompt + answer rows (the prefix given as HF's token_type_ids == 0), and the prompts
    alone right-padded in one batch (the default prefix)."""
    _, path, (full, alone) = saved(name)
    model, cfg = fgjax.hf.load(path)
    assert cfg.image_attention == "prefix" and cfg.image_layout == "before_bos"
    assert cfg.num_image_tokens == TOKENS_PER_IMAGE
    images = fgjax_images(pixels)
    ht.check(f"{name} logits, prompt + answer", forward(model, TOKENS, images, IS_PREFIX), full)
    tokens, mask = pad_prompts(PREFIXES, bucket=8)
    ours = np.asarray(forward_prompts(model, tokens, mask, images))
    for row, reference in enumerate(alone):
        ht.check(f"{name} logits, prompt {row} alone", ours[row, : len(reference)], reference)


@nnx.jit
def forward_windowed_prefix(model, tokens, images, prefix_mask):
    """Logits with the prefix inside the sliding window (Gemma 3's rule, not PaliGemma 2's)."""
    pairs = prefix_mask[:, :, None] & prefix_mask[:, None, :]
    mask = jnp.tril(jnp.ones(tokens.shape[1:] * 2, bool))[None] | pairs
    return model.decoder(embeds=model.embed(tokens, images), attn_mask=mask).logits


def test_the_mask_matters(saved, pixels):
    """Negative controls, each far beyond TOL: causal attention throughout; the answer inside
    the prefix (the default prefix over a whole row); the prefix kept inside the window."""
    _, path, (full, _) = saved("paligemma2")
    images = fgjax_images(pixels)
    causal, _ = fgjax.hf.load(path, image_attention="causal")
    model, _ = fgjax.hf.load(path)
    errors = {
        "causal": ht.rel_err(nnx.jit(lambda m, t, i: m(t, i).logits)(causal, TOKENS, images), full),
        "answer in the prefix": ht.rel_err(forward(model, TOKENS, images, np.ones_like(IS_PREFIX)), full),
        "prefix inside the window": ht.rel_err(
            forward_windowed_prefix(model, TOKENS, images, IS_PREFIX), full
        ),
    }  # fmt: skip
    print(f"[control] {errors}")
    assert all(err > 10 * ht.TOL for err in errors.values())


def test_greedy_generation_equals_transformers_generate(saved, pixels):
    """20 tokens after the prompt (the prefix, bidirectional), through fgjax's KV cache."""
    model_hf, path, _ = saved("paligemma2")
    prompts = np.stack([prefix(6, seed=5), prefix(6, seed=6)])
    ids = torch.from_numpy(prompts.astype(np.int64))
    theirs = vt.hf_generate(
        model_hf, 20, input_ids=ids, pixel_values=pixels, token_type_ids=torch.zeros_like(ids)
    )
    model, cfg = fgjax.hf.load(path)
    graphdef, state = nnx.split(model)
    never = jnp.asarray([cfg.decoder.vocab_size])
    ours = inference.greedy_generate(
        graphdef, state, jnp.asarray(prompts), jnp.ones(prompts.shape, bool),
        fgjax_images(pixels), never, max_new_tokens=20,
    )  # fmt: skip
    np.testing.assert_array_equal(np.asarray(ours), theirs)


def test_likelihood_ranking_equals_transformers(saved, pixels):
    """score_continuations against transformers' summed log-probs of each class as the
    answer (token_type_ids 1) after each prompt, prompts of different lengths."""
    model_hf, path, _ = saved("paligemma2")
    rng = np.random.default_rng(7)
    classes = [list(rng.integers(3, 290, n)) for n in (1, 3, 2, 4, 1)]

    def token_types(ids, prompt_length):
        return {"token_type_ids": (torch.arange(ids.shape[1]) >= prompt_length).long()[None]}

    pixel_rows = [pixels[i : i + 1] for i in range(len(PREFIXES))]
    theirs = vt.hf_class_log_likelihoods(model_hf, PREFIXES, pixel_rows, classes, token_types)
    model, _ = fgjax.hf.load(path)
    graphdef, state = nnx.split(model)
    tokens, mask = pad_prompts(PREFIXES, bucket=8)
    chunks = inference.pack_continuations(classes, 5)
    ours = inference.score_continuations(
        graphdef, state, tokens, mask, fgjax_images(pixels), chunks, num_classes=len(classes)
    )
    print(f"[parity] paligemma2 class log-likelihoods: {ht.rel_err(ours, theirs):.2e}")
    np.testing.assert_allclose(np.asarray(ours), theirs, rtol=1e-4, atol=0)
    # the naive reference (one forward of prompt + class each) marks its prefix too
    naive = inference.full_sequence_class_scores(
        graphdef, state, PREFIXES, fgjax_images(pixels), classes
    )
    np.testing.assert_allclose(naive, theirs, rtol=1e-4, atol=0)


def test_training_loss_equals_transformers_loss_with_labels(saved, pixels):
    """fgjax's VLM training loss (the prefix taken from the loss mask) equals transformers'
    loss with labels on the answers (the prefix from token_type_ids)."""
    model_hf, path, _ = saved("paligemma2")
    ids = torch.from_numpy(TOKENS.astype(np.int64))
    labels = torch.where(torch.from_numpy(IS_PREFIX), -100, ids)
    types = torch.from_numpy((~IS_PREFIX).astype(np.int64))
    with torch.no_grad():
        theirs = model_hf(
            input_ids=ids, pixel_values=pixels, token_type_ids=types, labels=labels
        ).loss.item()
    model, _ = fgjax.hf.load(path)
    batch = {
        "tokens": jnp.asarray(TOKENS),
        "images": fgjax_images(pixels),
        "input_mask": jnp.ones(TOKENS.shape, bool),
        "loss_mask": jnp.asarray(~IS_PREFIX),
    }
    loss = VlmTask().loss_fn({"decoder": True})
    total, count, _ = nnx.jit(loss)(model, batch)
    print(f"[parity] paligemma2 training loss {float(total / count):.6f} vs {theirs:.6f}")
    np.testing.assert_allclose(float(total / count), theirs, rtol=1e-5)


@nnx.jit
def forward_packed(model, tokens, images, segment_ids, positions, targets):
    prefix = prefix_before_targets(targets, segment_ids > 0, segment_ids)
    mask = segment_attention_mask(segment_ids)
    return model(tokens, images, attn_mask=mask, positions=positions, prefix_mask=prefix).logits


def test_packed_rows_keep_each_samples_prefix(saved, pixels):
    """The two rows packed into one (a segment mask, positions restarting, each prefix from
    the loss mask as training builds it) give each row's own logits: a prefix never reaches
    into the other sample."""
    _, path, (full, _) = saved("paligemma2")
    model, _ = fgjax.hf.load(path)
    packed = TOKENS.reshape(1, -1)
    segments = np.repeat([1, 2], TOKENS.shape[1])[None]
    positions = np.tile(np.arange(TOKENS.shape[1]), 2)[None]
    targets = (~IS_PREFIX).reshape(1, -1)
    images = fgjax_images(pixels)[None]  # [1, 2, H, W, 3]: both photographs in the row
    ours = forward_packed(model, packed, images, segments, positions, targets)
    ht.check("paligemma2 packed row", ours, full.reshape(1, -1, full.shape[-1]))


def test_prefix_of_packed_rows():
    """Each packed sample's prefix ends at its own first answer token."""
    targets = np.asarray([[0, 0, 1, 1, 0, 0, 0, 1, 0]], bool)
    segments = np.asarray([[1, 1, 1, 1, 2, 2, 2, 2, 0]])
    real = segments > 0
    prefix = prefix_before_targets(targets, real, segments)
    np.testing.assert_array_equal(prefix, [[1, 1, 0, 0, 1, 1, 1, 0, 0]])
    np.testing.assert_array_equal(prefix_before_targets(targets, real), [[1, 1] + [0] * 7])


@pytest.mark.parametrize("name", list(CASES))
def test_save_round_trip(saved, pixels, name, tmp_path):
    hf, path, _ = saved(name)
    model, cfg = fgjax.hf.load(path)
    fgjax.hf.save(model, tmp_path / "out")
    with safe_open(f"{tmp_path}/out/model.safetensors", "np") as f:
        assert "multi_modal_projector.linear.weight" in set(f.keys())
    again = tf.PaliGemmaForConditionalGeneration.from_pretrained(tmp_path / "out")
    assert ht.state_dicts_equal(hf, again) == []
    assert fgjax.hf.load(tmp_path / "out")[1] == cfg
    ids = torch.from_numpy(TOKENS.astype(np.int64))
    types = torch.from_numpy((~IS_PREFIX).astype(np.int64))
    with torch.no_grad():
        theirs = again(input_ids=ids, pixel_values=pixels, token_type_ids=types).logits.numpy()
    ht.check(f"transformers on fgjax's {name} export", theirs,
             forward(model, TOKENS, fgjax_images(pixels), IS_PREFIX))  # fmt: skip
