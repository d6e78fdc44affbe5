"""The study's worker processes: units side by side, each after the units it needs, on a core of
its own; a failure named and stopping the rest; no worker outliving a killed study."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fgjax.study import workers

ROOT = Path(__file__).parents[2]


@dataclasses.dataclass(frozen=True)
class Job:
    """A stand-in for stages.Unit: what run_units reads of a unit, and what to do."""

    name: str
    workdir: Path
    action: str = "record"  # "record", "meet <name>", "fail" or "hang"
    needs: tuple[str, ...] = ()

    def done(self) -> bool:
        return (self.workdir / "done").is_file()


def execute(job: Job) -> None:
    """Runs in a worker: writes what it saw (pid, cores, the jobs finished before it began)."""
    job.workdir.mkdir(parents=True, exist_ok=True)
    seen = sorted(p.parent.name for p in job.workdir.parent.glob("*/done"))
    (job.workdir / "started").write_text(json.dumps({
        "pid": os.getpid(), "cores": sorted(os.sched_getaffinity(0)), "finished_before": seen,
    }))  # fmt: skip
    if job.action.startswith("meet "):  # only two jobs running at once both get past this
        partner = job.workdir.parent / job.action.split()[1] / "started"
        deadline = time.monotonic() + 120
        while not partner.is_file():
            if time.monotonic() > deadline:
                raise TimeoutError(f"{job.name} never ran beside {partner.parent.name}")
            time.sleep(0.05)
    elif job.action == "fail":
        raise ValueError("a planted failure")
    elif job.action == "hang":
        time.sleep(600)
    (job.workdir / "done").write_text("ok\n")


def started(job: Job) -> dict:
    return json.loads((job.workdir / "started").read_text())


def run(jobs, count=2, tmp_path=None):
    log = []
    workers.run_units(
        jobs, execute, count, None, tmp_path / "xla_cache",
        lambda u, running: log.append(("start", u.name, running)),
        lambda u, seconds: log.append(("end", u.name, seconds)),
    )  # fmt: skip
    return log


def test_units_run_side_by_side_each_after_what_it_needs_each_on_one_core(tmp_path):
    a, b = Job("a", tmp_path / "a", "meet b"), Job("b", tmp_path / "b", "meet a")
    c = Job("c", tmp_path / "c", needs=("a", "b"))
    done_already = Job("old", tmp_path / "old")
    done_already.workdir.mkdir()
    (done_already.workdir / "done").write_text("ok\n")
    log = run([c, a, b, done_already], tmp_path=tmp_path)

    assert all(j.done() for j in (a, b, c))
    assert [e[1] for e in log if e[0] == "start"] == ["a", "b", "c"]  # plan order, once ready
    assert not (done_already.workdir / "started").exists()  # a finished unit is skipped
    assert set(started(c)["finished_before"]) >= {"a", "b"}
    assert all(e[2] > 0 for e in log if e[0] == "end")
    # each worker on a core of its own: one thread, the same sums whoever runs the unit
    cores = [started(j)["cores"] for j in (a, b)]
    assert all(len(x) == 1 for x in cores)
    if len(workers.usable_cores()) >= 2:
        assert cores[0] != cores[1]
    assert started(a)["pid"] != started(b)["pid"]


def test_a_failure_names_the_unit_lets_the_running_one_finish_and_starts_nothing_after(tmp_path):
    bad = Job("bad", tmp_path / "bad", "fail")
    other = Job("other", tmp_path / "other", "meet bad")
    after = Job("after", tmp_path / "after", needs=("other",))
    with pytest.raises(RuntimeError, match="study unit 'bad' failed .*rerun the same command") as e:
        run([bad, other, after], tmp_path=tmp_path)
    assert "a planted failure" in str(e.value.__cause__)
    assert other.done()  # the unit running beside it finished: its work is kept
    assert not (after.workdir / "started").exists()


def test_a_unit_needing_one_outside_the_plan_is_refused_before_anything_runs(tmp_path):
    job = Job("x", tmp_path / "x", needs=("missing",))
    with pytest.raises(ValueError, match=r"unit 'x' needs \['missing'\], which are not in the plan"):
        run([job], tmp_path=tmp_path)
    assert not job.workdir.exists()


PARENT = """
import sys
from pathlib import Path
sys.path.insert(0, {tests!r})
import test_workers as t
from fgjax.study import workers
tmp = Path({tmp!r})
workers.run_units([t.Job("hang", tmp / "hang", "hang")], t.execute, 1, None, tmp / "cache",
                  lambda *a: None, lambda *a: None)
"""


def test_no_worker_outlives_a_killed_study(tmp_path):
    code = PARENT.format(tests=str(Path(__file__).parent), tmp=str(tmp_path))
    parent = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT,
                              env={**os.environ, "PYTHONPATH": str(ROOT)})  # fmt: skip
    marker = tmp_path / "hang" / "started"
    deadline = time.monotonic() + 120
    while not marker.is_file():
        assert parent.poll() is None and time.monotonic() < deadline, "the worker never started"
        time.sleep(0.05)
    worker = json.loads(marker.read_text())["pid"]
    parent.send_signal(signal.SIGKILL)
    parent.wait()
    deadline = time.monotonic() + 30
    while Path(f"/proc/{worker}").exists() and _alive(worker):
        assert time.monotonic() < deadline, f"worker {worker} outlived its killed study"
        time.sleep(0.05)


def _alive(pid: int) -> bool:
    status = Path(f"/proc/{pid}/status")
    try:
        return "State:\tZ" not in status.read_text()  # a zombie has ended
    except OSError:
        return False


def test_usable_cores_and_the_default_count():
    cores = workers.usable_cores()
    assert cores and set(cores) <= set(os.sched_getaffinity(0))
    assert workers.default_count() == min(len(cores), 8)
    assert workers.default_count(limit=1) == 1
