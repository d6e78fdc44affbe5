"""The miniature study's units run side by side on single-threaded worker processes, one per
core (fgjax/study/workers.py), against one after another in one process on every core (the
study's way before), in one run on this machine.

The units are the study's own stage-1 (alignment, LLM trained) and stage-2 (instruction tuning)
runs of the trained arm for `--runs` seeds, with random initialisation in place of the stage-0
components (their weights do not change a step's cost). Each way runs every unit from scratch,
with a warm compilation cache (a first pass compiles everything), so the figure is what a
study's units cost: steps, data pipeline, checkpoints and exports. Before the timing counts,
both ways must end every run at the same loss to 1e-3 (relative): one thread splits, and so
rounds, the sums of a product differently from two.

    .venv/bin/python -m benchmarks.study_workers [--runs 4]

Writes benchmarks/results/study_workers.json.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

import jax

from benchmarks.common import report
from configs.study import mini
from fgjax.study import run as study_run
from fgjax.study import stages, workers


def _units(study, paths: stages.Paths, runs: int) -> list[stages.Unit]:
    arm = next(a for a in stages.arms() if a.pretrain == "trained")
    units = []
    for seed in range(runs):
        align, instruct = stages.align_run(study, paths, seed, arm), stages.finetune_run(study, paths, seed, arm)
        del align.config["init"]  # random weights; instruction tuning starts from the aligned run
        units += [stages.Unit(align.name, "train", align.config, align.workdir, 1.0, "stage 1"),
                  stages.Unit(instruct.name, "train", instruct.config, instruct.workdir, 1.0,
                              "stage 2", needs=(align.name,))]  # fmt: skip
    return units


def _final_losses(units) -> dict[str, float]:
    out = {}
    for u in units:
        lines = (u.workdir / "metrics.jsonl").read_text().splitlines()
        out[u.name] = [json.loads(line) for line in lines if "loss" in line][-1]["loss"]
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=4, help="seeds of the trained arm")
    args = parser.parse_args()
    study = mini.get_config()
    rows, losses = [], {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        tok = study_run.make_tokenizer(study, tmp / "tokenizer")
        paths = stages.Paths(tmp / "runs", tmp / "tokenizer", -(-tok.vocab_size // 64) * 64,
                             tok.token_to_id("<image>"))  # fmt: skip
        cache = tmp / "xla_cache"
        jax.config.update("jax_compilation_cache_dir", str(cache))
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.2)
        count = workers.default_count()

        def in_process(units):
            for u in units:
                study_run.execute(u)

        def side_by_side(units):
            workers.run_units(units, study_run.execute, count, None, cache,
                              lambda *a: None, lambda *a: None)  # fmt: skip

        seconds = {}
        for name, way in (("one process, every core", in_process),
                          (f"{count} single-threaded workers", side_by_side)):  # fmt: skip
            units = _units(study, paths, args.runs)
            way(units)  # compiles (into the cache) and gives the losses
            losses[name] = _final_losses(units)
            shutil.rmtree(paths.root)
            start = time.monotonic()
            way(_units(study, paths, args.runs))
            seconds[name] = time.monotonic() - start
            shutil.rmtree(paths.root)
    (ref_name, ref), (ours_name, ours) = losses.items()
    for unit, loss in ref.items():
        assert abs(ours[unit] - loss) <= 1e-3 * abs(loss), (unit, loss, ours[unit])
    t_ref, t_ours = seconds[ref_name], seconds[ours_name]
    rows.append({
        "units": f"{args.runs} x (stage 1 + stage 2)",
        "fgjax_workers_s": round(t_ours, 1),
        "one_process_s": round(t_ref, 1),
        "speedup": round(t_ref / t_ours, 3),
    })  # fmt: skip
    report("study_workers", rows, {"workers": count, "final_losses": losses,
                                   "load_average": list(os.getloadavg())})  # fmt: skip


if __name__ == "__main__":
    main()
