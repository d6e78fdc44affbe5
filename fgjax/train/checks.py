"""Checks of a training config's values, run by `experiment.build` before anything compiles:
each bad value raises one ValueError that names the key, the value and what to use instead.
(Shapes, model names and the mesh itself are checked where they are built.)
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import jax

from fgjax import sharding


def _integer(key: str, value, minimum: int, why: str = "") -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"config.{key}={value!r} must be an integer >= {minimum}{why}")


def _number(key: str, value, *, low: float, high: float = math.inf, low_open=False) -> None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    ok = ok and (value > low if low_open else value >= low) and value <= high
    if not ok:
        bound = f"> {low}" if low_open else f">= {low}"
        if high != math.inf:
            bound += f" and <= {high}"
        raise ValueError(f"config.{key}={value!r} must be a finite number {bound}")


def training_values(config, groups: Iterable[str]) -> None:
    """Raises on the first bad value among the loop, checkpoint and optimizer settings;
    `groups` are the task's parameter groups (for optim.lr_mults)."""
    num_steps = config.get("num_steps")
    _integer("num_steps", num_steps, 1)
    _integer("batch_size", config.get("batch_size"), 1)
    _integer("grad_accum", config.get("grad_accum", 1), 1)
    _integer("log_every", config.get("log_every", 10), 1)
    _integer("steps_per_call", config.get("steps_per_call", 1), 1)
    if config.get("loss_tokens_per_row") is not None:
        _integer("loss_tokens_per_row", config.get("loss_tokens_per_row"), 1, " (or None: all)")
    checkpoint = config.get("checkpoint") or {}
    if "every_steps" not in checkpoint:
        raise ValueError("config.checkpoint.every_steps is missing; set how often to save")
    _integer("checkpoint.every_steps", checkpoint["every_steps"], 1)
    keep = checkpoint.get("keep", 2)
    if keep is not None:  # None keeps every checkpoint
        _integer("checkpoint.keep", keep, 1, " (None keeps all): else a stopped run cannot resume")
    for step in config.get("export_steps", ()) or ():
        if isinstance(step, bool) or not isinstance(step, int) or not 1 <= step < num_steps:
            raise ValueError(
                f"config.export_steps holds {step!r}; each must be an integer step in "
                f"[1, num_steps={num_steps}) (the final parameters are always exported)"
            )
    optim(config.get("optim") or {}, list(groups))
    evaluation(config.get("eval") or {})


def evaluation(eval_cfg) -> None:
    """config.eval's numbers (what it names is checked where it is built: train/evaluation.py)."""
    if eval_cfg.get("every_steps") is not None:
        _integer("eval.every_steps", eval_cfg["every_steps"], 1, " (or None: never)")
    if eval_cfg.get("batch_size") is not None:
        _integer("eval.batch_size", eval_cfg["batch_size"], 1, " (or None: the micro-batch)")


def optim(optim_cfg, groups: list[str]) -> None:
    if "lr" not in optim_cfg:
        raise ValueError("config.optim.lr is missing; set the peak learning rate")
    _number("optim.lr", optim_cfg["lr"], low=0.0, low_open=True)
    for key, low, high in (
        ("warmup_ratio", 0.0, 1.0),
        ("end_lr_ratio", 0.0, 1.0),
        ("weight_decay", 0.0, math.inf),
        ("b1", 0.0, 1.0),
        ("b2", 0.0, 1.0),
    ):
        if optim_cfg.get(key) is not None:
            _number(f"optim.{key}", optim_cfg[key], low=low, high=high)
    if optim_cfg.get("warmup_steps") is not None:
        _integer("optim.warmup_steps", optim_cfg["warmup_steps"], 0)
    if optim_cfg.get("eps") is not None:
        _number("optim.eps", optim_cfg["eps"], low=0.0, low_open=True)
    if optim_cfg.get("clip_norm"):  # 0 or None: no clipping
        _number("optim.clip_norm", optim_cfg["clip_norm"], low=0.0, low_open=True)
    mults = dict(optim_cfg.get("lr_mults") or {})
    unknown = sorted(set(mults) - set(groups))
    if unknown:
        raise ValueError(
            f"config.optim.lr_mults names {unknown}, which are not parameter groups; the groups "
            f"are {groups}"
        )
    for group, mult in mults.items():
        _number(f"optim.lr_mults[{group!r}]", mult, low=0.0)


def batch_fits_mesh(config, mesh) -> None:
    """Batch checks that must fail before anything compiles, each saying what to change."""
    dp = sharding.data_parallel_size(mesh)
    batch, accum = int(config.batch_size), int(config.get("grad_accum", 1))
    if batch % (dp * accum):
        raise ValueError(
            f"batch_size={batch} must be divisible by the data-parallel size ({dp} = data x fsdp) times "
            f"grad_accum ({accum}); use a multiple of {dp * accum}, or change config.mesh"
        )
    if batch % jax.process_count():
        raise ValueError(
            f"batch_size={batch} must be divisible by the {jax.process_count()} processes"
        )
