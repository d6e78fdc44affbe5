"""The one place that talks to clu: metric writers (TensorBoard + console) and periodic
progress/profiling actions. Swap clu out here if needed.

A workdir in a bucket (gs://): TensorBoard's writer and the profiler write through
TensorFlow's and the profiler's own file systems, and metrics.jsonl is appended to, which an
object store cannot do; so they are written to a local staging directory and mirrored to the
workdir (every file whose size changed) at each logged step and at the end.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import jax
from clu import metric_writers, periodic_actions

from fgjax import storage


class Logger:
    """Scalars to TensorBoard and metrics.jsonl (process 0) and the console; clu's
    ReportProgress gives steps/s and an ETA; an optional profiler window captures a trace."""

    def __init__(
        self,
        workdir: str,
        total_steps: int,
        *,
        start_step: int = 0,
        profile_steps: tuple[int, int] | None = None,
    ):
        self.mirror = None
        if storage.is_remote(workdir):
            self.mirror = storage.Mirror(workdir)
            local = str(self.mirror.local)
        else:
            local = workdir
        self.writer = metric_writers.create_default_writer(
            local, just_logging=jax.process_index() > 0, asynchronous=True
        )
        self.progress = periodic_actions.ReportProgress(
            num_train_steps=total_steps, writer=self.writer
        )
        self.profile = None
        if profile_steps:
            first, count = profile_steps
            self.profile = periodic_actions.Profile(
                logdir=local, first_profile=first, num_profile_steps=count
            )
        self.total_steps = total_steps
        self.jsonl = Path(local) / "metrics.jsonl" if jax.process_index() == 0 else None
        if self.jsonl is not None and self.jsonl.exists():
            _drop_steps_after(self.jsonl, start_step)

    def step(self, step: int) -> None:
        """Call once per finished step: progress report and profiler window."""
        self.progress(step)
        if self.profile is not None:
            self.profile(step)

    def scalars(self, step: int, values: dict) -> None:
        values = {k: float(v) for k, v in values.items()}
        self.writer.write_scalars(step, values)
        if self.jsonl is not None:
            with self.jsonl.open("a") as f:
                f.write(json.dumps({"step": step, **values}) + "\n")
        if self.mirror is not None:
            self.writer.flush()
            self.mirror.sync()

    def close(self) -> None:
        self.writer.flush()
        self.writer.close()
        if self.mirror is not None:
            self.mirror.sync()
            self.mirror.remove()

    def __enter__(self) -> Logger:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


def _drop_steps_after(path: Path, step: int) -> None:
    """Removes the records of steps after `step` (a resumed run logs them again), replacing
    the file atomically; a torn last line of a killed run goes too."""
    kept = []
    for line in path.read_text().splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if record.get("step", 0) <= step:
            kept.append(line)
    partial = path.with_name(path.name + ".tmp")
    partial.write_text("".join(f"{line}\n" for line in kept))
    os.replace(partial, path)
