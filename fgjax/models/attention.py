"""Attention: one implementation for every model, with RoPE, masks and a KV cache.

Axis legend (docstrings and einsum strings):
  B batch   T new (query) tokens   S key slots (= T, or the cache capacity)
  D width   N query heads   K key/value heads   G = N // K query heads per KV head
  H head_dim   L layers

Masks are boolean, True = may attend. Callers build one mask per forward and every layer
shares it. With a KV cache, new keys are written at `cache.end` and queries attend over all
S cache slots; the mask hides empty and padded slots.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from fgjax.models import mixed_dot, platform
from fgjax.models.config import RopeConfig
from fgjax.models.layers import Norm, at_least_float32

# -- masks ------------------------------------------------------------------------------------


def causal_mask(length: int) -> jax.Array:
    """bool[T, T]: lower triangular."""
    return jnp.tril(jnp.ones((length, length), bool))


def segment_mask(segment_ids: jax.Array) -> jax.Array:
    """segment_ids: i32[B, T] of packed rows (1, 2, ... per sample, 0 = padding) -> bool[B, T, T]:
    query t may attend to key s when s <= t and both belong to the same (non-padding) sample."""
    length = segment_ids.shape[-1]
    same = segment_ids[:, :, None] == segment_ids[:, None, :]
    return causal_mask(length)[None] & same & (segment_ids[:, None, :] > 0)


@functools.partial(
    jax.tree_util.register_dataclass, data_fields=["key_lengths", "segment_ids"],
    meta_fields=["window"],
)  # fmt: skip
@dataclasses.dataclass(frozen=True)
class CausalMask:
    """The causal mask over right-padded rows, by its structure rather than as bool[B, T, S]:
    query t sees keys s <= t with s < key_lengths[b], of its own sample in packed rows
    (`segment_ids`, as `segment_mask`), and t - s < window when set. jax's fused
    attention takes it as `is_causal` and sequence lengths, so cuDNN runs its causal kernel
    instead of a dense mask turned into a bias, and the splash kernel skips the hidden blocks;
    the reference builds the dense mask from it."""

    key_lengths: jax.Array  # i32[B]
    segment_ids: jax.Array | None = None  # i32[B, T] of packed rows
    window: int | None = None  # a sliding window (Mistral), static

    def dense(self, length: int) -> jax.Array:
        """bool[B, T, T]."""
        keys = jnp.arange(length)[None, None, :] < self.key_lengths[:, None, None]
        mask = causal_mask(length)[None] & keys
        if self.segment_ids is not None:
            mask &= segment_mask(self.segment_ids)
        positions = jnp.broadcast_to(jnp.arange(length), self.key_lengths.shape + (length,))
        return window_mask(mask, positions, self.window)


def make_attention_mask(input_mask: jax.Array, mask_ar: jax.Array) -> jax.Array:
    """bool[B, T, T] from big_vision's prefix-LM convention.

    input_mask: bool[B, T], False for padding. mask_ar: int[B, T], 1 where a token starts a
    new causal step and 0 where it joins the bidirectional block of the tokens before it:
    all ones is a causal mask, zeros for a prefix then ones is a prefix-LM mask.
    """
    cumsum = jnp.cumsum(mask_ar, axis=1)
    mask = cumsum[:, None, :] <= cumsum[:, :, None]
    return mask & input_mask[:, None, :] & input_mask[:, :, None]


class KVCache(NamedTuple):
    """Keys and values of every layer for decoding or shared-prefix scoring.

    k, v: [L, B, S, K, H] in the compute dtype; valid: bool[B, S], slots holding a real token;
    positions: i32[B, S], the position of each slot's token; end: i32[], next slot to write.
    """

    k: jax.Array
    v: jax.Array
    valid: jax.Array
    positions: jax.Array
    end: jax.Array

    @classmethod
    def empty(cls, num_layers, batch, capacity, num_kv_heads, head_dim, dtype) -> KVCache:
        kv = jnp.zeros((num_layers, batch, capacity, num_kv_heads, head_dim), dtype)
        return cls(
            kv,
            kv,
            jnp.zeros((batch, capacity), bool),
            jnp.zeros((batch, capacity), jnp.int32),
            jnp.zeros((), jnp.int32),
        )

    @property
    def capacity(self) -> int:
        return self.k.shape[2]


def cached_attention_mask(block_mask, input_mask, positions, cache: KVCache, window: int | None):
    """bool[B, T, S] for T new tokens written at `cache.end`, plus the updated cache metadata.

    block_mask: bool[B, T, T] among the new tokens; input_mask: bool[B, T]; positions: i32[B, T].
    Queries see every valid slot before `end`, and new slots as `block_mask` allows.
    """
    batch, length = input_mask.shape
    capacity, end = cache.capacity, cache.end
    new_part = jnp.zeros((batch, length, capacity), bool)
    new_part = jax.lax.dynamic_update_slice(
        new_part, block_mask & input_mask[:, None, :], (0, 0, end)
    )
    old_part = cache.valid[:, None, :] & (jnp.arange(capacity) < end)[None, None, :]
    valid = jax.lax.dynamic_update_slice(cache.valid, input_mask, (0, end))
    key_positions = jax.lax.dynamic_update_slice(cache.positions, positions, (0, end))
    mask = window_mask(old_part | new_part, positions, window, key_positions)
    return mask, valid, key_positions


def window_mask(mask, positions, window: int | None, key_positions=None):
    """Restricts bool[B, T, S] to keys less than `window` positions back (Mistral, the sliding
    layers of Gemma 2/3). positions: i32[B, T] of the queries; key_positions: i32[B, S]
    (default: the queries', S = T)."""
    if window is None:
        return mask
    keys = positions if key_positions is None else key_positions
    return mask & ((positions[:, :, None] - keys[:, None, :]) < window)


# -- rotary position embedding -------------------------------------------------------------


def rope_inv_freq(head_dim: int, rope: RopeConfig) -> np.ndarray:
    """float32[H/2] inverse frequencies, computed as transformers does (float32 throughout)."""
    exponent = np.arange(0, head_dim, 2, dtype=np.float32) / np.float32(head_dim)
    inv_freq = (np.float32(1.0) / (np.float32(rope.theta) ** exponent)).astype(np.float32)
    if rope.rope_type == "default":
        return inv_freq
    factor = np.float32(rope.factor)
    if rope.rope_type == "linear":
        return (inv_freq / factor).astype(np.float32)
    if rope.rope_type == "llama3":
        low, high = np.float32(rope.low_freq_factor), np.float32(rope.high_freq_factor)
        old_len = np.float32(rope.original_max_positions)
        low_wavelen, high_wavelen = old_len / low, old_len / high
        wavelen = np.float32(2 * np.pi) / inv_freq
        scaled = np.where(wavelen > low_wavelen, inv_freq / factor, inv_freq)
        smooth = (old_len / wavelen - low) / (high - low)
        smoothed = (1 - smooth) * scaled / factor + smooth * scaled
        medium = ~(wavelen < high_wavelen) & ~(wavelen > low_wavelen)
        return np.where(medium, smoothed, scaled).astype(np.float32)
    raise ValueError(
        f"unsupported rope_type {rope.rope_type!r}; fgjax supports 'default', 'linear' and 'llama3'"
    )


def mrope_axes(mrope_section, interleaved: bool = False) -> np.ndarray:
    """int[H/2]: the position axis (0 time, 1 height, 2 width) each rotary frequency turns
    with: section after section (Qwen2-VL, Qwen2.5-VL), or interleaved t, h, w, t, h, w, ...
    while the height and width sections last, time after (Qwen3-VL; see RopeConfig)."""
    if not interleaved:
        return np.repeat(np.arange(len(mrope_section)) % 3, mrope_section)
    j = np.arange(sum(mrope_section))
    axis = np.zeros_like(j)
    for k in (1, 2):  # transformers' Qwen3VLTextRotaryEmbedding.recomposition_frequencies
        axis[(j % 3 == k) & (j < 3 * mrope_section[k])] = k
    return axis


def rope_tables(
    positions: jax.Array, inv_freq: np.ndarray, dtype, mrope_section=None,
    mrope_interleaved: bool = False,
) -> tuple[jax.Array, jax.Array]:  # fmt: skip
    """cos, sin: [B, T, H] in `dtype`, from i32[B, T] positions (angles in float32), or with
    `mrope_section` (multimodal RoPE, see RopeConfig) from i32[B, T, 3] (temporal, height,
    width) positions: frequency j turns with the axis `mrope_axes` gives it, as transformers'
    Qwen2-VL `mrope_section` split (or Qwen3-VL's interleaving) does."""
    freqs = positions[..., None].astype(jnp.float32) * jnp.asarray(inv_freq)
    if mrope_section is not None:  # [B, T, 3, H/2] -> each frequency from its axis
        axis = mrope_axes(mrope_section, mrope_interleaved)
        freqs = freqs[:, :, axis, np.arange(len(axis))]
    emb = jnp.concatenate([freqs, freqs], axis=-1)
    return jnp.cos(emb).astype(dtype), jnp.sin(emb).astype(dtype)


def apply_rope(x: jax.Array, cos: jax.Array, sin: jax.Array) -> jax.Array:
    """x: [B, T, heads, H]; rotate-half convention."""
    half = x.shape[-1] // 2
    rotated = jnp.concatenate([-x[..., half:], x[..., :half]], axis=-1)
    return x * cos[:, :, None, :] + rotated * sin[:, :, None, :]


# -- the attention layer -------------------------------------------------------------------


class Attention(nnx.Module):
    """Multi-head / grouped-query attention with optional biases, qk-norm, RoPE, logit
    soft-capping and KV cache."""

    def __init__(self, cfg, *, rngs: nnx.Rngs):
        width, n, k, h = cfg.width, cfg.num_heads, cfg.kv_heads, cfg.dim_per_head
        self.num_heads, self.num_kv_heads, self.head_dim = n, k, h
        scalar = getattr(cfg, "query_pre_attn_scalar", None)
        self.scale = (h if scalar is None else scalar) ** -0.5
        self.softcap = getattr(cfg, "attn_softcap", None)
        self.implementation = getattr(cfg, "attention", "auto")
        if getattr(cfg, "qk_norm_across_heads", False):  # InternViT: over all heads at once,
            # eps fixed at 1e-6 (transformers' InternVLVisionRMSNorm default, no config field)
            norm = dict(kind="rmsnorm", eps=1e-6, param_dtype=cfg.params_dtype, rngs=rngs)
            self.q_norm = Norm((n, h), axis=("heads", "head_dim"), **norm)
            self.k_norm = Norm((k, h), axis=("kv_heads", "head_dim"), **norm)
        elif getattr(cfg, "qk_norm", False):  # per head, over head_dim, with the model's norm
            norm = dict(kind="rmsnorm", eps=cfg.norm_eps, add_one=cfg.norm_add_one,
                        param_dtype=cfg.params_dtype, rngs=rngs, axis="head_dim")  # fmt: skip
            self.q_norm, self.k_norm = Norm(h, **norm), Norm(h, **norm)

        def fan_in(in_axis, out_axis):  # LeCun-normal over the real fan-in of a 3-D kernel
            return nnx.initializers.variance_scaling(
                1.0, "fan_in", "truncated_normal", in_axis=in_axis, out_axis=out_axis
            )

        def proj(einsum, shape, axes, bias):
            return nnx.Einsum(
                einsum,
                shape,
                shape[-len(axes) + 1 :] if bias else None,
                dtype=cfg.compute_dtype,
                param_dtype=cfg.params_dtype,
                kernel_init=fan_in(0, (1, 2)),
                kernel_metadata={"out_sharding": axes},
                bias_metadata={"out_sharding": axes[1:]},
                rngs=rngs,
                **mixed_dot.einsum_kwargs(cfg.compute_dtype),
            )

        self.q = proj("BTD,DNH->BTNH", (width, n, h), ("embed", "heads", "head_dim"), cfg.qkv_bias)
        key_bias = getattr(cfg, "key_bias", None)  # a ViT field: DINOv3 has no key bias
        self.k = proj(
            "BSD,DKH->BSKH", (width, k, h), ("embed", "kv_heads", "head_dim"),
            cfg.qkv_bias if key_bias is None else key_bias,
        )  # fmt: skip
        self.v = proj(
            "BSD,DKH->BSKH", (width, k, h), ("embed", "kv_heads", "head_dim"), cfg.qkv_bias
        )
        self.o = nnx.Einsum(
            "BTNH,NHD->BTD",
            (n, h, width),
            (width,) if cfg.out_bias else None,
            dtype=cfg.compute_dtype,
            param_dtype=cfg.params_dtype,
            kernel_init=fan_in((0, 1), 2),
            kernel_metadata={"out_sharding": ("heads", "head_dim", "embed")},
            bias_metadata={"out_sharding": ("embed",)},
            rngs=rngs,
            **mixed_dot.einsum_kwargs(cfg.compute_dtype),
        )

    def __call__(self, x, *, mask=None, rope=None, kv=None, end=None, context=None):
        """x: [B, T, D]; mask: bool[B, T, S] or None (attend everywhere); rope: (cos, sin)
        tables [B, T, H] or None; kv: this layer's cached (k, v), each [B, S, K, H], into
        which the new keys are written at slot `end`; context: [B, S, D] to attend to
        instead of x (cross-attention, for pooling heads).

        Returns (out [B, T, D], (k, v)): the updated cache entries, or the new keys/values.
        """
        source = x if context is None else context
        q, k, v = self.q(x), self.k(source), self.v(source)
        if hasattr(self, "q_norm"):
            q, k = self.q_norm(q), self.k_norm(k)
        if rope is not None:
            q, k = apply_rope(q, *rope), apply_rope(k, *rope)
        if kv is not None:
            k = jax.lax.dynamic_update_slice(kv[0], k.astype(kv[0].dtype), (0, end, 0, 0))
            v = jax.lax.dynamic_update_slice(kv[1], v.astype(kv[1].dtype), (0, end, 0, 0))
        out = dot_product_attention(q, k, v, mask, self.scale, self.implementation, self.softcap)
        return self.o(out), (k, v)


def resolve_implementation(implementation: str, dtype, backend: str | None = None) -> str:
    """The implementation "auto" stands for on `backend` (default: the platform the program is
    built for, models/platform.py; jax's backend unless the fit check compiles for a TPU on a
    CPU host): fgjax's reference
    where parity is what matters (CPU, where the tests compare against transformers, and
    float64 references, whose softmax jax.nn.dot_product_attention would take in float32); the
    splash kernel on a TPU (for the masks it describes, XLA's attention for the others); jax's
    XLA attention on a GPU (cuDNN stays opt-in)."""
    if implementation != "auto":
        return implementation
    backend = backend or platform.target()
    if backend == "cpu" or jnp.dtype(dtype) == jnp.float64:
        return "reference"
    return "splash" if backend == "tpu" else "xla"


def dot_product_attention(q, k, v, mask, scale, implementation="reference", softcap=None):
    """q: [B, T, N, H]; k, v: [B, S, K, H]; mask: bool[B, T, S], a CausalMask or None ->
    [B, T, N, H]. softcap: Gemma 2's cap on the scaled logits, cap * tanh(logits / cap), which
    only the reference implements ("auto" picks it then).

    implementation "reference" (below), or "xla" / "cudnn": jax.nn.dot_product_attention's, with
    the same mask (causal, padding, prefix-LM, sliding-window and packed masks are all boolean
    [B, T, S] masks here). "splash": the TPU Pallas kernel (models/splash.py) for a CausalMask
    without a KV cache (rows of whole 128-token tiles on a TPU); any other mask goes to "xla"
    (the reference with a soft-cap). "auto": see resolve_implementation.
    Reference: logits and softmax in float32 (as HF's eager attention; float64 in a float64
    model); probabilities cast back to the value dtype. Query head n uses KV head n // G, like
    HF's repeat_kv (as jax's grouped-query attention does).
    """
    implementation = resolve_implementation(implementation, q.dtype)
    if implementation == "splash":
        from fgjax.models.splash import BLOCK

        on_tpu = platform.target() == "tpu"  # the kernel's tiles: rows of whole blocks
        whole = q.shape[1] % BLOCK == 0 or not on_tpu
        if isinstance(mask, CausalMask) and q.shape[1] == k.shape[1] and whole:
            from fgjax.models.splash import splash_attention

            return splash_attention(
                q, k, v, scale=scale, key_lengths=mask.key_lengths,
                segment_ids=mask.segment_ids, window=mask.window, softcap=softcap,
            )  # fmt: skip
        # masks the kernel does not describe (prefix-LM, image blocks, a KV cache) or rows
        # that are not whole tiles
        implementation = "xla"
    implementation = "reference" if softcap else resolve_implementation(implementation, q.dtype)
    if isinstance(mask, CausalMask) and (mask.window is not None or mask.segment_ids is not None):
        mask = mask.dense(k.shape[1])  # jax's attention takes neither
    if isinstance(mask, CausalMask):
        if implementation != "reference":
            return jax.nn.dot_product_attention(
                q, k, v, scale=scale, is_causal=True, key_value_seq_lengths=mask.key_lengths,
                implementation=implementation,
            )  # fmt: skip
        mask = mask.dense(k.shape[1])
    if implementation != "reference":
        return jax.nn.dot_product_attention(
            q, k, v, mask=None if mask is None else mask[:, None], scale=scale,
            implementation=implementation,
        )  # fmt: skip
    batch, length, n, h = q.shape
    kv_heads = k.shape[2]
    groups = n // kv_heads
    # Heads before positions, and a KV head's G query heads stacked along the rows: each
    # (batch, KV head) is one contiguous [G*T, H] x [H, S] product, which XLA:CPU runs a
    # third faster (forward and backward) than contractions over the [B, T, K, H] layout.
    q = q.reshape(batch, length, kv_heads, groups, h).transpose(0, 2, 3, 1, 4)
    q = q.reshape(batch, kv_heads, groups * length, h)
    k, v = k.transpose(0, 2, 1, 3), v.transpose(0, 2, 1, 3)  # [B, K, S, H]
    acc = at_least_float32(q.dtype)
    logits = jnp.einsum("BKRH,BKSH->BKRS", q, k, preferred_element_type=acc) * scale
    if softcap:
        logits = jnp.tanh(logits / softcap) * softcap
    if mask is not None:  # row g * T + t is query t of group g
        rows = jnp.tile(mask, (1, groups, 1)) if groups > 1 else mask
        logits = jnp.where(rows[:, None], logits, jnp.finfo(acc).min)
    probs = jax.nn.softmax(logits, axis=-1).astype(v.dtype)
    product = mixed_dot.einsum if mixed_dot.enabled(v.dtype) else jnp.einsum
    out = product("BKRS,BKSH->BKRH", probs, v).reshape(batch, kv_heads, groups, length, h)
    return out.transpose(0, 3, 1, 2, 4).reshape(batch, length, n, h)
