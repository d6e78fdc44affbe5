"""The grain pipeline: epoch coverage, host sharding with real jax.distributed processes,
exact resume from saved iterator state, evaluation padding."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from fgjax.data import pipeline
from fgjax.launch import local

WORKER = str(Path(__file__).with_name("pipeline_worker.py"))


def ids_of(batch):
    return batch["id"].tolist()


def make(n=50, batch=10, shard=None, seed=7):
    return pipeline.training_dataset(
        pipeline.IndexSource(n),
        lambda i: {"id": np.int32(i)},
        global_batch_size=batch,
        seed=seed,
        shard=shard,
    )


def test_each_epoch_covers_every_example_once_in_a_new_order():
    it = iter(make())
    epochs = [sum((ids_of(next(it)) for _ in range(5)), []) for _ in range(3)]
    for epoch in epochs:
        assert sorted(epoch) == list(range(50))
    assert epochs[0] != epochs[1] != epochs[2]


def test_host_shards_are_disjoint_and_assemble_the_single_host_batches():
    single = iter(make())
    hosts = [iter(make(shard=pipeline.HostShard(i, 2))) for i in range(2)]
    for _ in range(12):  # crosses epoch boundaries
        expected = sorted(ids_of(next(single)))
        parts = [ids_of(next(h)) for h in hosts]
        assert len(parts[0]) == len(parts[1]) == 5
        assert not set(parts[0]) & set(parts[1])
        assert sorted(parts[0] + parts[1]) == expected


def test_resume_from_saved_state_continues_identically():
    it = iter(make())
    for _ in range(7):
        next(it)
    state = it.get_state()
    expected = [ids_of(next(it)) for _ in range(6)]
    resumed = iter(make())
    resumed.set_state(json.loads(json.dumps(state)))  # the state survives serialization
    assert [ids_of(next(resumed)) for _ in range(6)] == expected


def test_skipped_records_never_become_padding():
    ds = pipeline.training_dataset(
        pipeline.IndexSource(20),
        lambda i: None if i % 5 == 0 else {"id": np.int32(i)},
        global_batch_size=4,
        seed=0,
        num_epochs=1,
    )
    seen = sum((ids_of(b) for b in ds), [])
    assert all(i % 5 for i in seen) and len(seen) == 16


def test_mixture_follows_weights():
    a, b = pipeline.IndexSource(100), _Offset(pipeline.IndexSource(100), 1000)
    ds = pipeline.training_dataset(
        [a, b], lambda i: {"id": np.int32(i)}, global_batch_size=100, seed=0, weights=[0.75, 0.25]
    )
    ids = np.concatenate([next(iter(ds))["id"] for _ in range(1)])
    assert 65 <= (ids < 1000).sum() <= 85


class _Offset:
    def __init__(self, src, offset):
        self.src, self.offset = src, offset

    def __len__(self):
        return len(self.src)

    def __getitem__(self, i):
        return self.src[i] + self.offset


def test_evaluation_pads_and_marks_invalid_rows():
    shards = [pipeline.HostShard(i, 2) for i in range(2)]
    batches = [
        list(
            pipeline.evaluation_batches(
                pipeline.IndexSource(23),
                lambda i: {"id": np.int32(i)},
                global_batch_size=8,
                shard=s,
            )
        )
        for s in shards
    ]
    assert len(batches[0]) == len(batches[1]) == 3
    seen = [int(i) for bs in batches for b in bs for i, ok in zip(b["id"], b["valid"]) if ok]
    assert sorted(seen) == list(range(23))


def test_batch_not_divisible_by_processes_is_an_error():
    with pytest.raises(ValueError, match="not divisible by the 3 processes"):
        make(batch=10, shard=pipeline.HostShard(0, 3))


@pytest.mark.parametrize("processes", [2])
def test_two_real_processes_cover_each_example_exactly_once(tmp_path, processes):
    """Two jax.distributed processes on localhost (2 CPU devices each): the global batches equal
    the single-process ones, and evaluation of 23 examples (not divisible by the batch of 8)
    sees each exactly once."""
    out = tmp_path / "multi.json"
    status = local.run(
        [sys.executable, WORKER, str(out), "40", "23", "8", "10"], processes, devices=2, timeout=240
    )
    assert status == 0
    multi = json.loads(out.read_text())
    single_out = tmp_path / "single.json"
    subprocess.run(
        [sys.executable, WORKER, str(single_out), "40", "23", "8", "10"], check=True, timeout=240
    )
    single = json.loads(single_out.read_text())
    assert multi["processes"] == 2 and single["processes"] == 1
    assert multi["train"] == single["train"]
    for epoch in range(2):
        assert sorted(sum(multi["train"][epoch * 5 : (epoch + 1) * 5], [])) == list(range(40))
    assert sorted(multi["eval"]) == list(range(23))
