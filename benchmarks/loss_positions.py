"""The LM head at every position vs only at the loss positions (config.loss_tokens_per_row), on
the miniature study's own steps: its VLM (tiny SigLIP tower, 2-block width-128 decoder,
vocabulary 2048) at the stage-1 and stage-2 shapes of configs/study/mini.py, each row holding
as many loss tokens as the study's longest (13 of 32 in alignment, 18 of 96 in instruction
tuning). Random weights and tokens: the step's cost does not depend on them.

    .venv/bin/python -m benchmarks.loss_positions

Writes benchmarks/results/loss_positions.json.
"""

from __future__ import annotations

from pathlib import Path

import jax
import ml_collections
import numpy as np

from benchmarks.common import report, time_call
from configs.study import mini
from fgjax.study import stages
from fgjax.train import experiment, trainer

VOCAB, IMAGE_TOKEN = 2048, 3
SHAPES = {  # step: (its block of the study config, loss tokens per row, as the study's longest)
    "align_llm": ("align", 13),
    "finetune": ("finetune", 18),
}


def step_config(study, stage: str, cap) -> ml_collections.ConfigDict:
    paths = stages.Paths(Path("/unused"), Path("/unused"), VOCAB, IMAGE_TOKEN)
    arm = next(a for a in stages.arms() if a.pretrain == "trained")
    unit = (stages.align_run if stage == "align_llm" else stages.finetune_run)(study, paths, 0, arm)
    config = ml_collections.ConfigDict(unit.config.to_dict())
    config.init, config.loss_tokens_per_row = None, cap
    return config


def seconds_per_step(config, loss_tokens: int) -> float:
    exp = experiment.build(config)
    state, frozen = trainer.fresh_state(exp)
    rows, length = int(config.batch_size), int(config.data.max_length)
    rng = np.random.default_rng(0)
    tokens = rng.integers(10, VOCAB, (rows, length)).astype(np.int32)
    tokens[:, 1:17] = IMAGE_TOKEN
    loss = np.zeros((rows, length), bool)
    loss[:, length - loss_tokens :] = True
    batch = jax.device_put(
        {"tokens": tokens, "loss_mask": loss, "input_mask": np.ones((rows, length), bool),
         "images": rng.normal(size=(rows, 32, 32, 3)).astype(np.float32)},
        exp.batch_sharding,
    )  # fmt: skip
    box = [state]

    def step():
        box[0], metrics = exp.step(box[0], frozen, batch)
        jax.block_until_ready(metrics)

    return time_call(step, warmup=3, repeats=20)


def main() -> None:
    study = mini.get_config()
    rows = []
    for stage, (block, loss_tokens) in SHAPES.items():
        cap = int(study[block].loss_tokens_per_row)
        every = seconds_per_step(step_config(study, stage, None), loss_tokens)
        only = seconds_per_step(step_config(study, stage, cap), loss_tokens)
        rows.append({
            "step": stage, "batch": int(study[block].batch_size),
            "length": int(study[block].max_length), "loss_tokens": loss_tokens, "cap": cap,
            "every_position_s": every, "loss_positions_s": only, "speed-up": every / only,
        })  # fmt: skip
    report("loss_positions", rows)


if __name__ == "__main__":
    main()
