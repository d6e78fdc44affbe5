"""Content fingerprints of array trees, to detect checkpoints and exports that restore
without an error but with different values (a flipped byte in a compressed chunk does that:
Orbax and TensorStore check the chunk index, not the data).

A leaf's fingerprint is two position-weighted sums of its raw bits modulo 2**32, computed on
the devices that hold it (no host copy, any sharding, multi-host safe):

    h1 = sum_i bits[i] * (2 i + 1),   h2 = sum_i bits[i] * ((i * 0x9E3779B9) | 1)

Every weight is odd, so any change confined to one element changes both sums; changes of
several elements cancel in both only by chance (about 2**-64).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

GOLDEN = np.uint32(0x9E3779B9)


def _bits(x: jax.Array) -> jax.Array:
    """The raw bits of `x` as u32 (a trailing axis of 2 for 64-bit types)."""
    if x.dtype == jnp.bool_:
        return x.astype(jnp.uint32)
    unsigned = {1: jnp.uint8, 2: jnp.uint16, 4: jnp.uint32, 8: jnp.uint32}[x.dtype.itemsize]
    bits = jax.lax.bitcast_convert_type(x, unsigned)
    return bits.astype(jnp.uint32)


def _leaf(x: jax.Array) -> jax.Array:
    bits = _bits(jnp.asarray(x))
    index = jnp.zeros(bits.shape, jnp.uint32)  # the row-major position, without a reshape
    stride = 1
    for axis in reversed(range(bits.ndim)):
        iota = jax.lax.broadcasted_iota(jnp.uint32, bits.shape, axis)
        index = index + iota * np.uint32(stride % 2**32)
        stride *= bits.shape[axis]
    h1 = jnp.sum(bits * (2 * index + 1), dtype=jnp.uint32)
    h2 = jnp.sum(bits * ((index * GOLDEN) | 1), dtype=jnp.uint32)
    return jnp.stack([h1, h2])


@jax.jit
def _fingerprints(tree):
    return jax.tree.map(_leaf, tree)


def fingerprint(tree) -> list[list]:
    """[[key path, h1, h2], ...] for the array leaves of `tree` (jax or numpy arrays), in
    flattening order."""
    leaves = jax.tree_util.tree_flatten_with_path(_fingerprints(tree))[0]
    return [
        [jax.tree_util.keystr(path), *(int(v) for v in np.asarray(h.addressable_data(0)))]
        for path, h in leaves
    ]


def mismatches(expected: list[list], tree) -> list[str]:
    """The key paths (as `expected` names them) of the leaves of `tree` whose fingerprint
    differs from `expected`. Leaves are matched by position, so a tree restored as a list
    where a named tuple was saved still matches."""
    actual = fingerprint(tree)
    if len(actual) != len(expected):
        return [f"<{len(actual)} arrays where {len(expected)} were saved>"]
    return [e[0] for e, a in zip(expected, actual) if list(e[1:]) != a[1:]]
