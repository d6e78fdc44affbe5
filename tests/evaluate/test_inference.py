"""The jitted model functions of evaluation against naive references on a random tiny VLM:
shared-prefix class scoring vs one full forward per class, KV-cache greedy decoding vs
re-running the whole sequence per token, letter probabilities and features vs full forwards."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from fgjax import models
from fgjax.evaluate import inference
from fgjax.evaluate.prompts import pad_prompts
from fgjax.models import presets

PROMPT_LENGTHS = (13, 9, 11)  # rows of different lengths: right padding inside a batch


@pytest.fixture(scope="module")
def vlm():
    cfg = presets.vlm("tiny_clip", "tiny_llama", encoder_overrides={"image_size": 16})
    graphdef, state = nnx.split(models.build(cfg, seed=3))
    rng = np.random.default_rng(0)
    prompts = []
    for length in PROMPT_LENGTHS:
        prompt = rng.integers(3, 300, length).astype(np.int32)
        prompt[1 : 1 + cfg.num_image_tokens] = cfg.image_token_id
        prompts.append(prompt)
    images = rng.normal(size=(len(prompts), 16, 16, 3)).astype(np.float32)
    return cfg, graphdef, state, prompts, images


def test_pack_continuations_fills_chunks_in_class_order():
    chunks = inference.pack_continuations([[5], [6, 7, 8], [9, 10], [11, 12, 13, 14]], 5)
    np.testing.assert_array_equal(
        chunks.class_ids, [[0, 1, 1, 1, 4], [2, 2, 4, 4, 4], [3, 3, 3, 3, 4]]
    )
    np.testing.assert_array_equal(chunks.offsets[0], [0, 0, 1, 2, 0])
    np.testing.assert_array_equal(chunks.tokens[2], [11, 12, 13, 14, 0])
    with pytest.raises(ValueError, match="raise chunk_tokens"):
        inference.pack_continuations([[1, 2, 3]], 2)
    with pytest.raises(ValueError, match="no tokens"):
        inference.pack_continuations([[1], []], 4)


def test_shared_prefix_scores_equal_full_sequence_scores(vlm):
    """Classes of 1 to 5 tokens packed 7 to a chunk (so chunks end in padding and a class never
    straddles two), rows with right-padded prompts of different lengths."""
    cfg, graphdef, state, prompts, images = vlm
    rng = np.random.default_rng(1)
    classes = [list(rng.integers(3, 300, n)) for n in (1, 3, 5, 2, 4, 1, 2, 5, 3)]
    chunks = inference.pack_continuations(classes, 7)
    assert chunks.tokens.shape[0] >= 4 and (chunks.class_ids == len(classes)).any()
    tokens, mask = pad_prompts(prompts, bucket=8)
    shared = inference.score_continuations(
        graphdef, state, tokens, mask, images, chunks, num_classes=len(classes)
    )
    naive = inference.full_sequence_class_scores(graphdef, state, prompts, images, classes)
    assert shared.shape == (len(prompts), len(classes))
    np.testing.assert_allclose(np.asarray(shared), naive, atol=1e-4, rtol=0)
    # the scores are real log-probabilities: different per class and row, all negative
    assert np.all(naive < 0) and len(np.unique(np.round(naive, 3))) == naive.size


@functools.partial(jax.jit, static_argnames="graphdef")
def last_log_probs(graphdef, state, tokens, mask, images):
    """f32[B, V] after each row's last real token, from one full forward without a cache."""
    logits = nnx.merge(graphdef, state)(tokens, images, input_mask=mask).logits
    last = jnp.take_along_axis(logits, (mask.sum(1) - 1)[:, None, None], axis=1)[:, 0]
    return jax.nn.log_softmax(last)


def test_greedy_generation_equals_rerunning_the_sequence(vlm):
    cfg, graphdef, state, prompts, images = vlm
    steps = 5
    tokens, mask = pad_prompts(prompts, bucket=8)
    grown, grown_mask = pad_prompts(prompts, max(PROMPT_LENGTHS) + steps, bucket=8)
    lengths = grown_mask.sum(1)
    expected = np.zeros((len(prompts), steps), np.int32)
    for step in range(steps):  # argmax after a full forward of the sequence so far
        logp = last_log_probs(graphdef, state, grown, grown_mask, images)
        expected[:, step] = np.argmax(logp, axis=1)
        grown[np.arange(len(prompts)), lengths] = expected[:, step]
        grown_mask[np.arange(len(prompts)), lengths] = True
        lengths += 1
    stop = int(expected[0, 2])  # row 0 stops at its third token; others may stop too
    out = np.asarray(
        inference.greedy_generate(
            graphdef, state, tokens, mask, images, jnp.asarray([stop]), max_new_tokens=steps
        )
    )
    for row, want in enumerate(expected.tolist()):
        cut = want.index(stop) + 1 if stop in want else steps
        np.testing.assert_array_equal(out[row, :cut], want[:cut])
        assert np.all(out[row, cut:] == -1)


@functools.partial(jax.jit, static_argnames="graphdef")
def full_forward(graphdef, state, tokens, mask, images):
    model = nnx.merge(graphdef, state)
    out = model(tokens, images, input_mask=mask, return_hidden=True)
    encoded = model.encoder(images)
    return out.last_hidden, out.hidden_states[1], encoded.last_hidden_state, encoded.pooled


def test_hidden_features_match_a_full_forward(vlm):
    cfg, graphdef, state, prompts, images = vlm
    tokens, mask = pad_prompts(prompts, bucket=8)
    features = inference.vlm_features(graphdef, state, tokens, mask, images)
    layer1 = inference.vlm_features(graphdef, state, tokens, mask, images, layer=1)
    last, first_block, patches, pooled = full_forward(graphdef, state, tokens, mask, images)
    for row, length in enumerate(PROMPT_LENGTHS):  # padding is causal-invisible to real tokens
        np.testing.assert_allclose(features["last"][row], last[row, length - 1], atol=1e-5)
        np.testing.assert_allclose(features["mean"][row], last[row, :length].mean(0), atol=1e-5)
        want = first_block[row, :length].mean(0)
        np.testing.assert_allclose(layer1["mean"][row], want, atol=1e-5)
    vision = inference.vision_features(graphdef, state, images)
    prefix = cfg.encoder.num_prefix_tokens  # CLIP: the CLS token
    np.testing.assert_allclose(vision["patch_mean"], patches[:, prefix:].mean(1), atol=1e-5)
    np.testing.assert_allclose(vision["cls"], pooled, atol=1e-5)


def test_fitted_chunks_are_as_few_and_no_longer_than_needed():
    classes = [[1] * n for n in [1, 2, 3, 1, 2, 5, 4, 1, 2, 2] * 19]  # 437 tokens, at most 5
    for cap in (16, 64, 128, 256, 512):
        rows = len(inference.pack_continuations(classes, cap).tokens)
        fitted = inference.fitted_chunk_tokens(classes, cap)
        assert fitted % 8 == 0 and fitted <= -(-cap // 8) * 8
        assert len(inference.pack_continuations(classes, fitted).tokens) == rows
        if fitted > 8:  # one multiple shorter would need more rows
            assert len(inference.pack_continuations(classes, fitted - 8).tokens) > rows
    assert inference.fitted_chunk_tokens(classes, 512) == 440  # one row: 437 rounded up to 8
