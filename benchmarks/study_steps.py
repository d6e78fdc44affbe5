"""Steps/s of the miniature study's training runs, one optimizer step per compiled call
against several (`config.steps_per_call`: a `lax.scan` over the steps up to the next log,
checkpoint, export or evaluation), in one run on this machine.

The runs are the study's own (configs/study/mini.py through fgjax.study.stages): stage 1
(alignment, the LLM trained) and stage 2 (instruction tuning), with random initialisation in
place of the stage-0 components, whose weights do not change a step's cost. Their models are
tiny (0.1-0.6M parameters), so per-call dispatch, host transfer and bookkeeping weigh as much
as the arithmetic. Before timing, the two ways must log the same losses: the same steps.

    .venv/bin/python -m benchmarks.study_steps [--steps 80] [--per_call 20]

Steps/s is measured from the trainer's own step times over every log interval after the first
(which includes compiling). Writes benchmarks/results/study_steps.json.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from pathlib import Path

import numpy as np

from benchmarks.common import report
from configs.study import mini
from fgjax.study import run as study_run
from fgjax.study import stages
from fgjax.train import trainer


def run_records(config, workdir: Path) -> list[dict]:
    trainer.train(config, str(workdir))
    return [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=80, help="steps per run (a multiple of 4)")
    parser.add_argument("--per_call", type=int, default=20)
    args = parser.parse_args()

    study = mini.get_config()
    arms = {arm.name: arm for arm in stages.arms()}
    trained = next(a for a in arms.values() if a.pretrain == "trained")
    rows, extra = [], {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        paths = study_run.study_paths(study, tmp)
        units = {
            "stage 1: align (LLM trained)": stages.align_run(study, paths, 0, trained),
            "stage 2: instruction tuning": stages.finetune_run(study, paths, 0, trained),
        }
        for name, unit in units.items():
            config = unit.config
            del config["init"]  # random weights: the cost of a step does not depend on them
            config.num_steps, config.log_every = args.steps, args.steps // 4
            config.checkpoint.every_steps = args.steps
            results = {}
            for per_call in (1, args.per_call):
                config.steps_per_call = per_call
                results[per_call] = run_records(config, tmp / f"{len(rows)}-{per_call}")
            one, many = results[1], results[args.per_call]
            losses_one, losses_many = [r["loss"] for r in one], [r["loss"] for r in many]
            assert losses_one == losses_many, (name, losses_one, losses_many)
            rate = {k: 1 / float(np.mean([r["step_time"] for r in v[1:]])) for k, v in results.items()}
            rows.append({
                "run": name,
                "batch": int(config.batch_size),
                "tokens_per_row": int(config.data.max_length),
                "steps_per_s_1_per_call": rate[1],
                f"steps_per_s_{args.per_call}_per_call": rate[args.per_call],
                "speedup": rate[args.per_call] / rate[1],
            })  # fmt: skip
            extra[name] = {"identical_losses": True, "losses": losses_one}
    report("study_steps", rows, {"steps": args.steps, "per_call": args.per_call,
                                 "load_average": list(os.getloadavg()), **extra})  # fmt: skip


if __name__ == "__main__":
    main()
