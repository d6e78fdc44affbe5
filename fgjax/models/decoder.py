"""Decoder-only language models: Llama / Vicuna / Mistral, Qwen2 / Qwen3 and Gemma 1-3 by
config flags.

Axis legend: B batch, T new tokens, S cache slots, D width, V vocabulary, L layers.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
from flax import nnx

from fgjax.models.attention import (
    CausalMask,
    KVCache,
    cached_attention_mask,
    causal_mask,
    resolve_implementation,
    rope_inv_freq,
    rope_tables,
    segment_mask,
    window_mask,
)
from fgjax.models.config import DecoderConfig
from fgjax.models.layers import at_least_float32, param, token_embedding
from fgjax.models.partitioning import constrain
from fgjax.models.transformer import Stack, make_norm


class DecoderOutput(NamedTuple):
    logits: jax.Array | None  # f32[B, T, V]
    hidden_states: tuple[jax.Array, ...]  # embeddings then each block's output, when requested
    last_hidden: jax.Array  # [B, T, D] after the final norm
    cache: KVCache | None


class Decoder(nnx.Module):
    """Token embedding -> blocks -> final norm -> LM head (or the tied embedding)."""

    def __init__(self, cfg: DecoderConfig, *, rngs: nnx.Rngs):
        cfg.validate()
        self.cfg = cfg
        init = nnx.initializers.normal(0.02)
        self.embedding = token_embedding(rngs, cfg)
        self.stack = Stack(cfg, rngs=rngs)
        self.final_norm = make_norm(cfg, rngs)
        if not cfg.tie_embeddings:
            self.lm_head = param(
                rngs, init, (cfg.width, cfg.vocab_size), cfg.params_dtype, ("embed", "vocab")
            )

    def embed(self, tokens: jax.Array) -> jax.Array:
        """i32[B, T] -> [B, T, D] in the compute dtype, times sqrt(D) for Gemma. As in
        transformers 5 (GemmaTextScaledWordEmbedding), only token embeddings are scaled:
        embeddings passed to `__call__` (image features) are used as they are."""
        x = jnp.take(self.embedding[...], tokens, axis=0).astype(self.cfg.compute_dtype)
        if self.cfg.embed_scale:
            x = x * jnp.asarray(self.cfg.width**0.5, self.cfg.compute_dtype)
        return x

    def logits(self, x: jax.Array) -> jax.Array:
        """[B, T, D] normed hidden -> f32[B, T, V] (f64 for a float64 model)."""
        dtype = self.cfg.compute_dtype
        acc = at_least_float32(dtype)
        if self.cfg.tie_embeddings:
            w = self.embedding[...].astype(dtype)
            logits = jnp.einsum("BTD,VD->BTV", x, w, preferred_element_type=acc)
        else:
            w = self.lm_head[...].astype(dtype)
            logits = jnp.einsum("BTD,DV->BTV", x, w, preferred_element_type=acc)
        if cap := self.cfg.final_softcap:
            logits = jnp.tanh(logits / cap) * cap
        return logits

    def init_cache(self, batch: int, capacity: int) -> KVCache:
        cfg = self.cfg
        return KVCache.empty(
            cfg.depth, batch, capacity, cfg.kv_heads, cfg.dim_per_head, cfg.compute_dtype
        )

    def __call__(
        self,
        tokens: jax.Array | None = None,
        *,
        embeds: jax.Array | None = None,
        positions: jax.Array | None = None,
        input_mask: jax.Array | None = None,
        attn_mask: jax.Array | None = None,
        segment_ids: jax.Array | None = None,
        window_exempt: jax.Array | None = None,
        deepstack: jax.Array | None = None,
        cache: KVCache | None = None,
        return_hidden: bool = False,
        return_logits: bool = True,
    ) -> DecoderOutput:
        """Runs T new tokens, optionally after a KV cache.

        tokens: i32[B, T], or embeds: [B, T, D] (already embedded, e.g. by `embed` and with
          image features; used as they are, without Gemma's sqrt(D) scale);
        positions: i32[B, T] RoPE positions (default: slot index, i.e. arange(T) + cache.end);
          with multimodal RoPE (cfg.rope.mrope_section) also i32[B, T, 3] (temporal, height,
          width; `qwen_vl.mrope_positions`), while i32[B, T] are text positions on all three
          axes, shifted after a KV cache by its rope delta (`mrope_delta`: a prompt with an
          image continues after its largest position, as transformers' `rope_deltas`);
        input_mask: bool[B, T], False for padding (default all True);
        attn_mask: bool[B, T, T] among the new tokens (default causal; see
          attention.make_attention_mask for prefix-LM masks, or pass block-diagonal masks to
          score several continuations of one cached prefix in one row);
        segment_ids: i32[B, T] of packed rows (1, 2, ... per sample, 0 padding; with positions
          restarting per sample): causal attention within each sample, instead of attn_mask,
          which fused kernels get as structure (attention.CausalMask) rather than bool[B, T, T];
        window_exempt: bool[B, T, T], pairs among the new tokens that sliding-window layers
          let attend (as attn_mask allows) at any distance (PaliGemma 2's prefix);
        deepstack: [K, B, T, D], added to the outputs of blocks 0 .. K-1 (Qwen3-VL's DeepStack:
          intermediate vision features at the image tokens, zeros elsewhere);
        cache: a KVCache; new keys are written at cache.end, queries also see its valid slots.
        """
        cfg = self.cfg
        x = self.embed(tokens) if embeds is None else embeds.astype(cfg.compute_dtype)
        x = constrain(x, ("batch", None, None))
        batch, length = x.shape[:2]
        start = 0 if cache is None else cache.end
        if positions is None:
            positions = jnp.broadcast_to(
                start + jnp.arange(length, dtype=jnp.int32), (batch, length)
            )
        rope_positions = positions
        if cfg.rope.mrope_section is not None:
            rope_positions = _mrope_positions(positions, cache)
            positions = rope_positions.max(axis=-1)  # what the cache keeps; decoding goes on after
        if input_mask is None:
            input_mask = jnp.ones((batch, length), bool)
        if segment_ids is not None and (attn_mask is not None or cache is not None):
            raise ValueError("segment_ids describe packed rows without a cache or attn_mask")
        if segment_ids is not None:
            block_mask = segment_mask(segment_ids)
        else:
            block_mask = causal_mask(length)[None] if attn_mask is None else attn_mask
        block_mask = jnp.broadcast_to(block_mask, (batch, length, length))
        # per-layer kinds (Gemma 2/3): the full layers see every earlier key, the sliding
        # ones a window; otherwise every layer takes `mask` (windowed for Mistral)
        layered = cfg.sliding_layers is not None
        window = None if layered else cfg.sliding_window
        fused = resolve_implementation(cfg.attention, cfg.compute_dtype) != "reference"
        if fused and attn_mask is None and cache is None and not layered:
            # jax's fused attention gets the causal structure itself (rows are right-padded:
            # every fgjax pipeline pads on the right), not a dense [B, T, T] mask
            lengths = input_mask.sum(axis=1).astype(jnp.int32)
            mask = CausalMask(lengths, segment_ids, cfg.sliding_window)
            kv = None
        elif cache is None:
            mask = window_mask(block_mask & input_mask[:, None, :], positions, window)
            kv = None
        else:
            mask, valid, key_positions = cached_attention_mask(
                block_mask, input_mask, positions, cache, window
            )
            kv = (cache.k, cache.v)
        inv_freq = rope_inv_freq(cfg.dim_per_head, cfg.rope)
        rope = rope_tables(
            rope_positions, inv_freq, cfg.compute_dtype, cfg.rope.mrope_section,
            cfg.rope.mrope_interleaved,
        )  # fmt: skip
        local = None
        if layered:
            keys = None if cache is None else key_positions
            local_mask = window_mask(mask, positions, cfg.sliding_window, keys)
            if window_exempt is not None:
                local_mask = local_mask | (mask & _at_new_slots(window_exempt, cache))
            local_rope = rope
            if cfg.local_rope is not None:
                inv_freq = rope_inv_freq(cfg.dim_per_head, cfg.local_rope)
                local_rope = rope_tables(positions, inv_freq, cfg.compute_dtype)
            local = (local_mask, local_rope)
        h, hidden, kv = self.stack(
            x, mask=mask, rope=rope, local=local, cache_kv=kv, end=start, adds=deepstack,
            return_hidden=return_hidden,
        )  # fmt: skip
        last = self.final_norm(h)
        new_cache = None
        if cache is not None:
            new_cache = KVCache(kv[0], kv[1], valid, key_positions, cache.end + length)
        return DecoderOutput(
            self.logits(last) if return_logits else None,
            (x, *hidden) if return_hidden else (),
            last,
            new_cache,
        )


def mrope_delta(cache: KVCache) -> jax.Array:
    """i32[B]: how far a multimodal-RoPE row's positions run ahead of its token count, the
    largest position in the cache + 1 - its valid slots (transformers' `rope_deltas`; 0 for
    text only or an empty cache). The cache keeps each token's largest axis position."""
    count = cache.valid.sum(axis=1).astype(jnp.int32)
    top = jnp.max(jnp.where(cache.valid, cache.positions, -1), axis=1)
    return jnp.where(count > 0, top + 1 - count, 0)


def _mrope_positions(positions: jax.Array, cache: KVCache | None) -> jax.Array:
    """i32[B, T, 3]: 3-D positions as given, or text positions i32[B, T] on all three axes
    (after a cache shifted by its `mrope_delta`)."""
    if positions.ndim == 3:
        return positions
    if cache is not None:
        positions = positions + mrope_delta(cache)[:, None]
    return jnp.broadcast_to(positions[..., None], (*positions.shape, 3))


def _at_new_slots(pairs: jax.Array, cache: KVCache | None) -> jax.Array:
    """bool[B, T, T] among the new tokens -> bool[B, T, S] over the key slots they occupy."""
    if cache is None:
        return pairs
    batch, length, _ = pairs.shape
    out = jnp.zeros((batch, length, cache.capacity), bool)
    return jax.lax.dynamic_update_slice(out, pairs, (0, 0, cache.end))
