"""Projectors from image features to the decoder width."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from fgjax.models.config import ProjectorConfig
from fgjax.models.layers import Norm, activation, at_least_float32, dense, param


def projector_dims(cfg: ProjectorConfig, in_dim: int, out_dim: int) -> list[int]:
    """Layer widths, input first: linear and gemma3 (after its pooling) [in, out];
    mlpNx_gelu [in, out, ..., out]; fused_gelu_mlp [in, 4 * in, out, out] (Prismatic)."""
    if cfg.kind in ("linear", "gemma3"):
        return [in_dim, out_dim]
    if cfg.kind == "mlp_gelu":
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
