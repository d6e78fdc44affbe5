"""Random-kill soak of training: SIGKILL a tiny VLM run (24 steps, asynchronous checkpoints
every 4) at random moments and at moments aimed at its checkpoint saves and final export,
rerun the same command after each kill, and check that every run ends bit-identical to an
uninterrupted one: the exported parameters and every logged loss, no step logged twice.

    .venv/bin/python -m benchmarks.kill_soak [--kills 40] [--aimed 0.3] [--seed 0] [--workdir DIR]

A kill is random (a uniform moment of the training phase, after the run has logged a step)
or, with probability --aimed, aimed: the moment a checkpoint's temporary directory or an
uncommitted export appears. After each kill the soak records whether a save or the export
was in flight, and checks that a directory that claims to be an export loads. A run that
finishes before its kill ends a campaign; its result is compared with the reference and the
next campaign starts in a fresh directory. Prints a table and writes
benchmarks/results/kill_soak.json. The test suite runs 3 kills (tests/train/test_soak.py).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import jax
import ml_collections
import numpy as np

from benchmarks.common import report
from fgjax import native, rundir, trees
from fgjax.data.tokenizer_train import tiny_tokenizer

STEPS = 24
ROOT = Path(__file__).parents[1]


def write_config(directory: Path) -> str:
    """A tiny align_llm run on the built-in specimens captions; returns the --config value."""
    tokenizer = tiny_tokenizer("bpe", vocab_size=300)
    tokenizer.save(str(directory / "tokenizer"))
    c = ml_collections.ConfigDict()
    c.task, c.seed, c.stage = "vlm", 0, "align_llm"
    c.model = dict(encoder="tiny_clip", decoder="tiny_llama", projector="mlp2x_gelu",
                   decoder_overrides={"vocab_size": tokenizer.vocab_size + 1})  # fmt: skip
    c.optim = dict(lr=1e-2, warmup_steps=1, schedule="cosine", weight_decay=0.01, clip_norm=1.0)
    c.data = dict(
        sources=[{"name": "specimens", "kind": "captions", "size": 512, "resolution": 32}],
        tokenizer=str(directory / "tokenizer"),
        template="plain",
        max_length=64,
        preprocess=None,
    )
    c.batch_size, c.num_steps, c.log_every = 8, STEPS, 1
    c.checkpoint = dict(every_steps=4, keep=2, asynchronous=True)
    path = directory / "config.json"
    path.write_text(c.to_json())
    return f"{ROOT / 'configs' / 'json_file.py'}:{path}"


def child_env() -> dict:
    # start-up and compiling dominate these runs; the same settings as the test suite's
    env = {**os.environ, "PYTHONPATH": str(ROOT), "JAX_PLATFORMS": "cpu"}
    env.setdefault("XLA_FLAGS", "--xla_backend_optimization_level=0")
    env.setdefault(
        "JAX_COMPILATION_CACHE_DIR", os.path.join(tempfile.gettempdir(), "fgjax-test-xla-cache")
    )
    env.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.5")
    return env


def start(config: str, workdir: Path) -> subprocess.Popen:
    command = [sys.executable, "-m", "fgjax.main", f"--config={config}", f"--workdir={workdir}"]
    return subprocess.Popen(
        command, env=child_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )


def logged_steps(workdir: Path) -> list[int]:
    path = workdir / "metrics.jsonl"
    if not path.exists():
        return []
    steps = []
    for line in path.read_text().splitlines():
        try:
            steps.append(json.loads(line)["step"])
        except (json.JSONDecodeError, KeyError):
            pass  # a line being written
    return steps


def in_flight(workdir: Path) -> str | None:
    """"save" or "export" if one was being written, else None."""
    checkpoints = workdir / "checkpoints"
    if checkpoints.exists() and any(".orbax-checkpoint-tmp" in p.name for p in checkpoints.iterdir()):
        return "save"
    export = workdir / rundir.PARAMS_EXPORT
    if export.exists() and not native.is_native(export):
        return "export"
    return None


def final_state(workdir: Path) -> tuple[dict, dict]:
    """(exported parameters, {step: loss}); a step logged twice raises."""
    params = trees.flatten(jax.device_get(native.load_params(workdir / rundir.PARAMS_EXPORT)))
    losses = {}
    for line in (workdir / "metrics.jsonl").read_text().splitlines():
        record = json.loads(line)
        if record["step"] in losses:
            raise AssertionError(f"step {record['step']} logged twice in {workdir}")
        losses[record["step"]] = record["loss"]
    return params, losses


def same(result: tuple[dict, dict], reference: tuple[dict, dict]) -> bool:
    (params, losses), (ref_params, ref_losses) = result, reference
    return (
        params.keys() == ref_params.keys()
        and all(np.array_equal(params[k], ref_params[k]) for k in params)
        and losses == ref_losses
    )


def kill_once(config: str, workdir: Path, rng: random.Random, aimed: bool, seconds_per_step):
    """Starts the run and kills it; returns what was in flight ("finished" if it ended)."""
    proc = start(config, workdir)
    before = max(logged_steps(workdir), default=0)
    deadline = time.monotonic() + 600
    if aimed:  # the moment a save or the export is in flight
        while proc.poll() is None and time.monotonic() < deadline:
            if max(logged_steps(workdir), default=0) > before and in_flight(workdir):
                break
            time.sleep(0.001)
    else:  # a uniform moment of what is left of the training phase
        while proc.poll() is None and max(logged_steps(workdir), default=0) <= before:
            time.sleep(0.01)
        remaining = STEPS - max(logged_steps(workdir), default=0)
        end = time.monotonic() + rng.uniform(0, max(remaining, 1) * seconds_per_step)
        while proc.poll() is None and time.monotonic() < end:
            time.sleep(0.001)
    if proc.poll() is not None:
        if proc.returncode != 0:
            raise RuntimeError(f"the run in {workdir} failed with exit code {proc.returncode}")
        return "finished"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    what = in_flight(workdir) or "training"
    export = workdir / rundir.PARAMS_EXPORT
    if native.is_native(export):  # a committed export must load
        native.load_params(export)
    return what


def soak(kills: int, aimed: float, seed: int, directory: Path) -> dict:
    rng = random.Random(seed)
    config = write_config(directory)
    proc = start(config, directory / "reference")  # timed from its first logged step
    while proc.poll() is None and not logged_steps(directory / "reference"):
        time.sleep(0.01)
    first_step = time.monotonic()
    if proc.wait() != 0:
        raise RuntimeError(f"the reference run failed with exit code {proc.returncode}")
    seconds_per_step = (time.monotonic() - first_step) / STEPS
    reference = final_state(directory / "reference")
    counts = {"kills": 0, "during a save": 0, "during the export": 0, "during training": 0}
    campaigns, mismatches, reruns = 0, 0, 0
    while counts["kills"] < kills:
        campaigns += 1
        workdir = directory / f"campaign{campaigns}"
        while counts["kills"] < kills:
            what = kill_once(config, workdir, rng, rng.random() < aimed, seconds_per_step)
            if what == "finished":
                break
            counts["kills"] += 1
            counts[{"save": "during a save", "export": "during the export"}.get(
                what, "during training")] += 1  # fmt: skip
        while not native.is_native(workdir / rundir.PARAMS_EXPORT):  # finish the campaign
            reruns += 1
            subprocess.run(
                [sys.executable, "-m", "fgjax.main", f"--config={config}",
                 f"--workdir={workdir}"],
                env=child_env(), check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )  # fmt: skip
        mismatches += not same(final_state(workdir), reference)
    return {**counts, "campaigns": campaigns, "final reruns": reruns, "mismatches": mismatches}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=40)
    parser.add_argument("--aimed", type=float, default=0.3, help="fraction aimed at saves")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workdir", help="kept afterwards if given; else a temporary one")
    args = parser.parse_args()
    directory = Path(args.workdir or tempfile.mkdtemp(prefix="fgjax-soak-"))
    directory.mkdir(parents=True, exist_ok=True)
    start_time = time.monotonic()
    row = soak(args.kills, args.aimed, args.seed, directory)
    row["minutes"] = (time.monotonic() - start_time) / 60
    report("kill_soak", [row], {"seed": args.seed, "aimed": args.aimed, "steps": STEPS})
    if not args.workdir:
        shutil.rmtree(directory, ignore_errors=True)
    if row["mismatches"]:
        sys.exit(f"{row['mismatches']} of {row['campaigns']} campaigns did not match the reference")


if __name__ == "__main__":
    main()
