"""Room on disk for a large write, checked before it starts; small files written atomically.

A checkpoint that fills the disk half-way fails deep inside Orbax's writer threads, with
pages of tracebacks from every thread and a half-written temporary directory. Checking the
free space first turns the common case -- the run's own checkpoints filling the disk -- into
one message that says what to do.
"""

from __future__ import annotations

import errno
import shutil
from pathlib import Path
from typing import Any

import jax
import numpy as np

from fgjax import distributed


class DiskFullError(OSError):
    """Not enough free space for a checkpoint or export."""

    def __init__(self, message: str):
        super().__init__(errno.ENOSPC, message)

    def __str__(self) -> str:
        return self.strerror


def bytes_to_write(tree: Any) -> int:
    """Bytes this process writes for `tree`: the first replica of each shard it holds."""
    total = 0
    for leaf in jax.tree.leaves(tree):
        if isinstance(leaf, jax.Array):
            total += sum(s.data.nbytes for s in leaf.addressable_shards if s.replica_id == 0)
        else:
            total += np.asarray(leaf).nbytes
    return total


def free_bytes(directory: str | Path) -> int:
    """Free bytes on the file system of `directory` (or of its nearest existing parent)."""
    path = Path(directory).absolute()
    while not path.exists():
        path = path.parent
    return shutil.disk_usage(path).free


def check_room(directory: str | Path, tree: Any, what: str, advice: str = "") -> None:
    """Raises DiskFullError, in every process, if the file system of `directory` cannot hold
    this process's share of `tree`'s arrays in some process (a collective)."""
    needed, free = bytes_to_write(tree), free_bytes(directory)
    advice = advice or "Free space or choose another directory, then rerun."
    if not distributed.everywhere(needed <= free):
        if needed > free:
            raise DiskFullError(
                f"no space left on device for {what} in {directory}: it needs about "
                f"{needed / 2**20:.1f} MiB and {free / 2**20:.1f} MiB are free. {advice}"
            )
        raise DiskFullError(f"another process has no room for {what} in {directory}. {advice}")


def write_atomic(path: str | Path, data: str | bytes) -> None:
    """Writes a small file so that readers see the old file or the new one, never half of one
    (written next to it, then renamed over it)."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    if isinstance(data, str):
        tmp.write_text(data)
    else:
        tmp.write_bytes(data)
    tmp.replace(path)
