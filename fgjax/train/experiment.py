"""Everything a training config determines before any data is read or weight allocated: the
mesh, the model config, parameter groups and trainable flags, shardings, the optimizer and the
jitted step. The trainer runs it; the fit check and tests compile it ahead of time.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from fgjax import models, sharding, trees
from fgjax.models.config import FusedVitConfig, VLMConfig
from fgjax.models.contrastive import ContrastiveConfig
from fgjax.models.partitioning import DEFAULT_RULES, activation_sharding
from fgjax.models.qwen_vl import Qwen25VLConfig
from fgjax.train import checks, optim, schema, tasks
from fgjax.train import inputs as train_inputs
from fgjax.train.step import TrainState, make_train_step, scan_steps


@dataclasses.dataclass
class Experiment:
    config: Any
    mesh: Mesh
    rules: tuple
    task: Any
    model_cfg: Any
    graphdef: nnx.GraphDef
    abstract_params: dict  # ShapeDtypeStructs, the full model
    path_groups: dict[str, str]
    flags: dict[str, bool]
    param_shardings: dict
    frozen_shardings: dict
    state_shardings: TrainState
    batch_sharding: NamedSharding
    tx: Any
    schedules: dict
    step: Any  # the jitted step(state, frozen, batch) -> (state, metrics)
    steps: Any = None  # the jitted steps(state, frozen, batches [n, B, ...]) -> (state, metrics [n])

    @property
    def stacked_batch_sharding(self) -> NamedSharding:
        """Of n batches stacked on a new leading axis (`steps`): that axis unsplit."""
        return NamedSharding(self.mesh, PartitionSpec(None, *self.batch_sharding.spec))

    @property
    def total_steps(self) -> int:
        return int(self.config.num_steps)

    def abstract_state(self) -> TrainState:
        """The train state as ShapeDtypeStructs with shardings."""
        trainable, _ = optim.split(self.abstract_params, self.path_groups, self.flags)
        shapes = TrainState(
            jax.ShapeDtypeStruct((), jnp.int32),
            trainable,
            jax.eval_shape(self.tx.init, trainable),
            jax.ShapeDtypeStruct((2,), jnp.uint32),
        )
        return jax.tree.map(_with_sharding, shapes, self.state_shardings)

    def abstract_frozen(self) -> dict:
        _, frozen = optim.split(self.abstract_params, self.path_groups, self.flags)
        return jax.tree.map(_with_sharding, frozen, self.frozen_shardings)

    def abstract_batch(self) -> dict:
        """The global batch as ShapeDtypeStructs: tokens i32[B, T], loss_mask and input_mask
        bool[B, T], and for a VLM images f32[B, S, S, 3] (a tuple per tower when fused).
        Packed (config.data.packing): segment_ids and positions i32[B, T] too, and images
        f32[B, M, S, S, 3] with M image slots per row. Qwen2.5-VL: images f32[B, N, C*T*P*P],
        each row's patches at the tower's fixed size."""
        batch, length = int(self.config.batch_size), int(self.config.data.max_length)
        spec = {
            "tokens": jax.ShapeDtypeStruct((batch, length), jnp.int32),
            "loss_mask": jax.ShapeDtypeStruct((batch, length), bool),
            "input_mask": jax.ShapeDtypeStruct((batch, length), bool),
        }
        packing = train_inputs.packing_of(self.config, self.model_cfg)
        if packing is not None:
            spec["segment_ids"] = jax.ShapeDtypeStruct((batch, length), jnp.int32)
            spec["positions"] = jax.ShapeDtypeStruct((batch, length), jnp.int32)
        slots = (packing.max_images,) if packing is not None else ()
        if isinstance(self.model_cfg, ContrastiveConfig):
            res = self.model_cfg.image.resolution
            return jax.tree.map(lambda s: _with_sharding(s, self.batch_sharding), {
                "images": jax.ShapeDtypeStruct((batch, res, res, 3), jnp.float32),
                "text_tokens": jax.ShapeDtypeStruct((batch, length), jnp.int32),
                "text_mask": jax.ShapeDtypeStruct((batch, length), bool),
            })  # fmt: skip
        if isinstance(self.model_cfg, VLMConfig):
            enc = self.model_cfg.encoder
            towers = enc.towers if isinstance(enc, FusedVitConfig) else (enc,)
            images = tuple(
                jax.ShapeDtypeStruct((batch, *slots, t.resolution, t.resolution, 3), jnp.float32)
                for t in towers
            )
            spec["images"] = images if isinstance(enc, FusedVitConfig) else images[0]
        if isinstance(self.model_cfg, Qwen25VLConfig):
            _, h, w = self.model_cfg.encoder.fixed_grid
            patches = (batch, h * w, self.model_cfg.encoder.patch_dim)
            spec["images"] = jax.ShapeDtypeStruct(patches, jnp.float32)
        return jax.tree.map(lambda s: _with_sharding(s, self.batch_sharding), spec)

    def lower(self):
        """The step lowered for abstract inputs (no memory allocated)."""
        with activation_sharding(self.mesh, self.rules):
            return self.step.lower(
                self.abstract_state(), self.abstract_frozen(), self.abstract_batch()
            )

    def compile(self):
        return self.lower().compile()


def _with_sharding(leaf, sharding_):
    return jax.ShapeDtypeStruct(leaf.shape, leaf.dtype, sharding=sharding_)


def build(config, devices=None) -> Experiment:
    """Validates `config` and derives the experiment; raises before compiling on bad input."""
    config = schema.resolve(config)
    task = tasks.get(config.get("task", "vlm"))
    checks.training_values(config, [name for name, _ in task.groups])
    if devices is None and config.get("num_devices"):
        devices = jax.devices()[: int(config.num_devices)]
    mesh = sharding.make_mesh(config.get("mesh", {"data": -1}), devices)
    checks.batch_fits_mesh(config, mesh)
    rules = tuple(tuple(r) for r in (config.get("sharding_rules", None) or DEFAULT_RULES))
    model_cfg = task.model_config(config)
    train_inputs.packing_of(config, model_cfg)  # raises on a packing that cannot work

    graphdef, abstract_state = nnx.split(models.abstract(model_cfg))
    abstract_params = nnx.to_pure_dict(abstract_state)
    path_groups = optim.assign_groups(list(trees.flatten(abstract_params)), task.groups)
    flags = optim.resolve_trainable(config.get("stage"), config.get("trainable"), task.groups)
    param_sh = sharding.state_shardings(abstract_state, mesh, rules)
    trainable_sh, frozen_sh = optim.split(param_sh, path_groups, flags)
    trainable_abs, _ = optim.split(abstract_params, path_groups, flags)
    tx, schedules = optim.make_optimizer(
        config.optim, trainable_abs, path_groups, int(config.num_steps)
    )
    replicated = NamedSharding(mesh, PartitionSpec())
    opt_abstract = jax.eval_shape(tx.init, trainable_abs)
    opt_sh = sharding.optimizer_shardings(tx, opt_abstract, trainable_sh, mesh)
    state_sh = TrainState(replicated, trainable_sh, opt_sh, replicated)
    batch_sh = sharding.batch_sharding(mesh)

    exp = Experiment(
        config, mesh, rules, task, model_cfg, graphdef, abstract_params, path_groups, flags,
        param_sh, frozen_sh, state_sh, batch_sh, tx, schedules, step=None,
    )  # fmt: skip
    nan_step = int(config.get("debug", {}).get("nan_at_step", -1))  # tests plant a NaN loss here
    loss_fn = task.loss_fn(flags, config.get("loss_tokens_per_row"))
    step_fn = make_train_step(graphdef, loss_fn, tx, int(config.get("grad_accum", 1)), nan_step)
    return with_step(exp, step_fn)


def with_step(exp: Experiment, step_fn) -> Experiment:
    """`exp` with `step_fn(state, frozen, batch) -> (state, metrics)` jitted onto its
    shardings (the train state donated), one step per call and n steps per call."""
    replicated = NamedSharding(exp.mesh, PartitionSpec())

    def jitted(fn, batch_sharding):
        return jax.jit(
            fn,
            in_shardings=(exp.state_shardings, exp.frozen_shardings, batch_sharding),
            out_shardings=(exp.state_shardings, replicated),
            donate_argnums=(0,),
        )

    return dataclasses.replace(
        exp,
        step=jitted(step_fn, exp.batch_sharding),
        steps=jitted(scan_steps(step_fn), exp.stacked_batch_sharding),
    )
