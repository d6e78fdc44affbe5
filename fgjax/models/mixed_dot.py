"""Half-precision products that accumulate in float32 on every backend, forward and backward.

XLA:CPU has no kernel for a bf16 x bf16 -> bf16 dot: it converts both operands to float32 and
runs the float32 kernel, so a bf16 model trains no faster than a float32 one. Its bf16 x bf16 ->
float32 dot runs on the CPU's bf16 units (AMX, AVX-512 BF16): on this project's 2-core machine
a 2048 x 512 x 1408 product ran at 1,093 GFLOP/s against 251 for bf16 -> bf16 and 280 in float32
(2026-12-02; benchmarks/train_step.py times the whole training step). `einsum` below asks for
that product (`preferred_element_type=float32`) and rounds the result to the operands' dtype;
its custom VJP does the same for both backward products, which jax's own transpose rule would
otherwise take in float32 (the cotangent of a float32 result). The numbers are those of torch's
bf16 autocast: exact products, float32 sums, one rounding to bf16 per product.

`for_dtype(dtype)` gives the einsum / dot_general a layer should use: these on a CPU in half
precision, jax's own elsewhere (GPUs and TPUs have native bf16 dots with float32 accumulation).
"""

from __future__ import annotations

import functools
import string

import jax
import jax.numpy as jnp

from fgjax.models import platform

HALF = (jnp.bfloat16, jnp.float16)


def _parse(spec: str) -> tuple[str, str, str]:
    inputs, out = spec.replace(" ", "").split("->")
    a, b = inputs.split(",")
    return a, b, out


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def einsum(spec: str, a: jax.Array, b: jax.Array) -> jax.Array:
    """jnp.einsum(spec, a, b) for two operands of one half-precision dtype, summed in float32
    and rounded once to that dtype. spec: explicit two-operand form ("BTD,DNH->BTNH") in which
    every index of an operand appears in the other operand or in the output."""
    return jnp.einsum(spec, a, b, preferred_element_type=jnp.float32).astype(a.dtype)


def _forward(spec, a, b):
    return einsum(spec, a, b), (a, b)


def _backward(spec, residuals, g):
    a, b = residuals
    sa, sb, so = _parse(spec)
    g = g.astype(a.dtype)
    da = jnp.einsum(f"{so},{sb}->{sa}", g, b, preferred_element_type=jnp.float32)
    db = jnp.einsum(f"{sa},{so}->{sb}", a, g, preferred_element_type=jnp.float32)
    return da.astype(a.dtype), db.astype(b.dtype)


einsum.defvjp(_forward, _backward)


def einsum_op(spec: str, a, b, *, precision=None, preferred_element_type=None, out_sharding=None):
    """`einsum` with jnp.einsum's signature (nnx.Einsum's `einsum_op`). Only the default
    precision and result dtype are supported, which is how fgjax's layers call it."""
    del precision, out_sharding  # one device's product; the layers pass neither
    assert preferred_element_type in (None, a.dtype), preferred_element_type
    return einsum(spec.replace(" ", ""), a, b)


def dot_general(lhs, rhs, dimension_numbers, precision=None, preferred_element_type=None,
                out_sharding=None):  # fmt: skip
    """`einsum` with lax.dot_general's signature (nnx.Linear's `dot_general`)."""
    del precision, out_sharding
    assert preferred_element_type in (None, lhs.dtype), preferred_element_type
    return einsum(_dot_spec(dimension_numbers, lhs.ndim, rhs.ndim), lhs, rhs)


def _dot_spec(dimension_numbers, lhs_ndim: int, rhs_ndim: int) -> str:
    """The einsum string of a dot_general: output axes batch, lhs free, rhs free."""
    (lc, rc), (lb, rb) = dimension_numbers
    letters = iter(string.ascii_letters)
    lhs = [next(letters) for _ in range(lhs_ndim)]
    rhs = [None] * rhs_ndim
    for i, j in zip((*lc, *lb), (*rc, *rb)):
        rhs[j] = lhs[i]
    rhs = [x or next(letters) for x in rhs]
    out = [lhs[i] for i in lb]
    out += [x for i, x in enumerate(lhs) if i not in (*lc, *lb)]
    out += [x for j, x in enumerate(rhs) if j not in (*rc, *rb)]
    return f"{''.join(lhs)},{''.join(rhs)}->{''.join(out)}"


def enabled(dtype, backend: str | None = None) -> bool:
    """Whether layers computing in `dtype` use these products: half precision on a CPU
    (`backend`, default: the platform the program is built for, models/platform.py)."""
    backend = backend or platform.target()
    return backend == "cpu" and dtype is not None and jnp.dtype(dtype) in map(jnp.dtype, HALF)


def linear_kwargs(dtype) -> dict:
    """nnx.Linear keyword arguments for a layer computing in `dtype`."""
    return {"dot_general": dot_general} if enabled(dtype) else {}


def einsum_kwargs(dtype) -> dict:
    """nnx.Einsum keyword arguments for a layer computing in `dtype`."""
    return {"einsum_op": einsum_op} if enabled(dtype) else {}
