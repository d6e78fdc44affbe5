"""A contrastive image-text model (SigLIP-style): a ViT image tower and a small transformer
text tower, each pooled and projected to a shared embedding space, scored by a sigmoid with a
learned temperature and bias.

It serves two roles in the study: a vision encoder pretrained on image-caption pairs (its
image tower then becomes a VLM's encoder), and the image-text model that mines hard negative
options for multiple-choice evaluation.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from flax import nnx

from fgjax.models.config import TransformerConfig, VitConfig, _check, register_config_type
from fgjax.models.layers import at_least_float32, dense, param, token_embedding
from fgjax.models.transformer import Stack, make_norm
from fgjax.models.vit import VisionEncoder


@register_config_type
@dataclasses.dataclass(frozen=True)
class TextTowerConfig(TransformerConfig):
    """A bidirectional transformer over caption tokens, pooled at the last real token."""

    vocab_size: int = 256
    max_length: int = 32
    norm_eps: float = 1e-6
    act: str = "gelu_tanh"


@register_config_type
@dataclasses.dataclass(frozen=True)
class ContrastiveConfig:
    image: VitConfig = VitConfig(pool="map")
    text: TextTowerConfig = TextTowerConfig()
    embed_dim: int = 64
    init_temperature: float = 10.0  # logit scale, as SigLIP's log(10) initialization
    init_bias: float = -10.0

    def validate(self) -> None:
        self.image.validate()
        self.text.validate()
        _check(
            self.image.pool is not None,
            "the image tower needs pooling ('map' or 'cls') for contrastive training",
        )


class TextTower(nnx.Module):
    def __init__(self, cfg: TextTowerConfig, *, rngs: nnx.Rngs):
        cfg.validate()
        self.cfg = cfg
        init = nnx.initializers.normal(0.02)
        self.embedding = token_embedding(rngs, cfg)
        self.pos_embed = param(
            rngs, init, (cfg.max_length, cfg.width), cfg.params_dtype, ("position", "embed")
        )
        self.stack = Stack(cfg, rngs=rngs)
        self.final_norm = make_norm(cfg, rngs)

    def __call__(self, tokens: jax.Array, input_mask: jax.Array) -> jax.Array:
        """tokens: i32[B, T] (T <= max_length); input_mask: bool[B, T] -> pooled [B, D], the
        normed hidden state of each row's last real token."""
        length = tokens.shape[1]
        x = jnp.take(self.embedding[...], tokens, axis=0) + self.pos_embed[...][:length]
        x = x.astype(self.cfg.compute_dtype)
        mask = jnp.broadcast_to(input_mask[:, None, :], (tokens.shape[0], length, length))
        x, _, _ = self.stack(x, mask=mask)
        x = self.final_norm(x)
        last = jnp.maximum(input_mask.sum(axis=1) - 1, 0)
        return jnp.take_along_axis(x, last[:, None, None], axis=1)[:, 0]


class ContrastiveModel(nnx.Module):
    def __init__(self, cfg: ContrastiveConfig, *, rngs: nnx.Rngs):
        cfg.validate()
        self.cfg = cfg
        self.image = VisionEncoder(cfg.image, rngs=rngs)
        self.text = TextTower(cfg.text, rngs=rngs)
        kw = dict(bias=True, dtype=cfg.image.compute_dtype, param_dtype=cfg.image.params_dtype)
        self.image_head = dense(rngs, cfg.image.width, cfg.embed_dim, ("embed", "mlp"), **kw)
        self.text_head = dense(rngs, cfg.text.width, cfg.embed_dim, ("embed", "mlp"), **kw)
        self.log_temperature = nnx.Param(
            jnp.log(jnp.asarray([cfg.init_temperature], jnp.float32)), out_sharding=(None,)
        )
        self.bias = nnx.Param(jnp.asarray([cfg.init_bias], jnp.float32), out_sharding=(None,))

    def embed_images(self, images: jax.Array) -> jax.Array:
        """f32[B, H, W, 3] -> unit-norm f32[B, E]."""
        return _normalize(self.image_head(self.image(images).pooled))

    def embed_texts(self, tokens: jax.Array, input_mask: jax.Array) -> jax.Array:
        """i32[B, T], bool[B, T] -> unit-norm f32[B, E]."""
        return _normalize(self.text_head(self.text(tokens, input_mask)))

    def logits(self, image_emb: jax.Array, text_emb: jax.Array) -> jax.Array:
        """[N, E] x [M, E] -> f32[N, M]: temperature * cosine + bias."""
        scale = jnp.exp(self.log_temperature[...][0])
        return scale * image_emb @ text_emb.T + self.bias[...][0]


def sigmoid_loss(logits: jax.Array) -> jax.Array:
    """SigLIP's loss for a square [B, B] logit matrix whose diagonal holds the matching
    pairs: mean over images of the summed pairwise log-sigmoid losses."""
    labels = 2 * jnp.eye(logits.shape[0]) - 1
    return -jnp.sum(jax.nn.log_sigmoid(labels * logits)) / logits.shape[0]


def _normalize(x: jax.Array) -> jax.Array:
    x = x.astype(at_least_float32(x.dtype))
    return x / jnp.linalg.norm(x, axis=-1, keepdims=True).clip(1e-6)
