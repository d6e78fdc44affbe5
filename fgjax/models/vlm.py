"""The vision-language model: encoder -> projector -> decoder, with the projected image
features placed at the image-token positions of the text (LLaVA / HF semantics).

Axis legend: B batch (one row per conversation), M images per row, N image tokens per image,
T tokens, D decoder width.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from fgjax.models.config import FusedVitConfig, VLMConfig
from fgjax.models.decoder import Decoder, DecoderOutput
from fgjax.models.projector import Projector
from fgjax.models.vit import build_encoder


def components(cfg: VLMConfig) -> dict:
    """name -> function(rngs) building that part of a VLM on its own (e.g. to randomly
    initialize only the parts that are not loaded from pretrained weights)."""
    dec = cfg.decoder
    return {
        "encoder": lambda rngs: build_encoder(cfg.encoder, rngs),
        "projector": lambda rngs: Projector(
            cfg.projector,
            cfg.encoder.feature_dim,
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
        **decoder_kwargs,
    ) -> DecoderOutput:
        """tokens: i32[B, T]; images as in `image_features` (or None for text only), or
        their `image_features` computed already. Other keyword arguments (positions,
        input_mask, attn_mask, cache, return_hidden, return_logits) go to `Decoder.__call__`.
        Returns logits f32[B, T, V] and friends."""
        embeds = self.embed(tokens, images, stop_encoder_gradient=stop_encoder_gradient,
                            image_features=image_features)  # fmt: skip
        return self.decoder(embeds=embeds, **decoder_kwargs)
