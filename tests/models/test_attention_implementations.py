"""Every attention implementation available on this machine against fgjax's reference, under
each mask the models build: causal, padding, prefix-LM, sliding-window, block-diagonal
(packed rows), and a KV cache. The reference is the one the transformers parity tests use."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from fgjax import models
from fgjax.data.packing import segment_attention_mask
from fgjax.models import attention, presets

B, T, N, K, H = 2, 12, 4, 2, 8


def masks() -> dict[str, np.ndarray]:
    causal = np.tril(np.ones((T, T), bool))[None].repeat(B, 0)
    padding = causal & (np.arange(T) < np.array([[T], [T - 4]]))[:, None, :]
    mask_ar = np.concatenate([np.zeros((B, 5), int), np.ones((B, T - 5), int)], axis=1)
    prefix = np.asarray(attention.make_attention_mask(jnp.ones((B, T), bool), mask_ar))
    positions = np.broadcast_to(np.arange(T), (B, T))
    window = np.asarray(attention.window_mask(jnp.asarray(causal), jnp.asarray(positions), 3))
    segments = np.array([[1] * 5 + [2] * 7, [1] * 8 + [2] * 3 + [0]])
    packed = np.asarray(segment_attention_mask(jnp.asarray(segments)))
    return dict(causal=causal, padding=padding, prefix_lm=prefix, sliding_window=window,
                block_diagonal=packed)  # fmt: skip


def available() -> list[str]:
    """The implementations this backend runs: cuDNN's only on a GPU."""
    return ["xla"] + (["cudnn"] if jax.default_backend() == "gpu" else [])


@pytest.mark.parametrize("implementation", available())
@pytest.mark.parametrize("name", list(masks()))
def test_each_implementation_matches_the_reference_under_each_mask(implementation, name):
    mask = masks()[name]
    rng = np.random.default_rng(0)
    q, k, v = (rng.normal(size=s).astype(np.float32) for s in ((B, T, N, H), (B, T, K, H), (B, T, K, H)))
    dtype = jnp.bfloat16 if implementation == "cudnn" else jnp.float32
    q, k, v = (jnp.asarray(x, dtype) for x in (q, k, v))
    ref = attention.dot_product_attention(q, k, v, jnp.asarray(mask), H**-0.5, "reference")
    out = attention.dot_product_attention(q, k, v, jnp.asarray(mask), H**-0.5, implementation)
    rows = mask.any(-1)  # a query that sees no key (padding) has no defined output
    err = np.abs(np.asarray(out, np.float32) - np.asarray(ref, np.float32))[rows].max()
    print(f"{implementation} {name}: max abs error {err:.1e}")
    # float32: sums of <= 12 terms in another order, ~1e-7; bfloat16 (cuDNN): ~1e-2
    assert err < (5e-2 if dtype == jnp.bfloat16 else 1e-5)


@pytest.mark.parametrize("implementation", ["reference", *available()])
def test_the_structured_causal_mask_is_the_dense_one(implementation):
    """CausalMask (is_causal and key lengths for jax's fused attention) against the dense
    causal-and-padding mask through the reference, at every query that sees a key."""
    lengths = np.array([T, T - 4])
    dense = masks()["padding"]
    rng = np.random.default_rng(2)
    q, k, v = (rng.normal(size=s).astype(np.float32) for s in ((B, T, N, H), (B, T, K, H), (B, T, K, H)))
    dtype = jnp.bfloat16 if implementation == "cudnn" else jnp.float32
    q, k, v = (jnp.asarray(x, dtype) for x in (q, k, v))
    ref = attention.dot_product_attention(q, k, v, jnp.asarray(dense), H**-0.5, "reference")
    structured = attention.CausalMask(jnp.asarray(lengths, jnp.int32))
    out = attention.dot_product_attention(q, k, v, structured, H**-0.5, implementation)
    err = np.abs(np.asarray(out, np.float32) - np.asarray(ref, np.float32))[dense.any(-1)].max()
    assert err < (5e-2 if dtype == jnp.bfloat16 else 1e-5), err


def test_a_decoder_with_jax_attention_gives_the_reference_logits_also_with_a_cache():
    """(The xla decoder runs the structured causal mask; the cached one a dense mask.)"""
    cfg = presets.decoder("tiny_llama")
    reference = models.build(dataclasses.replace(cfg, attention="reference"), seed=0)
    other = models.build(dataclasses.replace(cfg, attention="xla"), seed=0)
    tokens = jnp.asarray(np.random.default_rng(1).integers(0, cfg.vocab_size, (B, T)))
    input_mask = jnp.asarray(np.arange(T) < np.array([[T], [T - 3]]))

    @nnx.jit
    def logits(model, tokens, input_mask):
        return model(tokens, input_mask=input_mask).logits

    @nnx.jit
    def cached(model, tokens):  # the prompt into a cache, then the last token alone
        cache = model.init_cache(B, T)
        out = model(tokens[:, :-1], cache=cache)
        return model(tokens[:, -1:], cache=out.cache).logits

    a, b = logits(reference, tokens, input_mask), logits(other, tokens, input_mask)
    valid = np.asarray(input_mask)
    scale = float(jnp.abs(a).max())
    assert float(jnp.abs(a - b)[valid].max()) < 1e-5 * scale
    assert float(jnp.abs(cached(reference, tokens) - cached(other, tokens)).max()) < 1e-5 * scale


def test_auto_keeps_the_reference_where_parity_is_measured():
    assert attention.resolve_implementation("auto", jnp.float64) == "reference"
    expected = {"cpu": "reference", "tpu": "splash"}.get(jax.default_backend(), "xla")
    assert attention.resolve_implementation("auto", jnp.float32) == expected
    # the default per backend: splash on a TPU, XLA's attention on a GPU, always the explicit one
    auto = {b: attention.resolve_implementation("auto", jnp.bfloat16, b) for b in ("cpu", "gpu", "tpu")}
    assert auto == {"cpu": "reference", "gpu": "xla", "tpu": "splash"}
    assert attention.resolve_implementation("cudnn", jnp.bfloat16, "tpu") == "cudnn"
    with pytest.raises(ValueError, match="attention='flash'; choose one of"):
        dataclasses.replace(presets.decoder("tiny_llama"), attention="flash").validate()


@pytest.mark.parametrize("preset", ["tiny_llama", "tiny_mistral_window", "tiny_llama_packed"])
def test_a_decoder_with_splash_attention_gives_the_reference_logits(preset):
    """attention="splash" (Pallas' interpreter on this CPU, the kernel on a TPU) in a whole
    scanned, rematerialized decoder: right-padded causal rows, Mistral's sliding window, and
    packed rows (segment ids, positions restarting per sample)."""
    cfg = presets.decoder("tiny_llama", remat="full")
    if preset == "tiny_mistral_window":
        cfg = dataclasses.replace(cfg, family="mistral", sliding_window=40)
    length = 128  # the kernel's tile
    reference = models.build(dataclasses.replace(cfg, attention="reference"), seed=0)
    splash = models.build(dataclasses.replace(cfg, attention="splash"), seed=0)
    tokens = jnp.asarray(np.random.default_rng(3).integers(0, cfg.vocab_size, (B, length)))
    input_mask = jnp.asarray(np.arange(length) < np.array([[length], [length - 50]]))

    kwargs = {}
    if preset == "tiny_llama_packed":  # samples of 30, 50 and 20 tokens, then padding
        sizes = [[30, 50, 20, 28], [60, 18, 0, 50]]  # the last of each row is padding
        segments = np.concatenate([[np.repeat(np.arange(1, 5), r)] for r in sizes])
        segments = np.where(np.arange(length) < np.array([[100], [78]]), segments, 0)
        positions = np.stack([np.concatenate([np.arange(n) for n in r]) for r in sizes])
        kwargs = dict(segment_ids=jnp.asarray(segments), positions=jnp.asarray(positions))
        input_mask = jnp.asarray(segments > 0)

    @nnx.jit
    def logits(model, tokens, input_mask, kwargs):
        return model(tokens, input_mask=input_mask, **kwargs).logits

    a = logits(reference, tokens, input_mask, kwargs)
    b = logits(splash, tokens, input_mask, kwargs)
    valid = np.asarray(input_mask)
    err = float(jnp.abs(a - b)[valid].max()) / float(jnp.abs(a).max())
    print(f"[splash decoder] {preset}: {err:.2e}")
    if preset == "tiny_llama_packed":  # each sample as if alone in its row
        alone = logits(reference, tokens[:1, 30:80], jnp.ones((1, 50), bool), {})
        np.testing.assert_allclose(a[0, 30:80], alone[0], atol=1e-5 * float(jnp.abs(a).max()))
    assert err < 1e-5  # float32, another summation order: ~1e-7


SHARDED_SPLASH = """
import jax, jax.numpy as jnp, numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P
from fgjax import sharding
from fgjax.models import attention, partitioning, splash
mesh = sharding.make_mesh({"data": 2, "fsdp": 2, "tensor": 2}, jax.devices()[:8])
B, T, N, K, H = 4, 128, 4, 2, 8
rng = np.random.default_rng(0)
q, k, v = (jnp.asarray(rng.normal(size=s), jnp.float32) for s in ((B, T, N, H), (B, T, K, H), (B, T, K, H)))
lengths = jnp.asarray([128, 100, 77, 128])
mask = attention.CausalMask(key_lengths=lengths)
dense = np.tril(np.ones((T, T), bool))[None] & (np.arange(T)[None, None] < np.asarray(lengths)[:, None, None])

def loss(fn, q, k, v):
    out = fn(q, k, v)
    return jnp.sum(jnp.where(jnp.asarray(np.arange(T) < np.asarray(lengths)[:, None])[..., None, None], out, 0) ** 2), out

ref = lambda q, k, v: attention.dot_product_attention(q, k, v, jnp.asarray(dense), H ** -0.5, "reference")
kernel = lambda q, k, v: splash.splash_attention(q, k, v, scale=H ** -0.5, key_lengths=lengths)
with partitioning.activation_sharding(mesh):
    step = jax.jit(jax.value_and_grad(lambda q, k, v: loss(kernel, q, k, v), argnums=(0, 1, 2), has_aux=True))
    lowered = step.lower(q, k, v)
    (_, got), grads = step(q, k, v)
assert "shard_map" in lowered.as_text() or "sdy.manual_computation" in lowered.as_text()
(_, want), want_grads = jax.value_and_grad(lambda q, k, v: loss(ref, q, k, v), argnums=(0, 1, 2), has_aux=True)(q, k, v)
real = np.arange(T) < np.asarray(lengths)[:, None]
err = float(np.abs(np.asarray(got) - np.asarray(want))[real].max())
gerr = max(float(np.abs(np.asarray(a) - np.asarray(b)).max() / np.abs(np.asarray(b)).max()) for a, b in zip(grads, want_grads))
print(f"sharded splash: output {err:.2e}, gradients {gerr:.2e}")
assert err < 1e-5 and gerr < 1e-5, (err, gerr)
"""


def test_splash_attention_on_a_mesh_runs_per_shard_and_matches_the_reference(tmp_path):
    """XLA cannot partition the Mosaic kernel ("Please wrap the call in a shard_map", as
    compiling for a TPU topology showed): on a mesh it runs per shard of rows and KV heads. 8
    fake CPU devices, data x fsdp x tensor = 2 x 2 x 2, Pallas' interpreter; forward and
    gradients against the reference."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "JAX_NUM_CPU_DEVICES": "8", "JAX_PLATFORMS": "cpu"}
    done = subprocess.run([sys.executable, "-c", SHARDED_SPLASH], env=env, capture_output=True,
                          text=True, timeout=600)  # fmt: skip
    print(done.stdout)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "sharded splash" in done.stdout
