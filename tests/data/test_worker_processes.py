"""The training transform in grain worker processes (data/worker_processes.py): the in-process
stream element for element, skips included, and an iterator state that resumes with any
number of workers."""

import json

import numpy as np
import pytest

from fgjax.data import pipeline
from fgjax.data.worker_processes import check_count


def every_seventh_skipped(i):
    return None if i % 7 == 3 else {"id": np.int32(i), "pixels": np.full((4, 4), i, np.float32)}


def make(workers, n=30, batch=4, num_epochs=None):
    return pipeline.training_dataset(
        pipeline.IndexSource(n),
        every_seventh_skipped,
        global_batch_size=batch,
        seed=3,
        num_epochs=num_epochs,
        worker_processes=workers,
    )


def take(it, count):
    return [next(it)["id"].tolist() for _ in range(count)]


def test_two_workers_yield_the_in_process_batches_and_resume_with_any_count():
    """Over three epochs of 30 with every seventh record skipped: the batches of 2 workers are
    those of threads in this process; the state after 12 batches (a JSON round trip, as in a
    checkpoint) resumes identically with 1 worker and with none."""
    reference = iter(make(0))
    expected = take(reference, 18)
    workers = iter(make(2))
    try:
        assert take(workers, 12) == expected[:12]
        state = json.loads(json.dumps(workers.get_state()))
        assert state == reference_state_after(12)
        assert take(workers, 6) == expected[12:]
    finally:
        workers.close()
    for count in (1, 0):
        resumed = iter(make(count))
        resumed.set_state(state)
        assert take(resumed, 6) == expected[12:], count
        resumed.close()


def reference_state_after(batches):
    it = iter(make(0))
    take(it, batches)
    return it.get_state()


def test_one_epoch_in_workers_yields_each_kept_record_once_and_ends():
    ids = sum((batch["id"].tolist() for batch in make(2, n=21, batch=2, num_epochs=1)), [])
    assert sorted(ids) == [i for i in range(21) if i % 7 != 3]  # 18: nine full batches


@pytest.mark.parametrize("value", [-1, True, 1.5, "2"])
def test_a_bad_worker_count_names_the_field(value):
    with pytest.raises(ValueError, match="config.data.worker_processes=.* integer >= 0"):
        check_count(value)
