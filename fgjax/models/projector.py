"""Projectors from image features to the decoder width."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from fgjax.models.config import ProjectorConfig
from fgjax.models.layers import Norm, activation, at_least_float32, dense, param


def input_dim(cfg) -> int:
    """The width of the features a VLMConfig's projector takes: the encoder's feature width,
    times k * k for pixel_shuffle (k x k patches per token, their channels side by side)."""
    dim = cfg.encoder.feature_dim
    if cfg.projector.kind == "pixel_shuffle":
        dim *= cfg.encoder.num_patches // cfg.projector.tokens
    return dim


def projector_dims(cfg: ProjectorConfig, in_dim: int, out_dim: int) -> list[int]:
    """Layer widths, input first: linear and gemma3 (after its pooling) [in, out];
    mlpNx_gelu [in, out, ..., out] (pixel_shuffle: `in` after the shuffle);
    fused_gelu_mlp [in, 4 * in, out, out] (Prismatic)."""
    if cfg.kind in ("linear", "gemma3"):
        return [in_dim, out_dim]
    if cfg.kind in ("mlp_gelu", "pixel_shuffle"):
        return [in_dim] + [out_dim] * cfg.depth
    if cfg.kind == "fused_gelu_mlp":
        return [in_dim, 4 * in_dim, out_dim, out_dim]
    raise ValueError(f"unknown projector kind {cfg.kind!r}")


class Projector(nnx.Module):
    """Linear layers with exact (erf) GELU between them."""

    def __init__(
        self, cfg: ProjectorConfig, in_dim: int, out_dim: int, *, dtype, param_dtype, rngs: nnx.Rngs
    ):
        dims = projector_dims(cfg, in_dim, out_dim)
        axes = [("vision_embed", "mlp")] + [("mlp", "mlp")] * (len(dims) - 3) + [("mlp", "embed")]
        if len(dims) == 2:
            axes = [("vision_embed", "embed")]
        self.act = activation("gelu")
        self.layers = nnx.List(
            [
                dense(rngs, d_in, d_out, ax, bias=cfg.bias, dtype=dtype, param_dtype=param_dtype)
                for d_in, d_out, ax in zip(dims[:-1], dims[1:], axes)
            ]
        )

    def __call__(self, x: jax.Array) -> jax.Array:
        """x: [B, N, in_dim] -> [B, N, out_dim]."""
        for i, layer in enumerate(self.layers):
            x = layer(self.act(x) if i else x)
        return x


class PooledProjector(nnx.Module):
    """Gemma 3's multimodal projector: the square patch grid average-pooled to `cfg.tokens`
    tokens (non-overlapping k x k windows, row-major, as torch's AvgPool2d), Gemma's RMSNorm
    (scale 1 + w) and a linear map without bias (transformers' mm_soft_emb_norm and
    mm_input_projection_weight)."""

    def __init__(
        self, cfg: ProjectorConfig, in_dim: int, out_dim: int, *, dtype, param_dtype, rngs: nnx.Rngs
    ):
        self.tokens, self.dtype = cfg.tokens, dtype
        self.norm = Norm(in_dim, kind="rmsnorm", eps=cfg.norm_eps, add_one=True,
                         param_dtype=param_dtype, rngs=rngs, axis="vision_embed")  # fmt: skip
        init = nnx.initializers.lecun_normal()
        self.kernel = param(rngs, init, (in_dim, out_dim), param_dtype, ("vision_embed", "embed"))

    def __call__(self, x: jax.Array) -> jax.Array:
        """x: [B, G * G, in_dim] (a G x G patch grid) -> [B, tokens, out_dim]."""
        batch, patches, dim = x.shape
        grid, side = round(patches**0.5), round(self.tokens**0.5)
        k = grid // side
        windows = x.reshape(batch, side, k, side, k, dim).astype(at_least_float32(x.dtype))
        pooled = windows.mean(axis=(2, 4)).reshape(batch, self.tokens, dim).astype(x.dtype)
        return jnp.einsum(
            "BND,DE->BNE", self.norm(pooled), self.kernel[...].astype(self.dtype)
        ).astype(x.dtype)


def pixel_shuffle(x: jax.Array, tokens: int) -> jax.Array:
    """x: [B, G * G, C] (a row-major G x G patch grid) -> [B, tokens, k * k * C] with
    k = G / sqrt(tokens): each k x k window becomes one token, windows row-major, channels
    ordered (row in the window, column in the window, c). transformers' InternVLModel.
    pixel_shuffle (its view / permute / view / permute) gives exactly this order."""
    batch, patches, dim = x.shape
    grid, side = round(patches**0.5), round(tokens**0.5)
    k = grid // side
    windows = x.reshape(batch, side, k, side, k, dim).transpose(0, 1, 3, 2, 4, 5)
    return windows.reshape(batch, tokens, k * k * dim)


class PixelShuffleProjector(Projector):
    """InternVL's multimodal projector: `pixel_shuffle` to `cfg.tokens` tokens per image,
    LayerNorm (eps `cfg.norm_eps`), then the two-layer GELU MLP (transformers'
    InternVLMultiModalProjector: layer_norm, linear_1, act, linear_2). `in_dim` is the
    shuffled width k * k * C."""

    def __init__(
        self, cfg: ProjectorConfig, in_dim: int, out_dim: int, *, dtype, param_dtype, rngs: nnx.Rngs
    ):
        super().__init__(cfg, in_dim, out_dim, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.tokens = cfg.tokens
        self.norm = Norm(in_dim, kind="layernorm", eps=cfg.norm_eps, param_dtype=param_dtype,
                         rngs=rngs, axis="vision_embed")  # fmt: skip

    def __call__(self, x: jax.Array) -> jax.Array:
        """x: [B, G * G, C] -> [B, tokens, out_dim]."""
        return super().__call__(self.norm(pixel_shuffle(x, self.tokens)))
