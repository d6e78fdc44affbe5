"""The miniature study, end to end: components, the arms of every seed, evaluation, the report.

    python -m fgjax.study --workdir=study [--seeds=N] [--first_seed=K]

Every unit (a training run, an evaluation, a stage-0 step) lives in its own directory and is
skipped when finished, and training runs resume from their last checkpoint: rerunning the
command after an interruption continues where it stopped. The units run side by side, one
single-threaded worker process per CPU core (`workers`: fgjax/study/workers.py). Progress: one
line per unit with the study's elapsed time and ETA, plus each training run's own steps/s and
ETA. The seconds each unit took, and the study's wall clock, are kept in `timings.json`, so a
resumed study still reports its stage times.
"""

from __future__ import annotations

import datetime
import json
import logging
import os
import platform
import subprocess
import time
from pathlib import Path

import numpy as np

from fgjax.data.specimens import benchmark
from fgjax.evaluate import datasets
from fgjax.storage import write_atomic
from fgjax.study import components, report, stages
from fgjax.study import workers as study_workers
from fgjax.study.results import Results

TOKENIZER = "tokenizer"


def make_tokenizer(study, path: Path):
    """A byte-level BPE over every text the study's models meet (shared by all seeds)."""
    from fgjax.data import specimens_source
    from fgjax.data.tokenizer import add_image_token, load_tokenizer
    from fgjax.data.tokenizer_train import train_bpe

    if not (path / "tokenizer.json").is_file():
        texts = specimens_source.corpus(int(study.tokenizer.corpus_size))
        tok = train_bpe(texts, int(study.tokenizer.vocab_size), pad_token="<pad>")
        add_image_token(tok)
        tmp = path.with_name(path.name + ".tmp")
        tok.save(str(tmp))
        tmp.rename(path)  # complete or absent, never half-written
    return load_tokenizer(str(path))


def study_paths(config, workdir: Path) -> stages.Paths:
    """The study's paths under `workdir`, with the tokenizer made (or loaded) there: the
    vocabulary padded to a multiple of 64 and the image token's id."""
    tok = make_tokenizer(config, workdir / TOKENIZER)
    return stages.Paths(workdir, workdir / TOKENIZER, -(-tok.vocab_size // 64) * 64,
                        tok.token_to_id("<image>"))  # fmt: skip


class Progress:
    """Study-level progress: done/total weight, elapsed, ETA; each unit's seconds and the
    study's wall clock, summed over interrupted runs."""

    def __init__(self, units: list[stages.Unit], timings: Path):
        self.total = sum(u.weight for u in units)
        self.count = len(units)
        self.finished_units = sum(u.done() for u in units)
        self.done = sum(u.weight for u in units if u.done())
        self.start, self.done_at_start = time.monotonic(), self.done
        self.path = timings
        saved = json.loads(timings.read_text()) if timings.is_file() else {}
        self.seconds = saved.get("units", {})
        self.wall_before = saved.get("wall_seconds", 0.0)

    def started(self, unit: stages.Unit, running: int) -> None:
        elapsed = time.monotonic() - self.start
        worked = self.done - self.done_at_start
        eta = elapsed / worked * (self.total - self.done) if worked > 0 else float("nan")
        logging.info(
            "[study %d/%d done %3.0f%%, %d running] %s -- elapsed %s, ETA %s",
            self.finished_units, self.count, 100 * self.done / self.total, running, unit.name,
            _clock(elapsed), _clock(eta),
        )  # fmt: skip

    def finished(self, unit: stages.Unit, seconds: float) -> None:
        self.done += unit.weight
        self.finished_units += 1
        self.seconds[unit.name] = round(seconds, 2)
        logging.info("[study] finished %s in %s", unit.name, _clock(seconds))
        write_atomic(self.path, json.dumps({"units": self.seconds,
                                            "wall_seconds": round(self.wall(), 1)}, indent=1))

    def wall(self) -> float:
        return self.wall_before + time.monotonic() - self.start

    def by_stage(self, units: list[stages.Unit]) -> dict[str, float]:
        out: dict[str, float] = {}
        for u in units:
            out[u.stage] = round(out.get(u.stage, 0.0) + self.seconds.get(u.name, 0.0), 1)
        return out


def _clock(seconds: float) -> str:
    if seconds != seconds:  # nan: not known yet
        return "--:--"
    return f"{int(seconds // 60):02d}:{int(seconds % 60):02d}"


def execute(unit: stages.Unit) -> None:
    if unit.kind == "train":
        from fgjax.train import trainer

        trainer.train(unit.config, str(unit.workdir))
    elif unit.kind == "eval":
        from fgjax.evaluate import runner

        runner.evaluate(unit.config, str(unit.workdir))
        (unit.workdir / stages.DONE["eval"]).write_text("ok\n")
    elif unit.kind == "filter":
        components.select_pool(unit.config, unit.workdir)
    elif unit.kind == "ceiling":
        components.ceiling(unit.config, unit.workdir)
    else:
        raise ValueError(f"unknown unit kind {unit.kind!r}")


def _correct(path: Path, ids: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """(f32[N] 0/1, f32[N] chance) of a predictions.jsonl, in the order of `ids`."""
    rows = {}
    for line in path.read_text().splitlines():
        row = json.loads(line)
        rows[row["id"]] = row
    missing = [i for i in ids if i not in rows]
    if missing:
        raise ValueError(f"{path}: no answer for {len(missing)} items (e.g. {missing[0]})")
    correct = np.asarray([float(rows[i]["correct"]) for i in ids], np.float32)
    chance = np.asarray([1.0 / len(rows[i]["options"]) for i in ids], np.float32)
    return correct, chance


def collect(config, units: list[stages.Unit], root: Path, info: dict) -> Results:
    """The study's Results from its evaluation outputs and the probe ceilings: the arms
    evaluated among `units` (every arm in a study; some in a pilot), in the study's order."""
    evals = [u for u in units if u.kind == "eval"]
    seeds = sorted({u.seed for u in evals})
    evaluated = {u.arm.name for u in evals}
    arms = {a.name: a.levels() for a in stages.arms() if a.name in evaluated}
    n = int(config.eval.size)
    test_ids = datasets.from_spec(stages.test_set(config)).ids()
    general_ids = [f"{i}/general" for i in test_ids]
    where = {  # metric -> (result directory, ids)
        f"{q}_{r}": (f"{group}/{prefix}_{mode}", ids)
        for r, mode in stages.READOUTS.items()
        for q, group, prefix, ids in (
            ("fine", "specimens", "multiple_choice", test_ids),
            ("general", "general_qa/benchmark", "choice", general_ids),
            ("blank", "general_qa/blank", "choice", [f"{i}/general" for i in test_ids]),
        )
    }
    correct = {m: np.zeros((len(seeds), len(arms), n), np.float32) for m in where}
    chance = {}
    for u in evals:
        s, a = seeds.index(u.seed), list(arms).index(u.arm.name)
        for metric, (directory, ids) in where.items():
            correct[metric][s, a], chance[metric] = _correct(
                u.workdir / directory / "predictions.jsonl", ids
            )
    ceiling = json.loads((root / "components" / stages.DONE["ceiling"]).read_text())
    return Results(
        seeds=seeds, arms=arms,
        parts=np.asarray([benchmark.part_of(i) for i in range(n)]),
        correct=correct, chance=chance,
        probe5={k: np.asarray(v["probe5"], np.float32) for k, v in ceiling.items()},
        probe100={k: 100 * v["probe100"] for k, v in ceiling.items()},
        info=info,
    )  # fmt: skip


def provenance() -> dict:
    """Where and when: machine, commit (with a mark when the tree has changes), date."""
    here = Path(__file__).parent

    def git(*args):
        try:
            return subprocess.run(["git", *args], cwd=here, capture_output=True, text=True,
                                  timeout=10).stdout.strip()  # fmt: skip
        except (OSError, subprocess.SubprocessError):
            return ""

    commit = git("rev-parse", "--short", "HEAD") or "unknown"
    dirty = bool(git("status", "--porcelain", "--untracked-files=no"))
    return {
        "machine": f"{platform.machine()} {platform.system()}, {os.cpu_count()} CPU cores, "
        f"{platform.processor() or 'unknown processor'}",
        "commit": commit + ("+changes" if dirty else ""),
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
    }


def run(config, workdir: str) -> dict:
    """Runs (or resumes) the study on config.workers processes (0: one per usable core, up to
    8); writes results.{npz,json,csv,md,png}; returns the findings {claim: reproduced}."""
    from fgjax.console import setup_python_logging

    setup_python_logging()
    workdir = Path(workdir).absolute()
    workdir.mkdir(parents=True, exist_ok=True)
    report.settings(config.get("analysis"))  # a misspelt analysis field fails before training
    (workdir / "study_config.json").write_text(config.to_json_best_effort(indent=2))
    paths = study_paths(config, workdir)
    units = stages.plan(config, paths)
    progress = Progress(units, workdir / "timings.json")
    workers = config.get("workers") or study_workers.default_count()
    logging.info("study: %d units to run on %d worker processes", progress.count -
                 progress.finished_units, workers)  # fmt: skip
    study_workers.run_units(
        units, execute, workers, config.get("xla_flags"), workdir / "xla_cache",
        progress.started, progress.finished,
    )  # fmt: skip

    seconds = progress.by_stage(units)
    info = {**provenance(), "seconds": seconds, "workers": workers,
            "wall_seconds": round(progress.wall(), 1)}  # fmt: skip
    results = collect(config, units, workdir, info)
    results.validate()
    results.save(workdir)
    text, found = report.write_all(workdir, results, config.get("analysis"))
    print(text)
    print(f"results: {workdir / 'results.md'}, {workdir / 'results.csv'}, "
          f"{workdir / 'results.png'}")  # fmt: skip
    return {f.claim: f.reproduced for f in found}
