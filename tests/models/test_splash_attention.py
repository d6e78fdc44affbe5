"""The TPU splash-attention kernel (run by Pallas' interpreter on this CPU) against fgjax's
reference attention: causal, sliding-window and packed rows, right padding, grouped-query
heads and a logit soft-cap; outputs and gradients at the real positions.

Expected error: float32 with an online softmax over 128-key blocks, about 1e-6 on outputs of
order 1; the limits are 10x that, and a wrong mask moves outputs by ~0.1."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fgjax.models import attention
from fgjax.models.splash import splash_attention

B, T, N, K, H = 2, 256, 4, 2, 32
LENGTHS = jnp.asarray([256, 170], jnp.int32)
SEGMENTS = jnp.asarray([[1] * 100 + [2] * 156, [1] * 60 + [2] * 40 + [3] * 70 + [0] * 86])
TOL = 1e-5


def inputs(seed=0):
    keys = jax.random.split(jax.random.key(seed), 3)
    q = jax.random.normal(keys[0], (B, T, N, H))
    k = jax.random.normal(keys[1], (B, T, K, H))
    v = jax.random.normal(keys[2], (B, T, K, H))
    return q, k, v


def dense_mask(segments=None, window=None):
    mask = attention.CausalMask(LENGTHS).dense(T)
    if segments is not None:
        mask &= segments[:, :, None] == segments[:, None, :]
    positions = jnp.broadcast_to(jnp.arange(T), (B, T))
    return attention.window_mask(mask, positions, window)


CASES = {
    "causal_padded": dict(),
    "sliding_window": dict(window=48),
    "packed": dict(segments=SEGMENTS),
    "packed_window_softcap": dict(segments=SEGMENTS, window=32, softcap=2.0),
}


@pytest.mark.parametrize("name", list(CASES))
def test_splash_equals_reference_forward_and_backward(name):
    case = CASES[name]
    segments, window, softcap = case.get("segments"), case.get("window"), case.get("softcap")
    q, k, v = inputs()
    scale = H**-0.5
    real = (jnp.arange(T)[None, :] < LENGTHS[:, None])[:, :, None, None]
    weights = jax.random.normal(jax.random.key(9), (B, T, N, H)) * real  # real positions only

    def reference(q, k, v):
        mask = dense_mask(segments, window)
        return attention.dot_product_attention(q, k, v, mask, scale, "reference", softcap)

    def splash(q, k, v):
        return splash_attention(q, k, v, scale=scale, key_lengths=LENGTHS,
                                segment_ids=segments, window=window, softcap=softcap)  # fmt: skip

    ours, theirs = jax.jit(splash)(q, k, v), jax.jit(reference)(q, k, v)
    err = float(jnp.max(jnp.abs((ours - theirs) * real)))
    print(f"[splash] {name}: forward max|diff| {err:.2e}")
    assert err < TOL
    grads = [jax.jit(jax.grad(lambda *a, f=f: jnp.sum(f(*a) * weights), argnums=(0, 1, 2)))(q, k, v)
             for f in (splash, reference)]  # fmt: skip
    for which, g_ours, g_ref in zip("qkv", *grads):
        scale_ref = float(jnp.max(jnp.abs(g_ref)))
        gerr = float(jnp.max(jnp.abs(g_ours - g_ref))) / scale_ref
        print(f"[splash] {name}: d{which} max|diff|/max {gerr:.2e}")
        assert gerr < TOL


def test_a_wrong_mask_is_caught():
    """The same comparison with the segments left out of the kernel fails by far more."""
    q, k, v = inputs()
    ours = splash_attention(q, k, v, scale=H**-0.5, key_lengths=LENGTHS)
    theirs = attention.dot_product_attention(q, k, v, dense_mask(SEGMENTS), H**-0.5)
    real = (jnp.arange(T)[None, :] < LENGTHS[:, None])[:, :, None, None]
    assert float(jnp.max(jnp.abs((ours - theirs) * real))) > 1000 * TOL
    np.testing.assert_array_equal(ours.shape, (B, T, N, H))
