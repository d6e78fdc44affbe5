"""The miniature study end to end with tiny budgets: killed in the middle of a stage-1 run,
rerun, and finished -- finished runs skipped, the killed one resumed from its checkpoint."""

from __future__ import annotations

import csv
import json
import os
import re
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
        f"--config={ROOT / 'configs' / 'study' / 'mini.py'}:steps_scale=0.02,eval_size=12",
        "--seeds=1", "--first_seed=5", "--config.train_size=400",
        # one worker: pytest-xdist already keeps both cores busy, and two pinned study
        # workers competing with it made this test 30% slower (the side-by-side scheduling
        # is tested in test_workers.py)
        "--workers=1",
        "--config.eval.probe_train_size=200", "--config.eval.batch_size=12",
        "--config.filter.curated_size=200",
        # stage 1 long enough to be killed between its checkpoints
        "--config.align.steps=40", "--config.checkpoint_every=10",
    ]  # fmt: skip


def environment() -> dict:
    return {**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONPATH": str(ROOT)}


def run_until_checkpoint(workdir: Path, timeout: float = 600) -> None:
    """Starts the study and SIGKILLs it once the first stage-1 run has saved a checkpoint."""
    checkpoints = workdir / "seed5" / "stage1" / FIRST_ALIGN / "checkpoints"
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


@pytest.mark.slow
def test_shortened_study_is_killed_resumed_and_reports(tmp_path):
    workdir = tmp_path / "study"
    run_until_checkpoint(workdir)
    assert not (workdir / "seed5" / "stage1" / FIRST_ALIGN / "params_export").exists()
    # the units finished before the kill (the others ran side by side with the killed one)
    finished = set(json.loads((workdir / "timings.json").read_text())["units"])
    assert "stage 0: language model (base)" in finished

    rerun = subprocess.run(
        study_command(workdir), env=environment(), capture_output=True, text=True, timeout=900
    )
    log = rerun.stdout + rerun.stderr
    assert rerun.returncode == 0, log[-4000:]
    # finished units are skipped; the killed one resumes from its checkpoint
    started = re.findall(r"running\] (.+?) -- elapsed", log)
    assert started and not finished & set(started), finished & set(started)
    assert f"seed 5: align {FIRST_ALIGN}" in started
    assert "resumed from the checkpoint at step" in log
    assert "ETA" in log

    for name in ("results.csv", "results.md", "results.png", "results.npz", "results.json"):
        assert (workdir / name).stat().st_size > 0, name
    with (workdir / "results.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 10 and {r["seed"] for r in rows} == {"5"}
    assert {r["arm"] for r in rows} >= {"noalign", "classify", FIRST_ALIGN}
    for row in rows:
        for metric in ("fine_letter", "fine_cloze", "general_letter", "blank_letter"):
            assert 0.0 <= float(row[metric]) <= 100.0
    table = (workdir / "results.md").read_text()
    verdicts = ("**REPRODUCED**", "**NOT reproduced**", "**NOT JUDGED**")
    assert sum(table.count(v) for v in verdicts) == 4, table
    assert "ridge probe on the five-way questions" in table and "Declared analysis" in table
    # the table and findings are printed at the end of the command
    assert "Declared analysis" in rerun.stdout
    info = json.loads((workdir / "results.json").read_text())["info"]
    assert set(info["seconds"]) == {"stage 0", "stage 1", "stage 2", "evaluation"}
    assert info["workers"] == 1
    # the interrupted run's units kept their timings
    assert info["seconds"]["stage 0"] > 0

    # the README section is generated from the run, never typed
    readme = tmp_path / "README.md"
    readme.write_text("# x\n<!-- study-results:begin -->\nold\n<!-- study-results:end -->\ntail\n")
    generated = subprocess.run(
        [sys.executable, "-m", "fgjax.study.readme", f"--workdir={workdir}", f"--readme={readme}"],
        env=environment(), capture_output=True, text=True, timeout=300, cwd=ROOT,
    )  # fmt: skip
    assert generated.returncode == 0, (generated.stdout + generated.stderr)[-4000:]
    text = readme.read_text()
    assert "old" not in text and text.endswith("tail\n") and info["commit"] in text
