"""Which parameters train, and how: parameter groups, stage presets, AdamW with schedules.

Parameters are addressed by '/'-joined paths ("decoder/stack/blocks/attn/q/kernel"). A task
declares regex groups (for a VLM: encoder, projector, decoder); every parameter must match
exactly one group. A stage preset says which groups train. Frozen groups get no optimizer
state and no gradients: the optimizer is built over the trainable subtree only.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Mapping, Sequence

import jax
import numpy as np
import optax

from fgjax.trees import flatten, unflatten

Groups = Sequence[tuple[str, str]]

VLM_GROUPS: Groups = (
    ("encoder", r"^encoder/(?!merger/)"),
    ("projector", r"^(projector|encoder/merger)/"),  # Qwen2.5-VL's patch merger projects
    ("decoder", r"^decoder/"),
)

STAGES: dict[str, dict[str, bool]] = {
    "align": {"encoder": False, "projector": True, "decoder": False},
    "align_llm": {"encoder": False, "projector": True, "decoder": True},
    "finetune": {"encoder": False, "projector": True, "decoder": True},
    "full": {"encoder": True, "projector": True, "decoder": True},
}

_DECAYED_LEAVES = ("kernel", "embedding", "lm_head")


def assign_groups(paths: Sequence[str], groups: Groups) -> dict[str, str]:
    """{path: group}; raises listing every path matched by no group or by several."""
    compiled = [(name, re.compile(pattern)) for name, pattern in groups]
    out, problems = {}, []
    for path in paths:
        hits = [name for name, rx in compiled if rx.search(path)]
        if len(hits) != 1:
            problems.append(f"{path}: matched by {hits or 'no group'}")
        else:
            out[path] = hits[0]
    if problems:
        raise ValueError(
            "every parameter must belong to exactly one group "
            f"{[n for n, _ in groups]}; fix the group patterns:\n  " + "\n  ".join(problems[:20])
        )
    return out


def resolve_trainable(
    stage: str | None, trainable: Mapping[str, bool] | None, groups: Groups
) -> dict[str, bool]:
    """Per-group flags from a stage preset, overridden by explicit flags."""
    names = [n for n, _ in groups]
    flags = {}
    if stage:
        if stage not in STAGES:
            raise ValueError(
                f"unknown stage {stage!r}; use one of {sorted(STAGES)} or set config.trainable"
            )
        flags.update({k: v for k, v in STAGES[stage].items() if k in names})
    flags.update(dict(trainable or {}))
    unknown = sorted(set(flags) - set(names))
    if unknown:
        raise ValueError(f"config.trainable names unknown groups {unknown}; groups are {names}")
    missing = [n for n in names if n not in flags]
    if missing:
        raise ValueError(
            f"no trainable flag for groups {missing}; set config.stage or config.trainable"
        )
    if not any(flags.values()):
        raise ValueError("nothing is trainable; set config.stage or config.trainable")
    return flags


def split(
    params: Mapping, path_groups: Mapping[str, str], flags: Mapping[str, bool]
) -> tuple[dict, dict]:
    """(trainable, frozen) nested dicts."""
    flat = flatten(params)
    trainable = {p: v for p, v in flat.items() if flags[path_groups[p]]}
    frozen = {p: v for p, v in flat.items() if not flags[path_groups[p]]}
    return unflatten(trainable), unflatten(frozen)


def count_report(
    params: Mapping, path_groups: Mapping[str, str], flags: Mapping[str, bool]
) -> list[dict]:
    """Rows {group, trainable, params} for logging."""
    sizes: dict[str, int] = {}
    for path, leaf in flatten(params).items():
        sizes[path_groups[path]] = sizes.get(path_groups[path], 0) + math.prod(np.shape(leaf))
    return [{"group": g, "trainable": flags[g], "params": n} for g, n in sizes.items()]


def log_counts(rows: list[dict]) -> None:
    total = sum(r["params"] for r in rows)
    trained = sum(r["params"] for r in rows if r["trainable"])
    for r in rows:
        logging.info(
            "  %-10s %-9s %15s params",
            r["group"],
            "trainable" if r["trainable"] else "frozen",
            f"{r['params']:,}",
        )
    logging.info(
        "  total %s params, %s trainable (%.1f%%)",
        f"{total:,}",
        f"{trained:,}",
        100 * trained / max(total, 1),
    )


def schedule(optim_cfg, total_steps: int) -> optax.Schedule:
    """Linear warmup from 0 to the peak, then cosine decay to `end_lr_ratio` of the peak."""
    warmup = int(
        optim_cfg.get("warmup_steps", 0) or round(optim_cfg.get("warmup_ratio", 0.0) * total_steps)
    )
    warmup = min(warmup, max(total_steps - 1, 0))
    peak = float(optim_cfg.lr)
    kind = optim_cfg.get("schedule", "cosine")
    if kind == "constant":
        return (
            optax.join_schedules(
                [optax.linear_schedule(0.0, peak, warmup), optax.constant_schedule(peak)], [warmup]
            )
            if warmup
            else optax.constant_schedule(peak)
        )
    if kind != "cosine":
        raise ValueError(f"unknown schedule {kind!r}; use 'cosine' or 'constant'")
    return optax.warmup_cosine_decay_schedule(
        0.0,
        peak,
        warmup,
        max(total_steps, warmup + 1),
        end_value=peak * optim_cfg.get("end_lr_ratio", 0.0),
    )


def make_optimizer(optim_cfg, trainable: Mapping, path_groups: Mapping[str, str], total_steps: int):
    """AdamW over the trainable subtree: global-norm clipping, then per-group learning rates
    (peak lr x config.optim.lr_mults[group]); weight decay only on kernels and embeddings.
    Returns (optax transformation, {group: schedule})."""
    base = schedule(optim_cfg, total_steps)
    mults = dict(optim_cfg.get("lr_mults", {}) or {})
    flat = flatten(trainable)
    labels = unflatten({p: path_groups[p] for p in flat})
    schedules, transforms = {}, {}
    for group in sorted(set(path_groups[p] for p in flat)):
        mult = float(mults.get(group, 1.0))
        schedules[group] = (lambda s, m=mult: base(s) * m) if mult != 1.0 else base
        transforms[group] = optax.adamw(
            schedules[group],
            b1=optim_cfg.get("b1", 0.9),
            b2=optim_cfg.get("b2", 0.999),
            eps=optim_cfg.get("eps", 1e-8),
            weight_decay=optim_cfg.get("weight_decay", 0.0),
            mask=_decay_mask,
        )
    clip = optim_cfg.get("clip_norm", 1.0)
    tx = optax.chain(
        optax.clip_by_global_norm(clip) if clip else optax.identity(),
        optax.multi_transform(transforms, labels),
    )
    return tx, schedules


def _decay_mask(params):
    """True for kernels and embeddings (no weight decay on norms, biases, position tables)."""

    def decayed(path, _):
        return getattr(path[-1], "key", None) in _DECAYED_LEAVES

    return jax.tree_util.tree_map_with_path(decayed, params)
