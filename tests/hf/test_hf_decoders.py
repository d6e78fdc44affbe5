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
