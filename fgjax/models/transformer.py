"""The pre-norm transformer block and the layer stack (scanned or unrolled), shared by
vision encoders and decoders.

Axis legend: B batch, T tokens, S key slots, D width, L layers (see attention.py).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from fgjax.models.attention import Attention
from fgjax.models.config import TransformerConfig
from fgjax.models.layers import Mlp, Norm, param
from fgjax.models.partitioning import constrain

REMAT_POLICIES = {
    "full": None,  # save nothing, recompute everything in the backward pass
    "dots": jax.checkpoint_policies.checkpoint_dots,
    "dots_no_batch": jax.checkpoint_policies.checkpoint_dots_with_no_batch_dims,
}


def make_norm(cfg: TransformerConfig, rngs: nnx.Rngs) -> Norm:
    return Norm(
        cfg.width,
        kind=cfg.norm,
        eps=cfg.norm_eps,
        add_one=cfg.norm_add_one,
        param_dtype=cfg.params_dtype,
        rngs=rngs,
    )


class Block(nnx.Module):
    """x + attn(norm(x)), then x + mlp(norm(x)); LayerScale on both branches when configured."""

    def __init__(self, cfg: TransformerConfig, *, rngs: nnx.Rngs):
        self.attn_norm = make_norm(cfg, rngs)
        self.attn = Attention(cfg, rngs=rngs)
        self.mlp_norm = make_norm(cfg, rngs)
        self.mlp = Mlp(
            cfg.width,
            cfg.mlp_dim,
            kind=cfg.mlp,
            act=cfg.act,
            bias=cfg.mlp_bias,
            dtype=cfg.compute_dtype,
            param_dtype=cfg.params_dtype,
            rngs=rngs,
        )
        self.layer_scale = cfg.layer_scale
        if cfg.layer_scale:
            init = nnx.initializers.constant(cfg.layer_scale_init)
            self.attn_scale = param(rngs, init, (cfg.width,), cfg.params_dtype, ("embed",))
            self.mlp_scale = param(rngs, init, (cfg.width,), cfg.params_dtype, ("embed",))

    def __call__(self, x, *, mask=None, rope=None, kv=None, end=None):
        """x: [B, T, D] -> ([B, T, D], (k, v))."""
        y, kv = self.attn(self.attn_norm(x), mask=mask, rope=rope, kv=kv, end=end)
        if self.layer_scale:
            y = y * self.attn_scale[...].astype(y.dtype)
        x = x + y
        y = self.mlp(self.mlp_norm(x))
        if self.layer_scale:
            y = y * self.mlp_scale[...].astype(y.dtype)
        return constrain(x + y, ("batch", None, None)), kv


class Stack(nnx.Module):
    """`cfg.depth` blocks. With `cfg.scan_layers` their parameters are stacked along a
    leading `layers` axis and applied with `jax.lax.scan`, so compile time does not grow
    with depth; otherwise they live in an `nnx.List` and run in a Python loop."""

    def __init__(self, cfg: TransformerConfig, *, rngs: nnx.Rngs):
        self.depth, self.scan, self.remat = cfg.depth, cfg.scan_layers, cfg.remat
        if cfg.scan_layers:

            @nnx.split_rngs(splits=cfg.depth)
            @nnx.vmap(in_axes=(0,), out_axes=0, transform_metadata={nnx.PARTITION_NAME: "layers"})
            def make_blocks(rngs):
                return Block(cfg, rngs=rngs)

            self.blocks = make_blocks(rngs)
        else:
            self.blocks = nnx.List([Block(cfg, rngs=rngs) for _ in range(cfg.depth)])

    def __call__(
        self,
        x,
        *,
        mask=None,
        rope=None,
        cache_kv=None,
        end=None,
        num_layers=None,
        return_hidden=False,
    ):
        """Runs the first `num_layers` blocks (default all).

        x: [B, T, D]; cache_kv: optional (k, v) stacked [L, B, S, K, H].
        Returns (x, hidden, cache_kv): hidden is a tuple of each block's output ([B, T, D],
        only when `return_hidden`), cache_kv the updated cache (or None).
        """
        n = self.depth if num_layers is None else num_layers
        if n == 0:
            return x, (), cache_kv

        def run_block(graphdef, state, x, kv):
            return nnx.merge(graphdef, state)(x, mask=mask, rope=rope, kv=kv, end=end)

        if self.remat != "none":
            run_block = jax.checkpoint(
                run_block,
                policy=REMAT_POLICIES[self.remat],
                prevent_cse=not self.scan,
                static_argnums=(0,),
            )

        if not self.scan:
            hidden, new_kv = [], []
            for i in range(n):
                kv = None if cache_kv is None else (cache_kv[0][i], cache_kv[1][i])
                x, kv = run_block(*nnx.split(self.blocks[i]), x, kv)
                hidden.append(x)
                new_kv.append(kv)
            return x, tuple(hidden) if return_hidden else (), _restack(cache_kv, new_kv, n)

        graphdef, state = nnx.split(self.blocks)
        if n < self.depth:
            state = jax.tree.map(lambda a: a[:n], state)

        def body(x, xs):
            layer_state, kv = xs
            x, kv = run_block(graphdef, layer_state, x, kv)
            return x, (x if return_hidden else None, kv if cache_kv is not None else None)

        kv_in = None if cache_kv is None else jax.tree.map(lambda a: a[:n], cache_kv)
        x, (hidden, kv_out) = jax.lax.scan(body, x, (state, kv_in))
        hidden = tuple(hidden[i] for i in range(n)) if return_hidden else ()
        if cache_kv is not None and n < self.depth:
            kv_out = tuple(jnp.concatenate([new, old[n:]]) for new, old in zip(kv_out, cache_kv))
        return x, hidden, kv_out


def _restack(cache_kv, new_kv, n):
    """Rebuilds the stacked (k, v) cache after an unrolled pass over the first n layers."""
    if cache_kv is None:
        return None
    k = jnp.stack([kv[0] for kv in new_kv])
    v = jnp.stack([kv[1] for kv in new_kv])
    if n < cache_kv[0].shape[0]:
        k, v = jnp.concatenate([k, cache_kv[0][n:]]), jnp.concatenate([v, cache_kv[1][n:]])
    return k, v
