"""Parity of fgjax decoders loaded with fgjax.hf.load against transformers (float32)."""

import copy
import os
import shutil
import tracemalloc

import hf_testing as ht
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import transformers as tf
from flax import nnx

import fgjax.hf
from fgjax.models import RopeConfig

BASE = ht.TEXT
LLAMA3_ROPE = dict(
    rope_type="llama3",
    rope_theta=500000.0,
    factor=8.0,
    low_freq_factor=1.0,
    high_freq_factor=4.0,
    original_max_position_embeddings=16,
)
# The 2024-2025 decoders. Windows of 6 keys over 24-token rows, so the sliding layers differ
# from the full ones; soft caps small enough to bend these random models' logits.
NEW_FAMILIES = {
    "qwen3_qk_norm_tied": lambda: tf.Qwen3ForCausalLM(
        tf.Qwen3Config(**BASE, head_dim=32, tie_word_embeddings=True)
    ),
    "qwen3_sliding_from_layer_1": lambda: tf.Qwen3ForCausalLM(
        tf.Qwen3Config(**BASE, use_sliding_window=True, sliding_window=6, max_window_layers=1)
    ),
    "gemma2_softcaps_alternating": lambda: tf.Gemma2ForCausalLM(
        tf.Gemma2Config(
            **BASE,
            head_dim=16,
            sliding_window=6,
            query_pre_attn_scalar=24,
            attn_logit_softcapping=0.2,
            final_logit_softcapping=0.3,
        )
    ),  # fmt: skip
    "gemma3_two_ropes": lambda: tf.Gemma3ForCausalLM(
        tf.Gemma3TextConfig(
            **{**BASE, "num_hidden_layers": 3},
            head_dim=16,
            sliding_window=6,
            sliding_window_pattern=3,
            query_pre_attn_scalar=20,
            rope_parameters=GEMMA3_ROPES,
        )
    ),  # fmt: skip
}
GEMMA3_ROPES = {  # as published: linear scaling on the full layers, a low base on sliding ones
    "full_attention": dict(rope_type="linear", factor=8.0, rope_theta=1_000_000.0),
    "sliding_attention": dict(rope_type="default", rope_theta=10_000.0),
}
CASES = {
    "llama_gqa": lambda: tf.LlamaForCausalLM(tf.LlamaConfig(**BASE)),
    "llama_tied_llama3_rope": lambda: tf.LlamaForCausalLM(
        tf.LlamaConfig(**BASE, tie_word_embeddings=True, rope_parameters=LLAMA3_ROPE)
    ),
    "mistral_sliding_window": lambda: tf.MistralForCausalLM(
        tf.MistralConfig(**BASE, sliding_window=6)
    ),
    "qwen2_bias_tied": lambda: tf.Qwen2ForCausalLM(
        tf.Qwen2Config(**BASE, tie_word_embeddings=True)
    ),
    # MQA, and head_dim 32 != hidden_size / heads = 16
    "gemma_mqa": lambda: tf.GemmaForCausalLM(
        tf.GemmaConfig(**{**BASE, "num_key_value_heads": 1}, head_dim=32)
    ),
    **NEW_FAMILIES,
}
TOKENS = ht.tokens(2, 24, BASE["vocab_size"], seed=1)


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """saved(name) -> (transformers model, its directory, its reference logits)."""
    return ht.saved_models(tmp_path_factory, CASES, lambda m: m(TOKENS[1]).logits.numpy())


def logits(model):
    return np.asarray(forward(model, TOKENS[0]))


@nnx.jit
def forward(model, tokens):
    return model(tokens).logits


@pytest.mark.parametrize("name", list(CASES))
def test_decoder_parity(saved, name):
    _, path, reference = saved(name)
    model, cfg = fgjax.hf.load(path)
    assert cfg.family == name.split("_")[0]
    ht.check(f"{name} logits", logits(model), reference)


@pytest.mark.parametrize("name", ["llama_gqa", "gemma_mqa"])
def test_unrolled_decoder_parity(saved, name):
    _, path, reference = saved(name)
    model, cfg = fgjax.hf.load(path, scan_layers=False)
    assert not cfg.scan_layers
    ht.check(f"{name} logits, unrolled layers", logits(model), reference)


def test_llama3_rope_v4_schema_and_negative_control(saved, tmp_path):
    """The same checkpoint with a v4 config (rope_theta + rope_scaling) loads identically;
    ignoring the llama3 scaling breaks parity, so the test can tell."""
    name = "llama_tied_llama3_rope"
    _, path, reference = saved(name)
    v4 = str(tmp_path / "v4")
    shutil.copytree(path, v4)

    def to_v4(config):
        params = config.pop("rope_parameters")
        config["rope_theta"] = params.pop("rope_theta")
        config["rope_scaling"] = params
        return config

    ht.edit_config(v4, to_v4)
    model, cfg = fgjax.hf.load(v4)
    assert cfg.rope.rope_type == "llama3" and cfg.rope.original_max_positions == 16
    assert cfg.tie_embeddings
    ht.check(f"{name} logits, v4 config schema", logits(model), reference)
    plain, _ = fgjax.hf.load(v4, rope=RopeConfig(theta=500000.0))
    # Only the low frequencies differ, and their angles stay small over 24 positions: about
    # 1e-2 (systematic, not float noise). 10x TOL is 10x below that and 10x above what the
    # parity check allows (float32 parity errors are ~3e-7).
    assert ht.rel_err(logits(plain), reference) > 10 * ht.TOL


def test_sharded_checkpoint(saved, tmp_path):
    hf_model, _, reference = saved("llama_gqa")
    sharded = ht.save_pretrained(hf_model, tmp_path / "sharded", max_shard_size="40KB")
    shards = [f for f in os.listdir(sharded) if f.endswith(".safetensors")]
    assert len(shards) > 3 and "model.safetensors.index.json" in os.listdir(sharded)
    model, _ = fgjax.hf.load(sharded)
    ht.check(f"llama_gqa logits, {len(shards)} shards", logits(model), reference)


@pytest.mark.parametrize("name", list(CASES))
def test_save_round_trip(saved, name, tmp_path):
    """fgjax.hf.save writes what transformers loads back bit-exactly, config included."""
    hf_model, path, _ = saved(name)
    model, cfg = fgjax.hf.load(path)
    fgjax.hf.save(model, tmp_path / "out", max_shard_bytes=100_000)
    again = type(hf_model).from_pretrained(tmp_path / "out")
    assert ht.state_dicts_equal(hf_model, again) == []
    _, cfg_again = fgjax.hf.load(tmp_path / "out")
    assert cfg_again == cfg


def test_bf16_checkpoint(saved, tmp_path):
    """bf16 tensors load exactly (upcast to float32, or kept in bfloat16)."""
    hf_model, _, _ = saved("qwen2_bias_tied")
    path = ht.save_pretrained(copy.deepcopy(hf_model).to(torch.bfloat16), tmp_path / "bf16")
    upcast = type(hf_model).from_pretrained(path, dtype=torch.float32)
    with torch.no_grad():
        reference = upcast(TOKENS[1]).logits.numpy()
    model, _ = fgjax.hf.load(path)
    ht.check("qwen2 logits from a bf16 checkpoint", logits(model), reference)
    half, cfg = fgjax.hf.load(path, dtype="bfloat16")
    assert cfg.param_dtype == "bfloat16" and half.embedding[...].dtype == jnp.bfloat16
    np.testing.assert_array_equal(
        half.embedding[...].astype(jnp.float32), model.embedding[...].astype(jnp.float32)
    )
    rounded, _ = fgjax.hf.load(saved("qwen2_bias_tied")[1], dtype="bfloat16")  # f32 -> bf16
    np.testing.assert_array_equal(
        rounded.stack.blocks.attn.q.bias[...], half.stack.blocks.attn.q.bias[...]
    )


def test_loading_streams_one_parameter_at_a_time(tmp_path):
    """Loading never holds a second copy of the model in host memory: numpy allocations
    (traced by tracemalloc) peak at about two stacked parameters (the one being assembled,
    and the previous one, which jax keeps referenced until the next transfer), well below
    the model size that reading the whole checkpoint first would add."""
    # 8 layers of equal-sized matrices: the largest stacked parameter is 1/7 of the model
    config = tf.LlamaConfig(**{**BASE, "num_hidden_layers": 8, "intermediate_size": 64})
    hf_model = tf.LlamaForCausalLM(config)
    path = ht.save_pretrained(hf_model, tmp_path)
    total = sum(p.numel() * 4 for p in hf_model.parameters())
    fgjax.hf.load(path)  # one-time allocations (tracing caches) out of the measurement
    tracemalloc.start()
    model, _ = fgjax.hf.load(path)
    kept, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    mib = 2**20
    print(f"[memory] model {total / mib:.2f} MiB; numpy while loading: peak {peak / mib:.2f} MiB,")
    print(f"  still allocated after {kept / mib:.2f} MiB, transient {(peak - kept) / mib:.2f} MiB")
    assert peak - kept < 0.5 * total
    np.testing.assert_array_equal(
        model.stack.blocks.mlp.up.kernel[...][7],
        hf_model.model.layers[7].mlp.up_proj.weight.detach().T,
    )


# each feature switched off breaks parity by far more than TOL, so the parity above shows it
FEATURES_OFF = {
    "gemma2_softcaps_alternating": [
        dict(attn_softcap=None),
        dict(final_softcap=None),
        dict(query_pre_attn_scalar=None),
        dict(layer_types=("full_attention",) * 2),
    ],
    "gemma3_two_ropes": [
        dict(local_rope=None),
        dict(query_pre_attn_scalar=None),
        dict(layer_types=("full_attention",) * 3),
    ],
    "qwen3_sliding_from_layer_1": [dict(layer_types=("full_attention",) * 2)],
}


@pytest.mark.parametrize(
    "name,off", [(name, off) for name, offs in FEATURES_OFF.items() for off in offs]
)
def test_switching_a_feature_off_breaks_parity(saved, name, off):
    _, path, reference = saved(name)
    model, _ = fgjax.hf.load(path, **off)
    err = ht.rel_err(logits(model), reference)
    print(f"[control] {name} with {off}: {err:.2e}")
    assert err > 10 * ht.TOL


@pytest.mark.parametrize("name", list(NEW_FAMILIES))
def test_unrolled_new_families(saved, name):
    """The unrolled stack picks each layer's mask and RoPE in Python, the scan per layer."""
    _, path, reference = saved(name)
    model, _ = fgjax.hf.load(path, scan_layers=False)
    ht.check(f"{name} logits, unrolled layers", logits(model), reference)


@nnx.jit
def _extend(model, tokens, cache):
    out = model(tokens, cache=cache)
    return jnp.argmax(out.logits[:, -1], axis=-1).astype(jnp.int32), out.cache


def greedy(model, prompt, steps: int) -> np.ndarray:
    """Greedy decoding with fgjax's KV cache: i32[B, P] -> i32[B, steps]."""
    cache = model.init_cache(prompt.shape[0], prompt.shape[1] + steps)
    token, cache = _extend(model, jnp.asarray(prompt), cache)
    out = [token]
    for _ in range(steps - 1):
        token, cache = _extend(model, token[:, None], cache)
        out.append(token)
    return np.stack(out, axis=1)


@pytest.mark.parametrize("name", ["llama_gqa", *NEW_FAMILIES])
def test_greedy_generation_equals_transformers_generate(saved, name):
    """20 tokens after an 8-token prompt: past every sliding window (6), through the cache."""
    hf_model, path, _ = saved(name)
    prompt = TOKENS[1][:, :8]
    settings = tf.GenerationConfig(max_new_tokens=20, do_sample=False, eos_token_id=None)
    with torch.no_grad():
        theirs = hf_model.generate(prompt, generation_config=settings, pad_token_id=0)
    model, _ = fgjax.hf.load(path)
    ours = greedy(model, prompt.numpy(), 20)
    np.testing.assert_array_equal(ours, theirs[:, 8:].numpy())
