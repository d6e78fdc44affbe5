"""Saving on a preemption notice: a cluster sends SIGTERM (TPU VMs: also the maintenance event)
some time before it takes the machine. Every process stops at the same step, the checkpoint of
that step is written whole, and the run ends with `Preempted`; rerunning the command resumes
from it, as from any checkpoint.

With several processes, JAX's preemption sync service (`jax.distributed`) watches the notice
and picks the step all processes save at (`multihost_utils.reached_preemption_sync_point`).
With one process, a SIGTERM handler does.
"""

from __future__ import annotations

import logging
import signal
import threading

import jax
from jax.experimental import multihost_utils

EXIT_STATUS = 128 + signal.SIGTERM  # what a process ended by SIGTERM reports


class Preempted(SystemExit):
    """The run saved its checkpoint at a preemption notice and stopped; rerun to resume."""

    def __init__(self, step: int):
        super().__init__(EXIT_STATUS)
        self.step = step

    def __str__(self) -> str:
        return (
            f"preempted: the checkpoint of step {self.step} is saved; rerun the same command "
            "to resume from it"
        )


class Watch:
    """`reached(step)`: whether to save at `step` and stop. A context manager: the SIGTERM
    handler (one process) is installed on entry and the previous one restored on exit."""

    def __init__(self):
        self.multi_process = jax.process_count() > 1
        self._noticed = threading.Event()
        self._previous = None

    def __enter__(self) -> Watch:
        if not self.multi_process and threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGTERM, self._notice)
        return self

    def __exit__(self, *exc_info) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)
            self._previous = None

    def _notice(self, signum, frame) -> None:
        logging.warning("preemption notice (signal %d): saving at the next step", signum)
        self._noticed.set()

    def reached(self, step: int) -> bool:
        """True at the step every process saves at after a notice (a collective with several
        processes: every process calls it at every step)."""
        if self.multi_process:
            return multihost_utils.reached_preemption_sync_point(step)
        return self._noticed.is_set()
