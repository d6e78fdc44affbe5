"""Logical-axis sharding: rules that map the logical axis names on parameters and activations
to mesh axes, and activation constraints the models apply when rules are active.

The models only name axes; training code activates a mesh and rules around tracing:

    with partitioning.activation_sharding(mesh, rules):
        compiled = jitted_step.lower(...).compile()
"""

from __future__ import annotations

import contextlib
import math
import threading
from collections.abc import Sequence

import jax
from jax.sharding import Mesh, NamedSharding, PartitionSpec

Rules = Sequence[tuple[str, str | tuple[str, ...] | None]]

# Parameters: FSDP shards the width, tensor parallelism shards heads, MLP units and vocabulary.
# Activations: the batch is split over every data-parallel axis.
DEFAULT_RULES: Rules = (
    ("batch", ("data", "fsdp")),
    ("embed", "fsdp"),
    ("vision_embed", "fsdp"),
    ("mlp", "tensor"),
    ("heads", "tensor"),
    ("kv_heads", "tensor"),
    ("vocab", "tensor"),
    ("head_dim", None),
    ("layers", None),
    ("position", None),
    ("patch", None),
    ("channels", None),
)

_context = threading.local()


def spec_for(
    axes: Sequence[str | None], shape: Sequence[int], mesh: Mesh, rules: Rules
) -> PartitionSpec:
    """PartitionSpec for an array with logical `axes`. A dimension not divisible by its mesh
    axes, or a mesh axis already used by an earlier dimension, is left unsharded."""
    table = dict(rules)
    used: set[str] = set()
    out = []
    for name, size in zip(axes, shape):
        target = table.get(name) if name is not None else None
        mesh_axes = (target,) if isinstance(target, str) else tuple(target or ())
        mesh_axes = tuple(
            a for a in mesh_axes if a in mesh.shape and a not in used and mesh.shape[a] > 1
        )
        if mesh_axes and size % math.prod(mesh.shape[a] for a in mesh_axes) == 0:
            used.update(mesh_axes)
            out.append(mesh_axes[0] if len(mesh_axes) == 1 else mesh_axes)
        else:
            out.append(None)
    return PartitionSpec(*out)


@contextlib.contextmanager
def activation_sharding(mesh: Mesh, rules: Rules = DEFAULT_RULES):
    """Within this context, `constrain` pins activations to the mesh."""
    previous = getattr(_context, "value", None)
    _context.value = (mesh, tuple(rules))
    try:
        yield
    finally:
        _context.value = previous


def constrain(x: jax.Array, axes: Sequence[str | None]) -> jax.Array:
    """with_sharding_constraint by logical axes when a mesh is active; identity otherwise."""
    active = getattr(_context, "value", None)
    if active is None:
        return x
    mesh, rules = active
    return jax.lax.with_sharding_constraint(
        x, NamedSharding(mesh, spec_for(axes, x.shape, mesh, rules))
    )


def per_shard(fn, in_axes: Sequence[Sequence[str | None]], out_like: int = 0):
    """`fn` run on each device's shard (jax.shard_map) while a mesh is active, `fn` itself
    otherwise: for kernels XLA cannot partition (Pallas / Mosaic custom calls). in_axes: the
    logical axes of each positional argument; the output is laid out like argument `out_like`
    (same shape and axes). fn must treat the sharded dimensions as independent (batch, heads)."""
    active = getattr(_context, "value", None)
    if active is None:
        return fn
    mesh, rules = active

    def sharded(*args):
        specs = tuple(spec_for(a, x.shape, mesh, rules) for a, x in zip(in_axes, args))
        return jax.shard_map(fn, mesh=mesh, in_specs=specs, out_specs=specs[out_like],
                             check_vma=False)(*args)  # fmt: skip

    return sharded
