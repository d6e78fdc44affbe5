"""The one place that talks to clu: metric writers (TensorBoard + console) and periodic
progress/profiling actions. Swap clu out here if needed."""

from __future__ import annotations

import json
import os
from pathlib import Path

import jax
from clu import metric_writers, periodic_actions


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
        self.writer = metric_writers.create_default_writer(
            workdir, just_logging=jax.process_index() > 0, asynchronous=True
        )
        self.progress = periodic_actions.ReportProgress(
            num_train_steps=total_steps, writer=self.writer
        )
        self.profile = None
        if profile_steps:
            first, count = profile_steps
            self.profile = periodic_actions.Profile(
                logdir=workdir, first_profile=first, num_profile_steps=count
            )
        self.total_steps = total_steps
        self.jsonl = Path(workdir) / "metrics.jsonl" if jax.process_index() == 0 else None
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

    def close(self) -> None:
        self.writer.flush()
        self.writer.close()

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
