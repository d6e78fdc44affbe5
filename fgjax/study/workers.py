"""The study's units run side by side: one worker process per CPU core, each on one thread.

Why: the study's models are tiny (0.1-0.6M parameters), and XLA:CPU spreads their small
products over two cores poorly. On the 2-core machine, one stage-1 run pinned to one core makes
0.8x the steps/s of the same run on both, so two runs side by side, one per core, train 1.4-1.7x
as many steps per second (`benchmarks/study_workers.py`). And a worker on one core runs XLA on
one thread, so each unit's float32 sums are split, and rounded, the same way whichever worker
runs it, however many workers there are and however many cores the machine has.

Units start in plan order as soon as the units they read (`Unit.needs`) are done. A unit that
fails stops the study once the units already running have finished (their work is kept); the
error names it. The workers die with the study's process (Linux), so a killed study leaves no
unit running behind it, and a rerun resumes every unit from its own checkpoint.
"""

from __future__ import annotations

import concurrent.futures as futures
import ctypes
import multiprocessing
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path

_PR_SET_PDEATHSIG = 1  # prctl's option: the signal a process gets when its parent ends


def usable_cores() -> list[int]:
    """The CPU cores this process may run on, at most as many as a cgroup CPU quota allows."""
    cores = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    cores = cores or list(range(os.cpu_count() or 1))
    try:  # a container limited by a quota ("200000 100000": 2 cores), not by a CPU set
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
        if quota != "max":
            cores = cores[: max(1, int(int(quota) / int(period)))]
    except (OSError, ValueError):
        pass
    return cores


def default_count(limit: int = 8) -> int:
    """One worker per usable core, at most `limit` (each holds JAX and a model in memory)."""
    return max(1, min(len(usable_cores()), limit))


def _die_with_parent() -> None:
    """Asks Linux to SIGKILL this process when the study's process ends (killed included)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):  # not Linux: an orphan worker ends with its unit
        return
    if os.getppid() == 1:  # the parent ended before prctl took effect
        os._exit(1)


def _start_worker(cores, xla_flags: str | None, cache_dir: str) -> None:
    """A worker's set-up, before JAX starts: pinned to its own core, the study's XLA flags,
    the shared compilation cache, fgjax's logging."""
    _die_with_parent()
    core = cores.get()
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {core})
    if xla_flags and xla_flags not in os.environ.get("XLA_FLAGS", ""):
        os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {xla_flags}".strip()
    import jax

    from fgjax.console import setup_python_logging

    # the arms share architectures: identical programs compile once, also across reruns
    jax.config.update("jax_compilation_cache_dir", cache_dir)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.2)
    setup_python_logging()


def _timed(execute: Callable, unit) -> float:
    start = time.monotonic()
    execute(unit)
    return time.monotonic() - start


def run_units(
    units: list, execute: Callable, workers: int, xla_flags: str | None, cache_dir: Path,
    started: Callable, finished: Callable,
) -> None:  # fmt: skip
    """Runs every unit not done yet on `workers` processes. execute(unit) runs in a worker (a
    module-level function, as it is pickled); started(unit, running) and finished(unit,
    seconds) report in this process."""
    names = {u.name for u in units}
    for u in units:
        unknown = set(u.needs) - names
        if unknown:
            raise ValueError(f"unit {u.name!r} needs {sorted(unknown)}, which are not in the plan")
    done = {u.name for u in units if u.done()}
    pending = [u for u in units if u.name not in done]
    if not pending:
        return
    workers = max(1, min(workers, len(pending)))
    context = multiprocessing.get_context("spawn")
    cores = context.Queue()
    available = usable_cores()
    for i in range(workers):
        cores.put(available[i % len(available)])
    running: dict[futures.Future, object] = {}
    with futures.ProcessPoolExecutor(
        workers, mp_context=context, initializer=_start_worker,
        initargs=(cores, xla_flags, str(cache_dir)),
    ) as pool:  # fmt: skip
        failure = None
        while (pending and failure is None) or running:
            for u in [u for u in pending if set(u.needs) <= done] if failure is None else []:
                if len(running) == workers:
                    break
                pending.remove(u)
                running[pool.submit(_timed, execute, u)] = u
                started(u, len(running))
            if not running:  # nothing runs and nothing can start: needs that never finish
                raise RuntimeError(f"units wait on units that did not run: {pending[0].name}")
            for future in futures.wait(running, return_when=futures.FIRST_COMPLETED)[0]:
                u = running.pop(future)
                try:
                    seconds = future.result()
                except Exception as error:  # the others finish first: their work is kept
                    failure = failure or (u, error)
                    continue
                done.add(u.name)
                finished(u, seconds)
    if failure is not None:
        u, error = failure
        raise RuntimeError(
            f"study unit {u.name!r} failed (its directory: {u.workdir}); fix the cause and "
            "rerun the same command to resume"
        ) from error
