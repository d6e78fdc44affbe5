"""The jitted training step: gradient accumulation normalized by the global token count,
global-norm clipping and AdamW on the trainable parameters only, and a non-finite guard.

Axis legend: A micro-batches, B global batch, T tokens.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from fgjax import trees
from fgjax.models.layers import at_least_float32

# loss_fn(model, batch) -> (sum of per-token losses, number of loss tokens, extra metrics as sums)
LossFn = Callable[[nnx.Module, dict], tuple[jax.Array, jax.Array, dict]]


class TrainState(NamedTuple):
    """Everything a resumed run needs besides the frozen parameters and the data position."""

    step: jax.Array  # i32[]
    trainable: dict  # the trainable parameters (nested dict of arrays); the frozen live apart
    opt_state: optax.OptState
    rng: jax.Array  # u32[2]: key data, folded with the step for any randomness in the step


def split_micro_batches(batch: dict, accum: int) -> dict:
    """[B, ...] -> [A, B / A, ...], micro-batch i holding rows i, i + A, ... so that every
    micro-batch stays spread over all data-parallel devices."""

    def split(x):
        if x.shape[0] % accum:
            raise ValueError(f"batch of {x.shape[0]} is not divisible into {accum} micro-batches")
        return jnp.swapaxes(x.reshape(x.shape[0] // accum, accum, *x.shape[1:]), 0, 1)

    return jax.tree.map(split, batch)


def make_train_step(
    graphdef: nnx.GraphDef,
    loss_fn: LossFn,
    tx: optax.GradientTransformation,
    accum: int = 1,
    nan_at_step: int = -1,
):
    """Returns step(state, frozen, batch) -> (state, metrics).

    The loss is the sum of per-token losses over the whole global batch divided by its total
    token count, also with accumulation (not a mean of micro-batch means). A step whose loss,
    gradient norm or updated parameters are not finite (a NaN learning rate gives finite
    gradients and NaN parameters) leaves parameters and optimizer state unchanged and reports
    finite=False; the trainer stops on it. `nan_at_step` plants a NaN loss at that
    step (a debugging and testing aid; -1 disables it).
    """

    def step(state: TrainState, frozen: dict, batch: dict):
        def summed_loss(trainable, micro):
            model = nnx.merge(graphdef, trees.merge(trainable, frozen))
            total, count, extra = loss_fn(model, micro)
            return total, (count, extra)

        def micro_step(micro):
            (total, (count, extra)), grads = jax.value_and_grad(summed_loss, has_aux=True)(
                state.trainable, micro
            )
            acc = at_least_float32(total.dtype)
            return grads, total.astype(acc), count.astype(jnp.float32), extra

        if accum == 1:
            grads, total, count, extra = micro_step(batch)
        else:
            micro_batches = split_micro_batches(batch, accum)
            first = jax.tree.map(lambda x: x[0], micro_batches)
            zeros = jax.tree.map(
                lambda s: jnp.zeros(s.shape, s.dtype), jax.eval_shape(micro_step, first)
            )

            def body(carry, micro):
                return jax.tree.map(jnp.add, carry, micro_step(micro)), None

            (grads, total, count, extra), _ = jax.lax.scan(body, zeros, micro_batches)
        total = jnp.where(state.step == nan_at_step, jnp.nan, total)
        denom = jnp.maximum(count, 1.0)
        grads = jax.tree.map(lambda g: g / denom, grads)
        loss = total / denom
        grad_norm = optax.global_norm(grads)
        updates, opt_state = tx.update(grads, state.opt_state, state.trainable)
        params = optax.apply_updates(state.trainable, updates)
        params_finite = jnp.stack([jnp.isfinite(p).all() for p in jax.tree.leaves(params)]).all()
        finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm) & params_finite
        params = _where(finite, params, state.trainable)
        opt_state = _where(finite, opt_state, state.opt_state)
        new_state = TrainState(state.step + 1, params, opt_state, state.rng)
        metrics = {
            "loss": loss,
            "grad_norm": grad_norm,
            "tokens": count,
            "finite": finite,
            "params_finite": params_finite,
            **extra,
        }
        return new_state, metrics

    return step


def scan_steps(step):
    """`step` over stacked batches, in one compiled call: steps(state, frozen, batches) ->
    (the state after n steps, metrics stacked [n, ...]), batches being n global batches
    stacked [n, B, ...]. Each step is the same computation as one call of `step`; a tiny model
    then pays the per-call dispatch, transfer and bookkeeping once per n steps."""

    def steps(state: TrainState, frozen: dict, batches: dict):
        return jax.lax.scan(lambda carry, batch: step(carry, frozen, batch), state, batches)

    return steps


def _where(cond, new, old):
    return jax.tree.map(lambda a, b: jnp.where(cond, a, b), new, old)
