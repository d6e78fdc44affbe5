"""Will a training config fit the hardware? Compile its real train step ahead of time for the
target -- no hardware, no weights -- and print per-device memory against the device's capacity.

    python -m fgjax.fit --config=configs/llava15.py:stage=pretrain,llm_frozen=True --topology=v5p-64
    python -m fgjax.fit --config=... --topology=gpu:8      # 8 GPUs, estimated on fake CPU devices
    python -m fgjax.fit --config=... --topology=cpu:8

TPU targets (v4-N, v5p-N, v5litepod-N / v5e-N, v6e-N; N TensorCores for v4/v5p, chips for
v5e/v6e) compile with libtpu for the named topology: `pip install -e '.[tpu]'`. GPU and CPU
targets compile for that many fake CPU devices: XLA's CPU memory planner stands in for the
GPU's, so GPU figures are estimates (activations and temporaries differ by backend).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import sys

# Device capacity (GiB of HBM per device) by target family.
CAPACITY_GIB = {"v4": 32, "v5p": 95, "v5e": 16, "v6e": 32, "gpu": 80, "cpu": 64}


@dataclasses.dataclass(frozen=True)
class Target:
    family: str  # v4 | v5p | v5e | v6e | gpu | cpu
    devices: int
    topology: str | None  # libtpu topology name, e.g. "v5p:4x4x2"

    @property
    def capacity_gib(self) -> float:
        return CAPACITY_GIB[self.family]

    @property
    def platform(self) -> str:
        """"tpu", "gpu" or "cpu": whose implementation choices the compiled step takes."""
        return self.family if self.family in ("gpu", "cpu") else "tpu"


def _tpu_grid(chips: int, dims: int) -> str:
    """A chip grid for `chips` chips: 2-D for v5e/v6e, 3-D tori for v4/v5p."""
    shape = [1] * dims
    i = 0
    while math.prod(shape) < chips:
        shape[i % dims] *= 2
        i += 1
    if math.prod(shape) != chips:
        raise ValueError(f"{chips} chips is not a power of two; TPU slices come in powers of two")
    return "x".join(str(s) for s in sorted(shape))


def parse_topology(name: str) -> Target:
    """'v5p-64' (64 TensorCores = 32 chips), 'v4-8', 'v5e-16' / 'v5litepod-16', 'v6e-8',
    'gpu:8', 'cpu:8' -> Target."""
    name = name.strip().lower()
    if name.startswith(("gpu:", "cpu:")):
        family, count = name.split(":")
        return Target(family, int(count), None)
    for prefix, family, per_chip, dims in (
        ("v5litepod-", "v5e", 1, 2), ("v5e-", "v5e", 1, 2), ("v6e-", "v6e", 1, 2),
        ("v5p-", "v5p", 2, 3), ("v4-", "v4", 2, 3),
    ):  # fmt: skip
        if name.startswith(prefix):
            cores = int(name[len(prefix) :])
            chips = max(cores // per_chip, 1)
            libtpu_name = {"v5e": "v5e", "v6e": "v6e", "v5p": "v5p", "v4": "v4"}[family]
            return Target(family, chips, f"{libtpu_name}:{_tpu_grid(chips, dims)}")
    raise ValueError(
        f"unknown topology {name!r}; use e.g. v4-32, v5p-64, v5e-16, v6e-8 (TPU), gpu:8 or cpu:8"
    )


def target_devices(target: Target):
    import jax

    if target.topology is None:
        devices = jax.devices("cpu")
        if len(devices) < target.devices:
            raise RuntimeError(
                f"{target.devices} fake CPU devices are needed but JAX has {len(devices)}; "
                "run `python -m fgjax.fit` as its own process (it sets the count before JAX starts)"
            )
        return devices[: target.devices]
    try:
        from jax.experimental import topologies

        return topologies.get_topology_desc(topology_name=target.topology, platform="tpu").devices
    except Exception as error:  # noqa: BLE001 - libtpu missing or too old: say how to fix
        raise RuntimeError(
            f"cannot compile for {target.topology} ({type(error).__name__}: {error}); "
            "install the TPU compiler with `pip install -e '.[tpu]'`"
        ) from error


def per_device_bytes(tree) -> int:
    """Bytes one device holds of a pytree of sharded ShapeDtypeStructs."""
    import jax
    import numpy as np

    total = 0
    for leaf in jax.tree.leaves(tree):
        shape = leaf.sharding.shard_shape(leaf.shape) if leaf.sharding is not None else leaf.shape
        total += math.prod(shape) * np.dtype(leaf.dtype).itemsize
    return total


def fit(config, target: Target) -> dict:
    """Compiles the train step of `config` for `target` and returns the memory report."""
    from fgjax.models import platform
    from fgjax.train import experiment

    # the program is built with the target's choices (attention kernel, products), not the host's
    with platform.compiling_for(target.platform):
        exp = experiment.build(config, devices=target_devices(target))
        state, frozen, batch = exp.abstract_state(), exp.abstract_frozen(), exp.abstract_batch()
        compiled = exp.compile()
    memory = compiled.memory_analysis()
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    gib = 2**30
    params = per_device_bytes(state.trainable) + per_device_bytes(frozen)
    optimizer = per_device_bytes(state.opt_state)
    inputs = per_device_bytes(batch)
    temp = memory.temp_size_in_bytes
    extra_outputs = memory.output_size_in_bytes - memory.alias_size_in_bytes
    total = memory.argument_size_in_bytes + extra_outputs + temp
    analytic = exp.task.step_flops(
        exp.model_cfg, int(config.batch_size), int(config.data.max_length), exp.flags
    )
    return {
        "target": target.topology or f"{target.family}:{target.devices}",
        "devices": target.devices,
        "mesh": dict(exp.mesh.shape),
        "stage": config.get("stage"),
        "params_gib": params / gib,
        "optimizer_gib": optimizer / gib,
        "batch_gib": inputs / gib,
        "activations_and_temporaries_gib": temp / gib,
        "total_gib": total / gib,
        "capacity_gib": target.capacity_gib,
        "fits": total / gib <= target.capacity_gib,
        "compiled_flops_per_device": float(cost.get("flops", float("nan")))
        if cost
        else float("nan"),
        "analytic_flops_per_step": analytic,
        "analytic_flops_per_device": analytic / target.devices,
    }


def _size(gib: float) -> str:
    return f"{gib:9.2f} GiB" if gib >= 1 else f"{gib * 1024:9.2f} MiB"


def format_report(r: dict) -> str:
    verdict = "FITS" if r["fits"] else "DOES NOT FIT"
    lines = [
        f"target {r['target']} ({r['devices']} devices), mesh {r['mesh']}, stage {r['stage']}",
        "per-device memory:",
        f"  parameters                 {_size(r['params_gib'])}",
        f"  optimizer state            {_size(r['optimizer_gib'])}",
        f"  input batch                {_size(r['batch_gib'])}",
        f"  activations + temporaries  {_size(r['activations_and_temporaries_gib'])}",
        f"  total                      {_size(r['total_gib'])} of {r['capacity_gib']} GiB -> {verdict}",
        f"compiled FLOPs per device per step: {r['compiled_flops_per_device']:.3e} "
        "(XLA counts a scanned layer loop's body once, so this undercounts scanned stacks)",
        f"analytic model FLOPs per step: {r['analytic_flops_per_step']:.3e} "
        f"({r['analytic_flops_per_device']:.3e} per device; used for MFU)",
    ]
    return "\n".join(lines)


def main(argv=None) -> None:
    from absl import app, flags
    from ml_collections import config_flags

    config_flag = config_flags.DEFINE_config_file(
        "config", None, "Training config file.", lock_config=False
    )
    topology_flag = flags.DEFINE_string(
        "topology", "cpu:8", "v4-N, v5p-N, v5e-N, v6e-N, gpu:N or cpu:N"
    )
    json_flag = flags.DEFINE_string("json_out", None, "Also write the report as JSON to this file.")

    def run(args):
        if len(args) > 1:
            raise app.UsageError(f"unexpected arguments {args[1:]}")
        target = parse_topology(topology_flag.value)
        import jax

        # Nothing runs here: JAX stays on the CPU, TPU targets only compile through libtpu.
        jax.config.update("jax_platforms", "cpu")
        if target.topology is None:  # fake CPU devices must exist before JAX starts
            jax.config.update("jax_num_cpu_devices", target.devices)
        report = fit(config_flag.value, target)
        print(format_report(report))
        if json_flag.value:
            with open(json_flag.value, "w") as f:
                json.dump(report, f, indent=2)

    app.run(run, argv=argv or sys.argv)


if __name__ == "__main__":
    # libtpu on a machine without TPUs: no metadata server, no exclusive lock on the runtime
    os.environ.setdefault("TPU_SKIP_MDS_QUERY", "1")
    os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")
    main()
