"""A few random kills of a training run, each followed by a rerun: the result stays bit-identical
to an uninterrupted run (benchmarks/kill_soak.py; FGJAX_SOAK_KILLS=N runs more)."""

import os

import pytest

from benchmarks import kill_soak


@pytest.mark.slow
def test_killed_and_rerun_training_ends_bit_identical(tmp_path):
    kills = int(os.environ.get("FGJAX_SOAK_KILLS", "3"))
    row = kill_soak.soak(kills=kills, aimed=0.5, seed=0, directory=tmp_path)
    print(row)
    assert row["kills"] == kills and row["mismatches"] == 0
