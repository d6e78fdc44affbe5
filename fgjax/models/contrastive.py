"""A contrastive image-text model (SigLIP-style): a ViT image tower and a small transformer
text tower, each pooled and projected to a shared embedding space, scored by a sigmoid with a
learned temperature and bias.

It serves two roles in the study: a vision encoder pretrained on image-caption pairs (its
image tower then becomes a VLM's encoder), and the image-text model that mines hard negative
options for multiple-choice evaluation.

The defaults are fgjax's own models (bidirectional text tower pooled at the last real token,
dense heads with bias). A few flags describe HF's dual encoders as well
(`fgjax.hf.load(path, dual_encoder=True)`, fgjax/hf/dual_encoders.py): CLIP (causal text
tower pooled at its EOS token, heads without bias, no logit bias) and SigLIP (pooled at the
final position of its padded-to-max_length input, no image head: the MAP head's output is the
embedding).
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

TEXT_FAMILIES = ("fgjax", "clip", "siglip")
TEXT_POOLING = ("last", "final", "eos", "argmax")


@register_config_type
@dataclasses.dataclass(frozen=True)
class TextTowerConfig(TransformerConfig):
    """A transformer over caption tokens (bidirectional unless `causal`), pooled at one token.

    pool: "last" the last real token of `input_mask` (fgjax) | "final" the final position,
    padding or not (SigLIP, fed max_length tokens) | "eos" the first `eos_token_id` (CLIP) |
    "argmax" the highest token id (CLIP configs with eos_token_id=2, whose EOS is the
    vocabulary's last id). `family` says how a prompt becomes token ids
    (fgjax.data.tokenizer.text_tower_ids).
    """

    vocab_size: int = 256
    max_length: int = 32
    norm_eps: float = 1e-6
    act: str = "gelu_tanh"
    family: str = "fgjax"  # one of TEXT_FAMILIES
    causal: bool = False  # CLIP: each token attends to itself and earlier ones only
    pool: str = "last"  # one of TEXT_POOLING
    eos_token_id: int | None = None  # for pool="eos"

    def validate(self) -> None:
        super().validate()
        _check(self.family in TEXT_FAMILIES, f"text family={self.family!r}; use {TEXT_FAMILIES}")
        _check(self.pool in TEXT_POOLING, f"text pool={self.pool!r}; use one of {TEXT_POOLING}")
        _check(
            self.pool != "eos" or self.eos_token_id is not None,
            "text pool='eos' needs eos_token_id",
        )


@register_config_type
@dataclasses.dataclass(frozen=True)
class ContrastiveConfig:
    image: VitConfig = VitConfig(pool="map")
    text: TextTowerConfig = TextTowerConfig()
    embed_dim: int = 64
    init_temperature: float = 10.0  # logit scale, as SigLIP's log(10) initialization
    init_bias: float = -10.0
    image_head: bool = True  # False (SigLIP): the pooled image features are the embedding
    head_bias: bool = True  # the projection heads' biases (CLIP's have none)
    logit_bias: bool = True  # a learned bias on the logits (CLIP: scale * cosine only)

    def validate(self) -> None:
        self.image.validate()
        self.text.validate()
        _check(
            self.image.pool is not None,
            "the image tower needs pooling ('map' or 'cls') for contrastive training",
        )
        _check(
            self.image_head or self.embed_dim == self.image.width,
            f"without an image head embed_dim={self.embed_dim} must equal the image tower's "
            f"width={self.image.width}",
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
        """tokens: i32[B, T] (T <= max_length); input_mask: bool[B, T] (the keys attended)
        -> pooled [B, D], the normed hidden state of each row's token chosen by `cfg.pool`."""
        length = tokens.shape[1]
        x = jnp.take(self.embedding[...], tokens, axis=0) + self.pos_embed[...][:length]
        x = x.astype(self.cfg.compute_dtype)
        mask = jnp.broadcast_to(input_mask[:, None, :], (tokens.shape[0], length, length))
        if self.cfg.causal:
            mask = mask & jnp.tril(jnp.ones((length, length), bool))
        x, _, _ = self.stack(x, mask=mask)
        x = self.final_norm(x)
        index = _pooled_index(self.cfg, tokens, input_mask)
        return jnp.take_along_axis(x, index[:, None, None], axis=1)[:, 0]


def _pooled_index(cfg: TextTowerConfig, tokens: jax.Array, input_mask: jax.Array) -> jax.Array:
    """i32[B]: the position each row is pooled at (argmax takes the first of equal maxima,
    as torch's does: CLIP's padding may repeat the EOS id)."""
    if cfg.pool == "final":
        return jnp.full(tokens.shape[:1], tokens.shape[1] - 1, jnp.int32)
    if cfg.pool == "eos":
        return jnp.argmax(tokens == cfg.eos_token_id, axis=1).astype(jnp.int32)
    if cfg.pool == "argmax":
        return jnp.argmax(tokens, axis=1).astype(jnp.int32)
    return jnp.maximum(input_mask.sum(axis=1) - 1, 0).astype(jnp.int32)


class ContrastiveModel(nnx.Module):
    def __init__(self, cfg: ContrastiveConfig, *, rngs: nnx.Rngs):
        cfg.validate()
        self.cfg = cfg
        self.image = VisionEncoder(cfg.image, rngs=rngs)
        self.text = TextTower(cfg.text, rngs=rngs)
        kw = dict(
            bias=cfg.head_bias, dtype=cfg.image.compute_dtype, param_dtype=cfg.image.params_dtype
        )
        if cfg.image_head:
            self.image_head = dense(rngs, cfg.image.width, cfg.embed_dim, ("embed", "mlp"), **kw)
        self.text_head = dense(rngs, cfg.text.width, cfg.embed_dim, ("embed", "mlp"), **kw)
        self.log_temperature = nnx.Param(
            jnp.log(jnp.asarray([cfg.init_temperature], jnp.float32)), out_sharding=(None,)
        )
        if cfg.logit_bias:
            self.bias = nnx.Param(jnp.asarray([cfg.init_bias], jnp.float32), out_sharding=(None,))

    def embed_images(self, images: jax.Array) -> jax.Array:
        """f32[B, H, W, 3] -> unit-norm f32[B, E]."""
        pooled = self.image(images).pooled
        return _normalize(self.image_head(pooled) if self.cfg.image_head else pooled)

    def embed_texts(self, tokens: jax.Array, input_mask: jax.Array) -> jax.Array:
        """i32[B, T], bool[B, T] -> unit-norm f32[B, E]."""
        return _normalize(self.text_head(self.text(tokens, input_mask)))

    def logits(self, image_emb: jax.Array, text_emb: jax.Array) -> jax.Array:
        """[N, E] x [M, E] -> f32[N, M]: temperature * cosine (+ bias with cfg.logit_bias)."""
        logits = jnp.exp(self.log_temperature[...][0]) * image_emb @ text_emb.T
        return logits + self.bias[...][0] if self.cfg.logit_bias else logits


def sigmoid_loss(logits: jax.Array) -> jax.Array:
    """SigLIP's loss for a square [B, B] logit matrix whose diagonal holds the matching
    pairs: mean over images of the summed pairwise log-sigmoid losses."""
    labels = 2 * jnp.eye(logits.shape[0]) - 1
    return -jnp.sum(jax.nn.log_sigmoid(labels * logits)) / logits.shape[0]


def _normalize(x: jax.Array) -> jax.Array:
    x = x.astype(at_least_float32(x.dtype))
    return x / jnp.linalg.norm(x, axis=-1, keepdims=True).clip(1e-6)
