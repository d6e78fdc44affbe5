"""The vision-language model: encoder -> projector -> decoder, with the projected image
features placed at the image-token positions of the text (LLaVA / HF semantics). The
attention among image tokens is the config's (`VLMConfig.image_attention`: causal as LLaVA,
bidirectional within each image as Gemma 3, or a bidirectional prefix as PaliGemma), built
here from the tokens so that training, scoring and generation all get it.

Axis legend: B batch (one row per conversation), M images per row, N image tokens per image,
T tokens, D decoder width.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from fgjax.models.attention import causal_mask, segment_mask
from fgjax.models.config import FusedVitConfig, VLMConfig
from fgjax.models.decoder import Decoder, DecoderOutput
from fgjax.models.projector import (
    PixelShuffleProjector,
    PooledProjector,
    Projector,
    input_dim,
)
from fgjax.models.vit import build_encoder


def components(cfg: VLMConfig) -> dict:
    """name -> function(rngs) building that part of a VLM on its own (e.g. to randomly
    initialize only the parts that are not loaded from pretrained weights)."""
    dec = cfg.decoder
    projector = {"gemma3": PooledProjector, "pixel_shuffle": PixelShuffleProjector}.get(
        cfg.projector.kind, Projector
    )
    return {
        "encoder": lambda rngs: build_encoder(cfg.encoder, rngs),
        "projector": lambda rngs: projector(
            cfg.projector,
            input_dim(cfg),
            dec.width,
            dtype=dec.compute_dtype,
            param_dtype=dec.params_dtype,
            rngs=rngs,
        ),  # fmt: skip
        "decoder": lambda rngs: Decoder(dec, rngs=rngs),
    }


class VLM(nnx.Module):
    def __init__(self, cfg: VLMConfig, *, rngs: nnx.Rngs):
        cfg.validate()
        self.cfg = cfg
        build = components(cfg)
        self.encoder = build["encoder"](rngs)
        self.projector = build["projector"](rngs)
        self.decoder = build["decoder"](rngs)

    def image_features(self, images, *, stop_gradient: bool = False) -> jax.Array:
        """images: f32[B, H, W, C] or f32[B, M, H, W, C] (a tuple of those, one per tower, for a
        fused encoder) -> projected features [B, M * N, D].

        `stop_gradient` cuts the backward pass at the encoder output (frozen encoder).
        """
        fused = isinstance(self.cfg.encoder, FusedVitConfig)
        first = images[0] if fused else images
        batch = first.shape[0]
        if first.ndim == 5:  # fold the images-per-row axis into the batch
            images = jax.tree.map(lambda im: im.reshape(-1, *im.shape[2:]), images)
        feats = self.encoder.features(tuple(images) if fused else images)
        if stop_gradient:
            feats = jax.lax.stop_gradient(feats)
        feats = self.projector(feats.astype(self.cfg.decoder.compute_dtype))
        return feats.reshape(batch, -1, feats.shape[-1])

    def embed(
        self, tokens: jax.Array, images=None, *, stop_encoder_gradient: bool = False,
        image_features: jax.Array | None = None,
    ) -> jax.Array:  # fmt: skip
        """tokens: i32[B, T] with image-token placeholders -> embeddings [B, T, D].

        The k-th placeholder of row b receives the k-th image feature of row b. The data
        pipeline guarantees each row has 0 or exactly M * N placeholders (rows without images
        carry a dummy image that is never read). `image_features` (from `image_features`,
        [B, M * N, D]) replaces `images` where they were computed already.
        """
        text = self.decoder.embed(tokens)
        if images is None and image_features is None:
            return text
        if image_features is None:
            image_features = self.image_features(images, stop_gradient=stop_encoder_gradient)
        feats = image_features.astype(text.dtype)
        is_image = tokens == self.cfg.image_token_id
        index = jnp.clip(jnp.cumsum(is_image, axis=1) - 1, 0, feats.shape[1] - 1)
        gathered = jnp.take_along_axis(feats, index[..., None], axis=1)
        return jnp.where(is_image[..., None], gathered, text)

    def __call__(
        self,
        tokens: jax.Array,
        images=None,
        *,
        stop_encoder_gradient: bool = False,
        image_features: jax.Array | None = None,
        prefix_mask: jax.Array | None = None,
        **decoder_kwargs,
    ) -> DecoderOutput:
        """tokens: i32[B, T]; images as in `image_features` (or None for text only), or
        their `image_features` computed already. Other keyword arguments (positions,
        input_mask, attn_mask, cache, return_hidden, return_logits) go to `Decoder.__call__`;
        the attention among image tokens (`cfg.image_attention`) is added to `attn_mask`
        (default causal) here. prefix_mask: bool[B, T], the bidirectional prefix of a
        prefix-LM ("prefix"; default: every token of a call that starts the sequence).
        Returns logits f32[B, T, V] and friends."""
        embeds = self.embed(tokens, images, stop_encoder_gradient=stop_encoder_gradient,
                            image_features=image_features)  # fmt: skip
        kind = self.cfg.image_attention
        if prefix_mask is not None and kind != "prefix":
            raise ValueError(f"prefix_mask is for prefix-LM VLMs; this one's is {kind!r}")
        if kind != "causal":
            if (segments := decoder_kwargs.pop("segment_ids", None)) is not None:
                decoder_kwargs["attn_mask"] = segment_mask(segments)  # image blocks join it
            decoder_kwargs.update(
                bidirectional_attention(tokens, self.cfg, prefix_mask=prefix_mask, **decoder_kwargs)
            )
        return self.decoder(embeds=embeds, **decoder_kwargs)


def image_blocks(tokens: jax.Array, image_token_id: int) -> jax.Array:
    """bool[B, T, T]: query and key both in the same run of consecutive image tokens (one
    image, as transformers' token_type_ids blocks for Gemma 3)."""
    is_image = tokens == image_token_id
    starts = is_image & ~jnp.pad(is_image, ((0, 0), (1, 0)))[:, :-1]
    block = jnp.where(is_image, jnp.cumsum(starts, axis=1), 0)  # 1, 2, ... per image; 0 text
    return (block[:, :, None] == block[:, None, :]) & is_image[:, :, None]


def bidirectional_attention(
    tokens, cfg: VLMConfig, *, prefix_mask=None, attn_mask=None, input_mask=None, cache=None,
    **_,
) -> dict:  # fmt: skip
    """The decoder's `attn_mask` (and `window_exempt`) for a VLM whose image tokens attend
    both ways, as transformers 5.24 builds them:

    "bidirectional" (Gemma 3): attn_mask | the image blocks; its sliding layers keep the window
      on top (AND(window, OR(causal, image blocks))).
    "prefix" (PaliGemma): attn_mask | prefix x prefix, where the prefix is `prefix_mask` (HF's
      token_type_ids == 0) or, by default, the call's real tokens if it starts the sequence (no
      cache or an empty one: the prompt; later calls decode the causal suffix). Sliding
      layers (PaliGemma 2) OR the prefix into their windowed causal mask: prefix pairs are
      exempt from the window.
    A given attn_mask (packed rows, scoring several continuations) limits the blocks to pairs
    it relates either way, so that they never join two samples.
    """
    length = tokens.shape[1]
    base = causal_mask(length)[None] if attn_mask is None else attn_mask
    base = jnp.broadcast_to(base, (tokens.shape[0], length, length))
    related = base | jnp.swapaxes(base, 1, 2)
    if cfg.image_attention == "bidirectional":
        return {"attn_mask": base | (image_blocks(tokens, cfg.image_token_id) & related)}
    if prefix_mask is None:
        prefix_mask = jnp.ones(tokens.shape, bool) if input_mask is None else input_mask
        if cache is not None:
            prefix_mask = prefix_mask & (cache.end == 0)
    pairs = prefix_mask[:, :, None] & prefix_mask[:, None, :] & related
    return {"attn_mask": base | pairs, "window_exempt": pairs}


def prefix_before_targets(targets, input_mask, segment_ids=None) -> jax.Array:
    """bool[B, T]: the prefix-LM prefix of rows that hold their answers, every real token
    before the first target (targets: bool[B, T], a loss mask) of its sample (segment_ids:
    i32[B, T] of packed rows; None: one sample per row). PaliGemma's token_type_ids == 0."""
    seen = jnp.cumsum(targets.astype(jnp.int32), axis=1)
    if segment_ids is not None:  # count from each sample's start (seen never decreases)
        starts = segment_ids != jnp.pad(segment_ids, ((0, 0), (1, 0)), constant_values=-1)[:, :-1]
        seen = seen - jax.lax.cummax(jnp.where(starts, seen - targets, 0), axis=1)
    return (seen == 0) & input_mask
