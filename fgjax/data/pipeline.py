"""Input pipelines on grain: deterministic, per-host sharded, resumable, with exact evaluation.

Training stream. The examples of every epoch are shuffled with a seed that changes per epoch,
the epochs are concatenated into one global stream, and process p of P reads elements
p, p + P, p + 2P, ... of it. Global batch k is therefore always the stream's elements
[k * global_batch, (k + 1) * global_batch), whatever the number of hosts: a 2-process run sees
the same examples per step as a 1-process run, and no example is dropped or repeated
within an epoch. The iterator state (grain's `get_state()`) goes into training checkpoints, so
a resumed run continues with exactly the batches it would have seen.

Worker processes (`worker_processes`, data/worker_processes.py). The transform (decoding,
preprocessing, tokenizing) can run in grain worker processes instead of threads of the
training process; the stream, the skip counts and the iterator state are those of the
in-process pipeline, so a run may resume with another number of workers.

Packed training stream (`packing`, data/packing.py). Each process packs its own elements
(p, p + P, ...) into rows, in order, so still no example is dropped or repeated within an
epoch and a resumed run sees the same rows; but a row holds a variable number of examples,
so step k's examples depend on the number of processes (a P-process run is not the
1-process run's batches split P ways).

Evaluation. Process p reads examples p, p + P, ...; every process yields the same number of
batches, padded with copies of a real example whose `valid` flag is False, so every example is
evaluated exactly once across hosts and no host waits on another.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import grain
import jax
import numpy as np

from fgjax.data.packing import Packing
from fgjax.data.worker_processes import WorkerProcessesDataset

Example = dict[str, Any]
Transform = Callable[[Any], Example | None]


@dataclasses.dataclass(frozen=True)
class HostShard:
    """Which slice of the data this process reads."""

    index: int = 0
    count: int = 1

    @classmethod
    def current(cls) -> HostShard:
        return cls(jax.process_index(), jax.process_count())


def local_batch_size(global_batch_size: int, shard: HostShard) -> int:
    if global_batch_size % shard.count:
        raise ValueError(
            f"global batch size {global_batch_size} is not divisible by the {shard.count} processes; "
            f"use a multiple of {shard.count}"
        )
    return global_batch_size // shard.count


def training_dataset(
    sources: Sequence[Any] | Any,
    transform: Transform,
    *,
    global_batch_size: int,
    seed: int,
    weights: Sequence[float] | None = None,
    num_epochs: int | None = None,
    shard: HostShard | None = None,
    num_threads: int | None = None,
    packing: Packing | None = None,
    worker_processes: int | None = None,
) -> grain.IterDataset:
    """Batched training examples for this process.

    sources: one random-access source (len + getitem) or several, mixed with `weights`.
    transform: raw record -> dict of fixed-shape numpy arrays, or None to skip the record
      (the source or transform counts and logs skips; skipped records are never padded in).
    num_epochs: None repeats forever (the trainer decides the number of steps).
    num_threads: transform threads prefetching ahead of the step (default: a quarter of the
      CPU cores, 1 to 16: grain's default of 16 threads takes most of a 2-core machine from the
      training step -- 4x slower batches in fgjax's benchmark -- while a TPU host has cores
      to spare).
    worker_processes: run the transform in that many grain processes, each with num_threads
      threads (default 1); None or 0: in num_threads threads of this process.
    packing: pack the (unpadded) examples into rows, `packing.bins` at once (None: the local
      batch); see the module docstring.
    Yields dicts of arrays with a leading local batch axis global_batch_size // P.
    """
    shard = shard or HostShard.current()
    batch = local_batch_size(global_batch_size, shard)
    sources = sources if isinstance(sources, (list, tuple)) else [sources]
    datasets = [
        grain.MapDataset.source(s).shuffle(seed=seed + i).repeat(num_epochs)
        for i, s in enumerate(sources)
    ]
    ds = datasets[0] if len(datasets) == 1 else grain.MapDataset.mix(datasets, weights)
    ds = ds[shard.index :: shard.count]
    if worker_processes:  # each worker keeps its share of two batches ready, as threads do
        buffer = -(-2 * batch // worker_processes)
        ds = WorkerProcessesDataset(ds, transform, worker_processes, num_threads or 1, buffer)
    else:
        if num_threads is None:
            num_threads = min(16, max(1, (os.cpu_count() or 1) // 4))
        options = grain.ReadOptions(num_threads=num_threads, prefetch_buffer_size=2 * batch)
        ds = ds.map(transform).to_iter_dataset(options)
    ds = ds.filter(lambda ex: ex is not None)
    if packing is not None:
        ds = packing.rows(ds, bins=batch, seed=seed)
    return ds.batch(batch, drop_remainder=True)


def evaluation_batches(
    source: Any, transform: Transform, *, global_batch_size: int, shard: HostShard | None = None
) -> Iterator[Example]:
    """Batches of this process's share of `source`, each with `valid: bool[b]`.

    Every process yields ceil(len(source) / global_batch_size) batches of global_batch_size / P
    examples; padding rows repeat the first example with valid=False. A transform returning
    None raises: evaluation must see every example.
    """
    shard = shard or HostShard.current()
    batch = local_batch_size(global_batch_size, shard)
    total = len(source)
    num_batches = math.ceil(total / global_batch_size)
    mine = range(shard.index, total, shard.count)
    filler = None
    for b in range(num_batches):
        rows = []
        for i in range(b * batch, (b + 1) * batch):
            if i < len(mine):
                example = transform(source[mine[i]])
                if example is None:
                    raise ValueError(
                        f"evaluation example {mine[i]} could not be read; fix or remove it"
                    )
                rows.append((example, True))
            else:
                if filler is None:
                    filler = transform(source[0])
                rows.append((filler, False))
        stacked = {k: np.stack([ex[k] for ex, _ in rows]) for k in rows[0][0]}
        stacked["valid"] = np.array([ok for _, ok in rows])
        yield stacked


def to_global(local_batch: dict, sharding: jax.sharding.Sharding) -> dict:
    """Assembles per-process numpy batches into global jax.Arrays sharded as `sharding`
    (leading batch axis over the data-parallel mesh axes)."""
    return jax.tree.map(
        lambda x: jax.make_array_from_process_local_data(sharding, np.asarray(x)), local_batch
    )


class IndexSource:
    """A random-access source over range(n) whose records are their own index; handy for
    tests of ordering and coverage."""

    def __init__(self, n: int):
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> int:
        return int(i)
