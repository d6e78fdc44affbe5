"""The training loop, one linear function in the big_vision style: each banner is one phase.

    python -m fgjax.main --config=configs/<file>.py[:args] --workdir=DIR

Rerunning the same command resumes from the newest readable checkpoint in DIR. A failing run
(an exception, a non-finite step, a full disk) finishes or abandons its checkpoint save in
flight before it raises, so the checkpoints left are complete and hold finite values.

config.eval evaluates the current parameters every N steps and at the end, after that step's
checkpoint: the held-out loss and any configured evaluator (multiple choice on a small split,
...), logged as eval/* (train/evaluation.py); it does not change what the run trains.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from fgjax import distributed, native, rundir, storage, trees
from fgjax.console import setup_python_logging
from fgjax.data import pipeline
from fgjax.data.conversation import needs_image_token
from fgjax.data.tokenizer import tokenizer_for
from fgjax.models import presets
from fgjax.models.partitioning import activation_sharding
from fgjax.train import checkpoint, experiment, flops, init, optim, preemption, schema
from fgjax.train import inputs as train_inputs
from fgjax.train.evaluation import Evaluations, EvaluatorFactory
from fgjax.train.metrics import Logger
from fgjax.train.step import TrainState


class NonFiniteError(RuntimeError):
    """The loss, gradient or updated parameters became NaN/inf; the last checkpoint is intact."""


def train(config, workdir: str, evaluators: Sequence[EvaluatorFactory] = ()) -> dict:
    """Trains per `config` in `workdir`; returns the last logged metrics. `evaluators` run
    with config.eval (train/evaluation.py; fgjax.main builds config.eval.evaluators)."""
    # ---------------------------------------------------------------- start-up, logging
    distributed.initialize()
    setup_python_logging()
    config = schema.resolve(config)  # a checked copy with every default: the caller's is kept
    rundir.absolute_paths(config)  # what config.json records works from any directory
    workdir = storage.path(workdir)  # a local directory or gs://
    workdir.mkdir(parents=True, exist_ok=True)
    task_name = config.get("task", "vlm")
    is_vlm = task_name == "vlm"

    # ---------------------------------------------------------------- tokenizer, config checks, mesh
    whole_vlm = config.model.get("vlm") if is_vlm else None  # its own image tokens or <image>
    image_token = is_vlm and (
        not whole_vlm or needs_image_token(presets.whole_vlm(whole_vlm).image_layout)
    )
    tokenizer = tokenizer_for(
        config.data.tokenizer, image_token=image_token, roles=config.data.tokenizer_roles
    )
    if is_vlm and config.model.get("image_token_id") is None:
        config.model.image_token_id = tokenizer.token_to_id("<image>")
    fit_vocabulary(config, tokenizer.vocab_size)
    if task_name == "contrastive" and config.model.text.get("vocab_size", 0) < tokenizer.vocab_size:
        raise ValueError(
            f"config.model.text.vocab_size={config.model.text.get('vocab_size')} is smaller than the "
            f"tokenizer's {tokenizer.vocab_size} ids; raise it"
        )
    exp = experiment.build(config)
    logging.info(
        "mesh %s over %d devices, %d processes",
        dict(exp.mesh.shape),
        exp.mesh.size,
        jax.process_count(),
    )
    logging.info("parameters by group:")
    optim.log_counts(optim.count_report(exp.abstract_params, exp.path_groups, exp.flags))

    # ---------------------------------------------------------------- input pipeline
    train_ds, transform, sources = train_inputs.train_dataset(
        config, exp.model_cfg, tokenizer, pipeline.HostShard.current()
    )
    data_iter = iter(train_ds)
    evaluations = Evaluations(config, exp, tokenizer, workdir, evaluators)  # checks, no compile

    # ---------------------------------------------------------------- resume, or initialize
    ckpt = checkpoint.Checkpointer(
        workdir / "checkpoints",
        every_steps=config.checkpoint.every_steps,
        keep=config.checkpoint.get("keep", 2),
        asynchronous=bool(config.checkpoint.get("asynchronous", True)),
    )
    restored = ckpt.restore_latest(
        {"state": exp.abstract_state(), "frozen": exp.abstract_frozen()}, data_iter
    )
    if restored is None:
        data_iter = iter(train_ds)  # a failed restore may have moved the first one
        state, frozen = fresh_state(exp)
        logging.info("starting from scratch")
    else:
        step, tree = restored
        state, frozen = TrainState(*tree["state"]), tree["frozen"]
        logging.info("resumed from the checkpoint at step %d", step)
    if jax.process_index() == 0:  # after the restore: a run of another config stops above
        rundir.write_configs(workdir, config, exp.model_cfg)

    # ---------------------------------------------------------------- the loop
    total = exp.total_steps
    logger = Logger(
        str(workdir), total, start_step=int(state.step), profile_steps=config.get("profile_steps")
    )
    packing = train_inputs.packing_of(config, exp.model_cfg)
    slots = {"images_per_row": packing.max_images} if packing and packing.max_images else {}
    step_flops = exp.task.step_flops(
        exp.model_cfg, int(config.batch_size), int(config.data.max_length), exp.flags, **slots
    )
    peak = flops.peak_flops(jax.devices()[0].device_kind, config.get("peak_flops_per_device"))
    log_every = int(config.get("log_every", 10))
    export_steps = {int(s) for s in config.get("export_steps", ())}
    pending, metrics = [], {}
    since, since_step = time.perf_counter(), int(state.step)
    # leaving the loop by an error finishes or abandons the save in flight before it propagates
    preempted_at = None
    per_call = int(config.steps_per_call)

    def surfaces(s: int) -> bool:  # a step after which the loop logs, saves, exports or evaluates
        return (s % log_every == 0 or s % ckpt.every_steps == 0 or s == total
                or s in export_steps or evaluations.due(s))  # fmt: skip

    with ckpt, logger, activation_sharding(exp.mesh, exp.rules), preemption.Watch() as watch:
        step = int(state.step)
        while step < total:
            # `count` steps in one call: up to steps_per_call, never past a step that surfaces
            count = 1
            while count < per_call and not surfaces(step + count):
                count += 1
            if per_call == 1:
                batch = pipeline.to_global(next(data_iter), exp.batch_sharding)
                state, step_metrics = exp.step(state, frozen, batch)
            else:
                local = [next(data_iter) for _ in range(count)]
                stacked = jax.tree.map(lambda *xs: np.stack(xs), *local)
                batches = pipeline.to_global(stacked, exp.stacked_batch_sharding)
                state, step_metrics = exp.steps(state, frozen, batches)
            pending.append((step + 1, count, step_metrics))
            step += count
            logger.step(step)
            # an export step (a shorter-trained variant) is also a checkpoint step; the export is
            # written first, so a run killed while exporting resumes before it and exports again
            export_now = step in export_steps and step < total
            preempted = watch.reached(step)  # every process stops at the same step
            save_now = step % ckpt.every_steps == 0 or step == total or export_now or preempted
            if step % log_every == 0 or save_now:
                metrics = _flush(
                    pending,
                    logger,
                    exp.schedules,
                    since,
                    since_step,
                    step_flops,
                    peak,
                    exp.mesh.size,
                )
                pending, since, since_step = [], time.perf_counter(), step
            if export_now:
                native.save(
                    rundir.export_dir(workdir, step),
                    exp.model_cfg,
                    trees.merge(state.trainable, frozen),
                )
            if save_now:  # the steps up to here were checked to be finite just above
                ckpt.save(step, {"state": state, "frozen": frozen}, data_iter, force=True)
            if preempted and step < total:
                preempted_at = step
                break
            if evaluations.due(step):  # after its checkpoint is saved; never on preemption
                params = trees.merge(state.trainable, frozen)
                metrics = {**metrics, **evaluations(step, params, logger)}
                since += metrics["eval/seconds"]  # logged step times leave evaluation out
    if preempted_at is not None:  # the checkpoint is written whole (the `with` waited for it)
        logging.warning("preempted at step %d of %d: checkpoint saved", preempted_at, total)
        raise preemption.Preempted(preempted_at)

    # ---------------------------------------------------------------- parameters export, data report
    native.save(rundir.export_dir(workdir), exp.model_cfg, trees.merge(state.trainable, frozen))
    logging.info("data report: %s", train_inputs.data_report(transform, config.data.sources, sources))
    return {**metrics, "step": int(state.step)}


def fit_vocabulary(config, vocab_size: int) -> None:
    """With config.model.vocab_multiple set, grows the decoder's vocabulary to hold every
    tokenizer id (e.g. an added <image>), rounded up to that multiple as LLaVA pads to 64."""
    multiple = config.model.get("vocab_multiple")
    if not multiple:
        return
    if config.model.get("vlm"):
        preset_vocab = presets.whole_vlm(config.model.vlm).decoder.vocab_size
    else:
        preset_vocab = presets.decoder(config.model.decoder).vocab_size
    overrides = dict(config.model.get("decoder_overrides", {}))
    current = overrides.get("vocab_size", preset_vocab)
    if vocab_size > current:
        overrides["vocab_size"] = -(-vocab_size // multiple) * multiple
        config.model.decoder_overrides = overrides
        logging.info(
            "decoder vocabulary %d -> %d for the tokenizer's %d ids",
            current,
            overrides["vocab_size"],
            vocab_size,
        )


def fresh_state(exp: experiment.Experiment, params: dict | None = None):
    """(TrainState at step 0, frozen parameters). `params` (full, any placement) replaces the
    configured initialization, e.g. to start several meshes from identical weights."""
    config = exp.config
    if params is None:
        params = init.initial_params(
            config.get("init"), exp.model_cfg, exp.param_shardings, int(config.seed)
        )
    else:
        params = jax.device_put(params, exp.param_shardings)
    trainable, frozen = optim.split(params, exp.path_groups, exp.flags)
    opt_state = jax.jit(exp.tx.init, out_shardings=exp.state_shardings.opt_state)(trainable)
    rng = jax.device_put(
        jax.random.key_data(jax.random.key(int(config.seed))), exp.state_shardings.rng
    )
    step = jax.device_put(jnp.zeros((), jnp.int32), exp.state_shardings.step)
    return TrainState(step, trainable, opt_state, rng), frozen


def _flush(pending, logger, schedules, since, since_step, step_flops, peak, num_devices) -> dict:
    """Fetches the metrics of the steps since the last flush, stops on a non-finite one, and
    writes scalars for the newest."""
    host = []
    for first, count, stacked in pending:  # metrics of one step, or of `count` stacked
        m = jax.device_get(stacked)
        if np.ndim(m["loss"]) == 0:
            host.append((first, m))
        else:
            host += [(first + i, {k: v[i] for k, v in m.items()}) for i in range(count)]
    for step, m in host:
        if not bool(m["finite"]):
            raise NonFiniteError(
                f"non-finite values at step {step} (loss={float(m['loss'])}, "
                f"grad_norm={float(m['grad_norm'])}, updated parameters "
                f"{'finite' if bool(m['params_finite']) else 'NOT finite'}): that update was "
                "skipped and training stopped. The last checkpoint is intact; lower the learning "
                "rate, check the data or use float32, then rerun."
            )
        if float(m.get("loss_tokens_over_cap", 0)) > 0:
            raise ValueError(
                f"a row of step {step}'s batch has more loss tokens than "
                f"config.loss_tokens_per_row (the LM head runs only at that many positions per "
                f"row; {int(m['loss_tokens_over_cap'])} loss tokens were beyond it): raise it, "
                "or set it to None for the head at every position. The last checkpoint is intact."
            )
    step, m = host[-1]
    seconds = (time.perf_counter() - since) / max(step - since_step, 1)
    out = {
        "loss": float(m["loss"]),
        "grad_norm": float(m["grad_norm"]),
        "token_accuracy": float(m["correct"]) / max(float(m["tokens"]), 1.0),
        "step_time": seconds,
        "tokens_per_sec": float(m["input_tokens"]) / seconds,
        "achieved_tflops_per_device": step_flops / seconds / num_devices / 1e12,
    }
    if "samples" in m:  # how full the rows were since the last log (config.data.packing)
        keys = ("input_tokens", "row_slots", "samples", "rows")
        total = {k: sum(float(h[k]) for _, h in host) for k in keys}
        out["packing_efficiency"] = total["input_tokens"] / total["row_slots"]
        out["samples_per_row"] = total["samples"] / total["rows"]
    for group, schedule in schedules.items():
        out[f"lr/{group}"] = float(schedule(step - 1))
    if peak:
        out["mfu"] = step_flops / seconds / (peak * num_devices)
    logger.scalars(step, out)
    return out
