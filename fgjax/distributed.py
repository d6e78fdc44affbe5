"""Multi-host start-up: one call at the top of every entry point.

- Local multi-process runs (fgjax.launch.local, tests): the launcher sets FGJAX_COORDINATOR,
  FGJAX_NUM_PROCESSES and FGJAX_PROCESS_ID, and we pass them to `jax.distributed.initialize`.
- TPU VMs and SLURM: `jax.distributed.initialize()` detects everything itself.
- Otherwise (one process) nothing is done.
"""

from __future__ import annotations

import logging
import os

import jax
import numpy as np
from jax.experimental import multihost_utils

ENV_COORDINATOR = "FGJAX_COORDINATOR"
ENV_NUM_PROCESSES = "FGJAX_NUM_PROCESSES"
ENV_PROCESS_ID = "FGJAX_PROCESS_ID"
ENV_LOCAL_DEVICES = "FGJAX_LOCAL_DEVICE_COUNT"

_initialized = False


def initialize() -> None:
    """Starts jax.distributed when this process is one of several; idempotent."""
    global _initialized
    if _initialized:
        return
    if ENV_LOCAL_DEVICES in os.environ:  # fake CPU devices per process (tests, local runs)
        jax.config.update("jax_num_cpu_devices", int(os.environ[ENV_LOCAL_DEVICES]))
    if int(os.environ.get(ENV_NUM_PROCESSES, "1")) > 1:
        jax.distributed.initialize(
            coordinator_address=os.environ[ENV_COORDINATOR],
            num_processes=int(os.environ[ENV_NUM_PROCESSES]),
            process_id=int(os.environ[ENV_PROCESS_ID]),
        )
    elif _on_tpu_vm() or "SLURM_NTASKS" in os.environ and int(os.environ["SLURM_NTASKS"]) > 1:
        jax.distributed.initialize()
    _initialized = True
    if jax.process_count() > 1:
        logging.info(
            "process %d of %d, %d local / %d global devices",
            jax.process_index(), jax.process_count(), jax.local_device_count(), jax.device_count(),
        )  # fmt: skip


def _on_tpu_vm() -> bool:
    return "TPU_WORKER_HOSTNAMES" in os.environ or "CLOUD_TPU_TASK_ID" in os.environ


def gather(value: int) -> list[int]:
    """A u32 `value` of every process, in process order (a collective: every process calls it)."""
    gathered = multihost_utils.process_allgather(np.asarray([value], np.uint32))
    return [int(v) for v in np.asarray(gathered).reshape(-1)]


def everywhere(ok: bool) -> bool:
    """Whether `ok` holds in every process (a collective), so that all take the same branch."""
    return min(gather(int(ok))) == 1
