"""The training transform in grain worker processes (config.data.worker_processes): decoding
and preprocessing outside the training process's GIL.

Worker w of W computes elements w, w + W, w + 2W, ... of this host's stream (grain's
`mp_prefetch`) and grain interleaves them back in order, so the stream is element for element
the one the in-process pipeline yields (pipeline.training_dataset with 0 workers):

- a skipped record travels as an element (example None) and is dropped here, after the
  interleave: a None dropped inside a worker would shift grain's round robin;
- the skip counters and guards the worker's copy of the transform and sources call record
  their calls, which travel with the element and are replayed on the originals here, in
  stream order (data/skips.py): the data report and the skip guard are those of a run
  without workers, and a guard's UnusableDataError is raised in the training process;
- the iterator state is {"next_index": elements of this host's stream consumed}, the state of
  the in-process pipeline too, so a run resumes with any number of workers (they restart at
  that element).

Workers start on the first batch (a second or two each: they import fgjax and unpickle the
sources and the transform) and are spawned, so a script that trains must keep its entry
point under `if __name__ == "__main__":` (fgjax.main does). benchmarks/input_throughput.py
measures images/s per worker against what a training step consumes.
"""

from __future__ import annotations

import functools
import weakref
from typing import Any

import grain
from absl import flags

from fgjax.data import skips


def check_count(workers) -> int:
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 0:
        raise ValueError(
            f"config.data.worker_processes={workers!r} must be an integer >= 0 "
            "(0 or None: the transform runs in threads of the training process)"
        )
    return workers


class WorkerProcessesDataset(grain.IterDataset):
    """`transform` of each element of `records`, in order, computed in `workers` processes
    with `threads` threads each and `buffer` elements prefetched per worker."""

    def __init__(
        self, records: grain.MapDataset, transform, workers: int, threads: int, buffer: int
    ):
        super().__init__()
        self.records, self.transform = records, transform
        self.workers, self.threads, self.buffer = check_count(workers), threads, buffer

    def __iter__(self) -> grain.DatasetIterator:
        return _Iterator(self)

    def __str__(self) -> str:
        return f"WorkerProcessesDataset(workers={self.workers}, threads={self.threads})"


def _transform_recorded(transform, record) -> tuple[Any, list]:
    """In a worker: (example or None, the skip calls made for it)."""
    return transform(record), skips.recorded()


def _start_worker(index: int, count: int) -> None:
    skips.record_calls()


def _stop(workers: list) -> None:
    while workers:
        workers.pop().close()


class _Iterator(grain.DatasetIterator):
    def __init__(self, ds: WorkerProcessesDataset):
        super().__init__()
        self._ds, self._next_index = ds, 0
        self._workers: list = []  # the running workers' iterator, once started
        self._stop = None

    def _start(self) -> grain.DatasetIterator:
        """The worker processes, from element `next_index` on (started on the first `next`)."""
        if not flags.FLAGS.is_parsed():  # grain reads its absl flags: without absl, defaults
            flags.FLAGS.mark_as_parsed()
        ds = self._ds
        elements = ds.records[self._next_index :].map(
            functools.partial(_transform_recorded, ds.transform)
        )
        read = grain.ReadOptions(num_threads=ds.threads, prefetch_buffer_size=ds.buffer)
        processes = grain.MultiprocessingOptions(
            num_workers=ds.workers, per_worker_buffer_size=ds.buffer
        )
        return iter(elements.to_iter_dataset(read).mp_prefetch(processes, _start_worker))

    def __next__(self):
        if not self._workers:
            self._workers.append(self._start())
            # stopped and dropped when this iterator goes, or at exit while grain still can
            self._stop = weakref.finalize(self, _stop, self._workers)
        example, calls = next(self._workers[0])
        self._next_index += 1
        skips.replay(calls)
        return example

    def get_state(self) -> dict:
        return {"next_index": self._next_index}

    def set_state(self, state: dict) -> None:
        self.close()
        self._closed = False
        self._next_index = int(state["next_index"])

    def close(self) -> None:
        if self._stop is not None:
            self._stop()
        self._closed = True
