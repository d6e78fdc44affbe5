"""Evaluation during training: at steps N, 2N, ... and at the last step, the held-out loss and
the given evaluators run on the current parameters; their scalars go to TensorBoard,
metrics.jsonl and the console (metrics.Logger) as "eval/<name>".

config.eval (fields: schema.py):
  every_steps  N; None: no evaluation
  held_out     source specs as data.sources (inputs.SOURCES): the training loss on every one
               of their examples, each counted exactly once over all processes
               (pipeline.evaluation_batches), summed over the global batch and divided by the
               token count -> eval/held_out_loss, eval/held_out_token_accuracy,
               eval/held_out_tokens
  batch_size   global rows per held-out batch; None: the training micro-batch (batch_size //
               grad_accum), which fits in memory as training runs it with its gradients
  evaluators   evaluation configs (fgjax/evaluate/during_training.py), built by fgjax.main:
               this package cannot import fgjax.evaluate, so `trainer.train` takes them as
               factories. Each gets the run's Setup once, before anything compiles (a bad
               config raises there), and returns evaluate(step, params) -> {name: scalar}, with
               params the full parameters as the trainer holds them
               (trees.merge(state.trainable, frozen): global arrays placed by their logical
               axes; nnx.merge(setup.graphdef, params) is the model)

An evaluation reads no training data, draws no randomness and leaves the train state alone, so
a run ends with the same parameters and data position with or without it. Its time is left out
of the step times the trainer logs and is logged itself as eval/seconds.
"""

from __future__ import annotations

import copy
import dataclasses
import time
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from fgjax import sharding, trees
from fgjax.data import pipeline
from fgjax.data.skips import BadInputError
from fgjax.data.tokenizer import Tokenizer
from fgjax.models.partitioning import activation_sharding
from fgjax.train import inputs as train_inputs

Evaluate = Callable[[int, dict], dict]  # (step, full parameters) -> {name: scalar}


@dataclasses.dataclass(frozen=True)
class Setup:
    """What an evaluator factory gets from the run, once, before anything compiles."""

    config: Any  # the resolved training config
    model_cfg: Any  # the model trained (a VLMConfig for task vlm)
    graphdef: nnx.GraphDef  # nnx.merge(graphdef, params) is the model at the current step
    mesh: Mesh
    rules: tuple  # logical-axis rules of the parameters and activations
    tokenizer: Tokenizer
    workdir: Any  # the run's workdir (a local epath.Path, or gs://)


EvaluatorFactory = Callable[[Setup], Evaluate]


class HeldOutLoss:
    """The training loss (the task's loss function, with the run's loss_tokens_per_row) on
    config.eval.held_out, jitted onto the experiment's shardings."""

    def __init__(self, config, exp, tokenizer: Tokenizer):
        if config.task == "contrastive":
            raise ValueError(
                "config.eval.held_out: the held-out loss is for next-token tasks (vlm, lm); the "
                "sigmoid loss couples every pair of a batch, so padded batches change it"
            )
        self.batch_size = config.eval.batch_size or config.batch_size // config.grad_accum
        dp, processes = sharding.data_parallel_size(exp.mesh), jax.process_count()
        if self.batch_size % dp or self.batch_size % processes:
            raise ValueError(
                f"config.eval.batch_size={self.batch_size} must be a multiple of the "
                f"data-parallel size {dp} and of the {processes} processes; set it"
            )
        # one example per row, as every example counts once (packing is for training)
        self.transform = train_inputs.make_transform(_unpacked(config), exp.model_cfg, tokenizer)
        self.sources = []
        for i, spec in enumerate(config.eval.held_out):
            try:
                source = train_inputs.make_source(dict(spec))
            except ValueError as error:
                raise ValueError(f"config.eval.held_out[{i}]: {error}") from None
            if not len(source):
                raise BadInputError(f"config.eval.held_out[{i}] {dict(spec)} has no records")
            self.sources.append(train_inputs.MarkSkips(source))
        self.mesh, self.rules = exp.mesh, exp.rules
        self.batch_sharding = exp.batch_sharding
        loss_fn = exp.task.loss_fn(exp.flags, config.get("loss_tokens_per_row"))
        graphdef = exp.graphdef

        def sums(params, batch):
            """Sums over the valid rows of one global batch: loss, loss tokens, correct."""
            batch = dict(batch)
            valid = batch.pop("valid")  # bool[B]: False on the padding rows
            batch["loss_mask"] = batch["loss_mask"] & valid[:, None]
            total, count, extra = loss_fn(nnx.merge(graphdef, params), batch)
            over = extra.get("loss_tokens_over_cap", jnp.zeros((), jnp.float32))
            return {"loss": total, "tokens": count, "correct": extra["correct"], "over_cap": over}

        # the parameters as the trainer holds them: trees.merge(trainable, frozen)
        param_shardings = trees.merge(exp.state_shardings.trainable, exp.frozen_shardings)
        replicated = NamedSharding(exp.mesh, PartitionSpec())
        self._sums = jax.jit(
            sums, in_shardings=(param_shardings, exp.batch_sharding), out_shardings=replicated
        )

    def _example(self, index: int):
        transform = self.transform

        def example(record):
            out = transform(record)
            if out is None:
                raise BadInputError(
                    f"a record of config.eval.held_out[{index}] cannot be used "
                    f"({transform.skips.counts}): every held-out example is evaluated, so "
                    "each must be usable (e.g. fit config.data.max_length)"
                )
            return out

        return example

    def __call__(self, step: int, params: dict) -> dict:
        """{held_out_loss, held_out_token_accuracy, held_out_tokens} of `params`."""
        parts = []  # per-batch sums, left on the device until every batch is dispatched
        with activation_sharding(self.mesh, self.rules):
            for index, source in enumerate(self.sources):
                for local in pipeline.evaluation_batches(
                    source, self._example(index), global_batch_size=self.batch_size
                ):
                    batch = pipeline.to_global(local, self.batch_sharding)
                    parts.append(self._sums(params, batch))
        total = {k: sum(float(p[k]) for p in jax.device_get(parts)) for k in parts[0]}
        if total["over_cap"] > 0:
            raise ValueError(
                f"a held-out row at step {step} has more loss tokens than "
                f"config.loss_tokens_per_row ({int(total['over_cap'])} beyond it): raise it, or "
                "set it to None. The last checkpoint is intact."
            )
        tokens = max(total["tokens"], 1.0)
        return {
            "held_out_loss": total["loss"] / tokens,
            "held_out_token_accuracy": total["correct"] / tokens,
            "held_out_tokens": total["tokens"],
        }


def _unpacked(config):
    packing = config.data.get("packing")
    if not packing or not packing.get("enabled"):
        return config
    config = copy.deepcopy(config)
    config.data.packing.enabled = False
    return config


class Evaluations:
    """config.eval for one run: the held-out loss and the factories' evaluators, built (and
    every config checked) here, before anything compiles."""

    def __init__(self, config, exp, tokenizer: Tokenizer, workdir,
                 factories: Sequence[EvaluatorFactory] = ()):  # fmt: skip
        eval_cfg = config.eval
        self.every, self.total = eval_cfg.every_steps, exp.total_steps
        if eval_cfg.evaluators and not factories:
            raise ValueError(
                "config.eval.evaluators are built by fgjax.evaluate: run the config with "
                "python -m fgjax.main (fgjax.main.run), or pass trainer.train(..., evaluators="
                "fgjax.evaluate.during_training.build(config))"
            )
        wanted = bool(eval_cfg.held_out) or bool(factories)
        if self.every is None and wanted:
            raise ValueError("config.eval.every_steps is None: set how often to evaluate")
        if self.every is not None and not wanted:
            raise ValueError(
                f"config.eval.every_steps={self.every} but there is nothing to evaluate: set "
                "config.eval.held_out or config.eval.evaluators (or every_steps=None)"
            )
        self.evaluators: list[Evaluate] = []
        if eval_cfg.held_out:
            self.evaluators.append(HeldOutLoss(config, exp, tokenizer))
        setup = Setup(config, exp.model_cfg, exp.graphdef, exp.mesh, exp.rules, tokenizer,
                      workdir)  # fmt: skip
        self.evaluators += [factory(setup) for factory in factories]

    def due(self, step: int) -> bool:
        """Whether to evaluate after `step` (counted from 1)."""
        return self.every is not None and (step % self.every == 0 or step == self.total)

    def __call__(self, step: int, params: dict, logger) -> dict:
        """Runs every evaluator; logs and returns {"eval/<name>": value} and eval/seconds."""
        start = time.perf_counter()
        out = {}
        for evaluate in self.evaluators:
            out.update({f"eval/{k}": float(v) for k, v in evaluate(step, params).items()})
        out["eval/seconds"] = time.perf_counter() - start
        logger.scalars(step, out)
        return out
