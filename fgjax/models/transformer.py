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
    """x + attn(norm(x)), then x + mlp(norm(x)); LayerScale on both branches when configured;
    with `sandwich_norm` (Gemma 2/3) each branch's output is normed too before the add."""

    def __init__(self, cfg: TransformerConfig, *, rngs: nnx.Rngs):
        self.attn_norm = make_norm(cfg, rngs)
        self.attn = Attention(cfg, rngs=rngs)
        self.mlp_norm = make_norm(cfg, rngs)
        self.sandwich_norm = cfg.sandwich_norm
        if cfg.sandwich_norm:
            self.attn_out_norm = make_norm(cfg, rngs)
            self.mlp_out_norm = make_norm(cfg, rngs)
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
        if self.sandwich_norm:
            y = self.attn_out_norm(y)
        if self.layer_scale:
            y = y * self.attn_scale[...].astype(y.dtype)
        x = x + y
        y = self.mlp(self.mlp_norm(x))
        if self.sandwich_norm:
            y = self.mlp_out_norm(y)
        if self.layer_scale:
            y = y * self.mlp_scale[...].astype(y.dtype)
        return constrain(x + y, ("batch", None, None)), kv


class Stack(nnx.Module):
    """`cfg.depth` blocks. With `cfg.scan_layers` their parameters are stacked along a
    leading `layers` axis and applied with `jax.lax.scan`, so compile time does not grow
    with depth; otherwise they live in an `nnx.List` and run in a Python loop."""

    def __init__(self, cfg: TransformerConfig, *, rngs: nnx.Rngs):
        self.depth, self.scan, self.remat = cfg.depth, cfg.scan_layers, cfg.remat
        # per layer: True where it takes the `local` mask and RoPE (sliding-window layers)
        self.local_layers = getattr(cfg, "sliding_layers", None)
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
        local=None,
        cache_kv=None,
        end=None,
        num_layers=None,
        adds=None,
        return_hidden=False,
    ):
        """Runs the first `num_layers` blocks (default all).

        x: [B, T, D]; mask and rope as `Attention` takes them; local: the (mask, rope) of the
        layers `cfg.layer_types` marks sliding (needed when it marks any); cache_kv: optional
        (k, v) stacked [L, B, S, K, H]; adds: optional [K, B, T, D], adds[k] added to block k's
        output before block k + 1 reads it (Qwen3-VL's DeepStack; scanned, blocks 0 .. K-1 and
        the rest run as two scans).
        Returns (x, hidden, cache_kv): hidden is a tuple of each block's output ([B, T, D],
        before any add, as transformers records it; only when `return_hidden`), cache_kv the
        updated cache (or None).
        """
        n = self.depth if num_layers is None else num_layers
        if n == 0:
            return x, (), cache_kv
        if adds is not None and adds.shape[0] > n:
            raise ValueError(f"{adds.shape[0]} DeepStack adds for {n} blocks")

        def run_block(graphdef, state, x, kv, is_local):
            layer_mask, layer_rope = mask, rope
            if isinstance(is_local, bool):  # unrolled: each layer knows its kind
                layer_mask, layer_rope = local if is_local else (mask, rope)
            elif is_local is not None:  # scanned (or rematerialized): a traced bool per layer

                def pick(full, sliding):
                    return jax.tree.map(lambda f, s: jnp.where(is_local, s, f), full, sliding)

                layer_mask, layer_rope = pick(mask, local[0]), pick(rope, local[1])
            return nnx.merge(graphdef, state)(x, mask=layer_mask, rope=layer_rope, kv=kv, end=end)

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
                x, kv = run_block(*nnx.split(self.blocks[i]), x, kv, self._is_local(i))
                hidden.append(x)
                new_kv.append(kv)
                if adds is not None and i < adds.shape[0]:
                    x = x + adds[i].astype(x.dtype)
            return x, tuple(hidden) if return_hidden else (), _restack(cache_kv, new_kv, n)

        graphdef, state = nnx.split(self.blocks)
        if n < self.depth:
            state = jax.tree.map(lambda a: a[:n], state)

        def body(x, xs):
            layer_state, kv, is_local, add = xs
            x, kv = run_block(graphdef, layer_state, x, kv, is_local)
            out = x
            if add is not None:
                x = x + add.astype(x.dtype)
            return x, (out if return_hidden else None, kv if cache_kv is not None else None)

        kv_in = None if cache_kv is None else jax.tree.map(lambda a: a[:n], cache_kv)
        is_local = None
        if self._uses_local():
            is_local = jnp.asarray(self.local_layers[:n])
        xs = (state, kv_in, is_local)
        if adds is None:
            x, (hidden, kv_out) = jax.lax.scan(body, x, (*xs, None))
        else:  # blocks 0 .. K-1 with their adds, then the others
            k = adds.shape[0]
            first, rest = (jax.tree.map(lambda a, s=s: a[s], xs) for s in (slice(k), slice(k, n)))
            x, ys = jax.lax.scan(body, x, (*first, adds))
            if k < n:
                x, more = jax.lax.scan(body, x, (*rest, None))
                ys = jax.tree.map(lambda a, b: jnp.concatenate([a, b]), ys, more)
            hidden, kv_out = ys
        hidden = tuple(hidden[i] for i in range(n)) if return_hidden else ()
        if cache_kv is not None and n < self.depth:
            kv_out = tuple(jnp.concatenate([new, old[n:]]) for new, old in zip(kv_out, cache_kv))
        return x, hidden, kv_out

    def _uses_local(self) -> bool:
        return self.local_layers is not None and any(self.local_layers)

    def _is_local(self, i: int) -> bool | None:
        return self.local_layers[i] if self._uses_local() else None


def _restack(cache_kv, new_kv, n):
    """Rebuilds the stacked (k, v) cache after an unrolled pass over the first n layers."""
    if cache_kv is None:
        return None
    k = jnp.stack([kv[0] for kv in new_kv])
    v = jnp.stack([kv[1] for kv in new_kv])
    if n < cache_kv[0].shape[0]:
        k, v = jnp.concatenate([k, cache_kv[0][n:]]), jnp.concatenate([v, cache_kv[1][n:]])
    return k, v
