"""Projectors from image features to the decoder width."""

from __future__ import annotations

import jax
from flax import nnx

from fgjax.models.config import ProjectorConfig
from fgjax.models.layers import activation, dense


def projector_dims(cfg: ProjectorConfig, in_dim: int, out_dim: int) -> list[int]:
    """Layer widths, input first: linear [in, out]; mlpNx_gelu [in, out, ..., out];
    fused_gelu_mlp [in, 4 * in, out, out] (Prismatic)."""
    if cfg.kind == "linear":
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
