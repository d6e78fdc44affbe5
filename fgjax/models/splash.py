"""TPU flash attention: jax's Pallas splash-attention kernel for the masks it describes by
structure -- causal, sliding-window (causal within a window) and packed rows (causal within
each segment) -- with right padding, grouped-query heads and Gemma 2's logit soft-cap.

Axis legend as in attention.py: B batch, T tokens, N query heads, K key/value heads,
G = N // K, H head_dim.

The kernel never builds the [T, T] mask or the logits: it skips the blocks the mask hides and
keeps a running softmax, which is what makes 2048+-token rows cheap on a TPU. Off a TPU it
runs in Pallas' interpreter (slow, exact), which is how the tests check it on a CPU.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from fgjax.models import partitioning, platform

BLOCK = 128  # the kernel's tile along T; rows must be a multiple of it


@functools.lru_cache(maxsize=32)
def _kernel(length: int, group: int, window: int | None, softcap: float | None, interpret: bool):
    """A splash MQA kernel over one KV head's G query heads (cached: building one is slow)."""
    from jax.experimental.pallas.ops.tpu.splash_attention import (
        splash_attention_kernel as kernel_lib,
    )
    from jax.experimental.pallas.ops.tpu.splash_attention import (
        splash_attention_mask as mask_lib,
    )

    shape = (length, length)
    if window is None:
        one = mask_lib.CausalMask(shape)
    else:  # query t sees keys t - window < s <= t, as attention.window_mask
        one = mask_lib.LocalMask(shape, window_size=(window - 1, 0), offset=0)
    block = min(BLOCK, length)
    sizes = kernel_lib.BlockSizes(
        block_q=block, block_kv=block, block_kv_compute=block, block_q_dkv=block,
        block_kv_dkv=block, block_kv_dkv_compute=block, block_q_dq=block, block_kv_dq=block,
    )  # fmt: skip
    # the kernel holds its mask's block tables as arrays: made eagerly, so that a kernel first
    # built inside a jit trace can be cached and reused by the next one
    with jax.ensure_compile_time_eval():
        return kernel_lib.make_splash_mqa_single_device(
            mask_lib.MultiHeadMask([one] * group), block_sizes=sizes,
            attn_logits_soft_cap=softcap, interpret=interpret,
        )  # fmt: skip


def splash_attention(
    q, k, v, *, scale: float, key_lengths, segment_ids=None, window=None, softcap=None,
    interpret: bool | None = None,
):  # fmt: skip
    """q: [B, T, N, H]; k, v: [B, T, K, H] (no KV cache: T new tokens attend among
    themselves); key_lengths: i32[B], each row's real tokens (right padding); segment_ids:
    i32[B, T] of packed rows (1, 2, ... per segment) or None; window: sliding-window size or
    None -> [B, T, N, H], equal to the reference attention at every real position (padded
    queries see only padded keys here, the reference's see the real ones; both are ignored).

    T must be a multiple of 128 on a TPU (the kernel's tile). `interpret` defaults to True
    unless the program is built for a TPU (models/platform.py).
    """
    batch, length, heads, head_dim = q.shape
    kv_heads = k.shape[2]
    if interpret is None:
        interpret = platform.target() != "tpu"
    if length % min(BLOCK, length) and not interpret:
        raise ValueError(
            f"splash attention needs rows of a multiple of {BLOCK} tokens, not {length}"
        )
    from jax.experimental.pallas.ops.tpu.splash_attention import (
        splash_attention_kernel as kernel_lib,
    )

    real = jnp.arange(length)[None, :] < key_lengths[:, None]
    segments = jnp.ones((batch, length), jnp.int32) if segment_ids is None else segment_ids
    # padding is segment 0: real queries never see it, and no query row is empty
    segments = jnp.where(real, segments, 0).astype(jnp.int32)
    kernel = _kernel(length, heads // kv_heads, window, softcap, interpret)
    # [B, K, G, T, H] queries (scaled: the kernel takes them pre-scaled), [B, K, T, H] keys
    qg = (q * jnp.asarray(scale, q.dtype)).reshape(batch, length, kv_heads, -1, head_dim)
    qg = qg.transpose(0, 2, 3, 1, 4)
    kg, vg = k.transpose(0, 2, 1, 3), v.transpose(0, 2, 1, 3)

    def one_row(q_row, k_row, v_row, seg):
        ids = kernel_lib.SegmentIds(q=seg, kv=seg)
        return jax.vmap(lambda a, b, c: kernel(a, b, c, segment_ids=ids))(q_row, k_row, v_row)

    # XLA cannot partition a Mosaic kernel: on a mesh it runs per shard of rows and KV heads
    rows = partitioning.per_shard(
        jax.vmap(one_row),
        [("batch", "kv_heads", None, None, "head_dim"), ("batch", "kv_heads", None, "head_dim"),
         ("batch", "kv_heads", None, "head_dim"), ("batch", None)],
    )  # fmt: skip
    out = rows(qg, kg, vg, segments)  # [B, K, G, T, H]
    return out.transpose(0, 3, 1, 2, 4).reshape(batch, length, heads, head_dim)
