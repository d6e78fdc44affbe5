"""Small building blocks: parameters with logical axes, norms, MLPs, activations, resizing.

Logical axis names used on every parameter (mapped to mesh axes by sharding rules):
  vocab     vocabulary rows of embeddings and the LM head
  embed     the model width (residual stream)
  mlp       MLP hidden units
  heads     query heads;  kv_heads  key/value heads;  head_dim  per-head features
  layers    the stacked-layer axis of scanned blocks
  patch     conv kernel rows/columns; channels  image channels; position  pos-emb rows
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from fgjax.models import mixed_dot

Axes = tuple[str | None, ...]


def at_least_float32(dtype) -> jnp.dtype:
    """The precision of reductions that HF runs in float32 (norms, attention logits, the loss):
    float32 for half-precision and float32 models, float64 for a float64 reference model."""
    return jnp.promote_types(dtype, jnp.float32)


def param(rngs: nnx.Rngs, init, shape, dtype, axes: Axes) -> nnx.Param:
    """A parameter initialized by `init(key, shape, dtype)` that carries logical `axes`."""
    assert len(axes) == len(shape), (shape, axes)
    return nnx.Param(init(rngs.params(), shape, dtype), out_sharding=axes)


def token_embedding(rngs: nnx.Rngs, cfg) -> nnx.Param:
    """The [vocab_size, width] token embedding of a text model, normal(0.02) as HF starts it."""
    return param(
        rngs, nnx.initializers.normal(0.02), (cfg.vocab_size, cfg.width), cfg.params_dtype,
        ("vocab", "embed"),
    )  # fmt: skip


def dense(rngs, in_dim, out_dim, axes: Axes, *, bias=True, dtype, param_dtype) -> nnx.Linear:
    """nnx.Linear (kernel [in, out]) with logical axes on kernel and bias. Kernels start
    LeCun-normal (unit-variance outputs), which trains small models from scratch far faster
    than the 0.02-std init of large pretrained checkpoints (whose weights are loaded anyway)."""
    return nnx.Linear(
        in_dim,
        out_dim,
        use_bias=bias,
        dtype=dtype,
        param_dtype=param_dtype,
        kernel_init=nnx.initializers.lecun_normal(),
        kernel_metadata={"out_sharding": axes},
        bias_metadata={"out_sharding": axes[-1:]},
        rngs=rngs,
        **mixed_dot.linear_kwargs(dtype),
    )


def activation(name: str):
    """The activation functions of the supported model families, by HF name."""
    return {
        "gelu": functools.partial(jax.nn.gelu, approximate=False),
        "gelu_tanh": functools.partial(jax.nn.gelu, approximate=True),
        "quick_gelu": lambda x: x * jax.nn.sigmoid(1.702 * x),
        "silu": jax.nn.silu,
    }[name]


class Norm(nnx.Module):
    """LayerNorm or RMSNorm over the last axis (the last len(dim) axes for a tuple `dim`:
    InternViT's qk-norm over all heads), computed in float32 (float64 for a float64 model)
    and cast back.

    RMSNorm follows HF exactly: Llama multiplies the weight after casting back to the input
    dtype; Gemma (`add_one`) multiplies by (1 + w) in float32 before casting.
    """

    def __init__(
        self,
        dim: int | tuple[int, ...],
        *,
        kind: str,
        eps: float,
        add_one: bool = False,
        param_dtype,
        rngs: nnx.Rngs,
        # the logical axis of the normalized features ("head_dim": qk-norm), one per dim
        axis: str | tuple[str, ...] = "embed",
    ):
        self.kind, self.eps, self.add_one = kind, eps, add_one
        shape = dim if isinstance(dim, tuple) else (dim,)
        axes = axis if isinstance(axis, tuple) else (axis,)
        self.axes = tuple(range(-len(shape), 0))  # the normalized axes of the input
        init = nnx.initializers.zeros if add_one else nnx.initializers.ones
        self.scale = param(rngs, init, shape, param_dtype, axes)
        if kind == "layernorm":
            self.bias = param(rngs, nnx.initializers.zeros, shape, param_dtype, axes)

    def __call__(self, x: jax.Array) -> jax.Array:
        dtype, acc, axes = x.dtype, at_least_float32(x.dtype), self.axes
        x32 = x.astype(acc)
        if self.kind == "layernorm":
            mean = x32.mean(axes, keepdims=True)
            var = jnp.square(x32 - mean).mean(axes, keepdims=True)
            y = (x32 - mean) * jax.lax.rsqrt(var + self.eps)
            return (y * self.scale[...].astype(acc) + self.bias[...].astype(acc)).astype(dtype)
        y = x32 * jax.lax.rsqrt(jnp.square(x32).mean(axes, keepdims=True) + self.eps)
        if self.add_one:
            return (y * (1.0 + self.scale[...].astype(acc))).astype(dtype)
        return y.astype(dtype) * self.scale[...].astype(dtype)


class Mlp(nnx.Module):
    """ "plain": fc2(act(fc1 x)) (ViTs);  "gated": down(act(gate x) * up x) (Llama family)."""

    def __init__(self, width, hidden, *, kind, act, bias, dtype, param_dtype, rngs):
        self.kind, self.act = kind, activation(act)
        kw = dict(bias=bias, dtype=dtype, param_dtype=param_dtype)
        if kind == "gated":
            self.gate = dense(rngs, width, hidden, ("embed", "mlp"), **kw)
            self.up = dense(rngs, width, hidden, ("embed", "mlp"), **kw)
            self.down = dense(rngs, hidden, width, ("mlp", "embed"), **kw)
        else:
            self.fc1 = dense(rngs, width, hidden, ("embed", "mlp"), **kw)
            self.fc2 = dense(rngs, hidden, width, ("mlp", "embed"), **kw)

    def __call__(self, x: jax.Array) -> jax.Array:
        """[..., width] -> [..., width]."""
        # one flat token axis: with several leading axes XLA:CPU's backward transposes the
        # activations for every weight gradient (benchmarks/mlp_backward)
        lead = x.shape[:-1]
        x = x.reshape(-1, x.shape[-1])
        if self.kind == "gated":
            y = self.down(self.act(self.gate(x)) * self.up(x))
        else:
            y = self.fc2(self.act(self.fc1(x)))
        return y.reshape(*lead, y.shape[-1])


# -- bicubic resampling exactly as torch.nn.functional.interpolate does it -----------------


def _cubic(x: np.ndarray, a: float) -> np.ndarray:
    x = np.abs(x)
    return np.where(
        x <= 1,
        ((a + 2) * x - (a + 3)) * x * x + 1,
        np.where(x < 2, ((a * x - 5 * a) * x + 8 * a) * x - 4 * a, 0.0),
    )


@functools.lru_cache(maxsize=64)
def bicubic_matrix(in_size: int, out_size: int, antialias: bool) -> np.ndarray:
    """The [out, in] float64 weight matrix of 1-D bicubic resampling, align_corners=False.

    Without antialias: torch's bicubic (a = -0.75, 4 taps, border indices clamped).
    With antialias: torch's `antialias=True` path (PIL-style, a = -0.5, support widened by
    the scale when downsampling, weights normalized, taps outside the input dropped).
    """
    scale = in_size / out_size
    weights = np.zeros((out_size, in_size))
    if not antialias:
        for o in range(out_size):
            src = (o + 0.5) * scale - 0.5
            base = int(np.floor(src))
            t = src - base
            for k in range(-1, 3):
                weights[o, min(max(base + k, 0), in_size - 1)] += _cubic(np.array(t - k), -0.75)
        return weights
    support = 2.0 * max(scale, 1.0)
    inv = 1.0 / max(scale, 1.0)
    for o in range(out_size):
        center = (o + 0.5) * scale
        lo = max(int(center - support + 0.5), 0)
        hi = min(int(center + support + 0.5), in_size)
        taps = np.arange(lo, hi)
        w = _cubic((taps - center + 0.5) * inv, -0.5)
        weights[o, lo:hi] = w / w.sum()
    return weights


def resize_bicubic(grid: jax.Array, out_hw: tuple[int, int], antialias: bool) -> jax.Array:
    """Resamples f32[H, W, C] to [h, w, C] separably with torch-identical weights."""
    h_in, w_in, _ = grid.shape
    wh = jnp.asarray(bicubic_matrix(h_in, out_hw[0], antialias), jnp.float32)
    ww = jnp.asarray(bicubic_matrix(w_in, out_hw[1], antialias), jnp.float32)
    hp = jax.lax.Precision.HIGHEST
    grid = jnp.einsum("oh,hwc->owc", wh, grid.astype(jnp.float32), precision=hp)
    return jnp.einsum("pw,owc->opc", ww, grid, precision=hp)
