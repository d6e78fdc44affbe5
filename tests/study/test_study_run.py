"""The miniature study end to end with tiny budgets: killed in the middle of a stage-1 run,
rerun, and finished -- finished runs skipped, the killed one resumed from its checkpoint."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[2]
FIRST_ALIGN = "enc-base_llm-base_pretrain-frozen"


def study_command(workdir: Path) -> list[str]:
    return [
        sys.executable, "-m", "fgjax.study", f"--workdir={workdir}",
        f"--config={ROOT / 'configs' / 'study' / 'mini.py'}:steps_scale=0.02,eval_size=10",
        "--config.train_size=400", "--config.eval.probe_train_size=200",
        "--config.eval.batch_size=10",
        # stage 1 long enough to be killed between its checkpoints
        "--config.align.steps=40", "--config.checkpoint_every=2",
    ]  # fmt: skip


def environment() -> dict:
    return {**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONPATH": str(ROOT)}


def run_until_checkpoint(workdir: Path, timeout: float = 600) -> None:
    """Starts the study and SIGKILLs it once the first stage-1 run has saved a checkpoint."""
    checkpoints = workdir / "seed0" / "stage1" / FIRST_ALIGN / "checkpoints"
    log = (workdir.parent / "first.log").open("w")
    process = subprocess.Popen(
        study_command(workdir), env=environment(), stdout=log, stderr=subprocess.STDOUT
    )
    deadline = time.monotonic() + timeout
    try:
        while not (checkpoints.is_dir() and any(p.name.isdigit() for p in checkpoints.iterdir())):
            if process.poll() is not None:
                pytest.fail(f"the study ended (rc {process.returncode}) before it could be killed")
            if time.monotonic() > deadline:
                pytest.fail("no stage-1 checkpoint appeared in time")
            time.sleep(0.05)
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()


def test_shortened_study_is_killed_resumed_and_reports(tmp_path):
    workdir = tmp_path / "study"
    run_until_checkpoint(workdir)
    assert not (workdir / "seed0" / "stage1" / FIRST_ALIGN / "params_export").exists()

    rerun = subprocess.run(
        study_command(workdir), env=environment(), capture_output=True, text=True, timeout=900
    )
    log = rerun.stdout + rerun.stderr
    assert rerun.returncode == 0, log[-4000:]
    # finished units are skipped; the killed one resumes from its checkpoint
    assert "stage 0:" not in log
    assert f"stage 1: align {FIRST_ALIGN}" in log
    assert "resumed from the checkpoint at step" in log
    assert "ETA" in log

    for name in ("results.csv", "results.md", "results.png"):
        assert (workdir / name).stat().st_size > 0, name
    with (workdir / "results.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 8
    assert {(r["encoder"], r["llm"], r["pretrain_llm"]) for r in rows} == {
        (e, m, p)
        for e in ("base", "upgraded")
        for m in ("base", "upgraded")
        for p in ("frozen", "trained")
    }
    for row in rows:
        for metric in ("fine_mc5", "fine_mc5_letters", "fine_rank_top1", "general"):
            assert 0.0 <= float(row[metric]) <= 100.0
    table = (workdir / "results.md").read_text()
    assert table.count("REPRODUCED") + table.count("NOT reproduced") == 3
    assert "linear probe" in table
    # the table and findings are printed at the end of the command
    assert "The paper's findings" in rerun.stdout

    # the ceiling benchmark re-mines the study's questions (it checks they are the same)
    ceiling = subprocess.run(
        [sys.executable, "-m", "benchmarks.study_ceiling", f"--workdir={workdir}", "--train=200"],
        env={**environment(), "FGJAX_BENCHMARK_RESULTS": str(tmp_path / "results")},
        capture_output=True, text=True, timeout=300, cwd=ROOT,
    )  # fmt: skip
    assert ceiling.returncode == 0, (ceiling.stdout + ceiling.stderr)[-4000:]
    result = json.loads((tmp_path / "results" / "study_ceiling.json").read_text())
    by_miner = {r["mined_by"]: r for r in result["rows"]}
    assert set(by_miner) == {"base", "upgraded"}
    assert by_miner["base"]["best_vlm_5way"] == max(float(r["fine_mc5"]) for r in rows) / 100
    for row in by_miner.values():
        assert 0.0 <= row["same_family"] <= 1.0 and 0.0 <= row["ridge_upgraded_5way"] <= 1.0
