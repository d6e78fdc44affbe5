"""Device meshes from config and the shardings of parameters and batches.

Mesh axes: `data` (pure data parallelism), `fsdp` (data parallelism with parameters, gradients
and optimizer state sharded), `tensor` (heads, MLP units and vocabulary split). One axis may be
-1 to take the remaining devices.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import jax
import numpy as np
import optax
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from fgjax.models.partitioning import DEFAULT_RULES, Rules, spec_for

MESH_AXES = ("data", "fsdp", "tensor")


def resolve_mesh_shape(mesh_config: Mapping[str, int], num_devices: int) -> dict[str, int]:
    """Fills in the one -1 axis and checks the product against the device count."""
    unknown = [k for k in mesh_config if k not in MESH_AXES]
    if unknown:
        raise ValueError(f"unknown mesh axes {unknown}; use {MESH_AXES}")
    shape = {axis: int(mesh_config.get(axis, 1)) for axis in MESH_AXES}
    free = [axis for axis, size in shape.items() if size == -1]
    if len(free) > 1:
        raise ValueError(f"only one mesh axis may be -1, got {free}")
    fixed = math.prod(size for size in shape.values() if size != -1)
    if free:
        if num_devices % fixed:
            raise ValueError(
                f"mesh {dict(mesh_config)}: the fixed axes use {fixed} devices, which does not divide the "
                f"{num_devices} available; make the fixed axes' product a divisor of {num_devices}"
            )
        shape[free[0]] = num_devices // fixed
    elif fixed != num_devices:
        raise ValueError(
            f"mesh {dict(mesh_config)} needs {fixed} devices but {num_devices} are available; "
            f"set config.mesh so the axes multiply to {num_devices} (e.g. data=-1)"
        )
    return shape


def make_mesh(mesh_config: Mapping[str, int], devices=None) -> Mesh:
    devices = jax.devices() if devices is None else devices
    shape = resolve_mesh_shape(mesh_config, len(devices))
    device_array = np.asarray(devices).reshape(tuple(shape.values()))
    return Mesh(device_array, MESH_AXES, axis_types=(jax.sharding.AxisType.Auto,) * len(MESH_AXES))


def data_parallel_size(mesh: Mesh) -> int:
    return mesh.shape["data"] * mesh.shape["fsdp"]


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """Leading batch axis split over data and fsdp."""
    return NamedSharding(mesh, PartitionSpec(("data", "fsdp")))


def state_shardings(abstract_state: nnx.State, mesh: Mesh, rules: Rules = DEFAULT_RULES) -> dict:
    """A pure dict of NamedShardings mirroring `abstract_state.to_pure_dict()`, from each
    parameter's logical axes (`out_sharding` metadata)."""

    def sharding_of(var):
        axes = var.get_metadata().get("out_sharding") or (None,) * len(var.shape)
        return NamedSharding(mesh, spec_for(axes, var.shape, mesh, rules))

    shardings = jax.tree.map(
        sharding_of, abstract_state, is_leaf=lambda x: isinstance(x, nnx.Variable)
    )
    return nnx.to_pure_dict(shardings) if hasattr(nnx, "to_pure_dict") else shardings.to_pure_dict()


def optimizer_shardings(tx, opt_abstract, param_shardings: dict, mesh: Mesh):
    """Shardings for the optax state of `tx`: every parameter-shaped part (Adam's moments)
    takes its parameter's sharding, found by optax.tree_utils.tree_map_params; counts and
    scalars are replicated. Parameters another group's optimizer masks out stay MaskedNodes."""
    replicated = NamedSharding(mesh, PartitionSpec())
    return optax.tree_utils.tree_map_params(
        tx,
        lambda leaf, sharding: leaf if isinstance(leaf, optax.MaskedNode) else sharding,
        opt_abstract,
        param_shardings,
        transform_non_params=lambda _: replicated,
        is_leaf=lambda x: isinstance(x, (jax.ShapeDtypeStruct, optax.MaskedNode)),
    )
