"""benchmarks/input_throughput.py end to end on tiny sizes: the real training pipeline (LLaVA
rows, JPEGs, CLIP-L/336 letterbox, vicuna_v1 tokens) in threads and in two worker processes,
checked against each other before any rate is reported, and the recipe's consumption."""

import numpy as np

from benchmarks import input_throughput as bench


def test_throughput_rows_come_from_identical_pipelines(tmp_path):
    data = bench.write_data(tmp_path, rows=8)
    rows, firsts = bench.throughput(data, [(0, None), (2, None)], batch=4, batches=2, warmup=1)
    assert [r["workers"] for r in rows] == [0, 2]
    assert all(r["images_per_s"] > 0 and r["threads_each"] >= 1 for r in rows)
    # throughput() already compared every example of the first epoch; the arrays themselves:
    assert firsts[0]["images"].shape == (4, 336, 336, 3) and firsts[0]["images"].dtype == np.float32
    assert firsts[0].keys() == firsts[1].keys()
    for key in firsts[0]:
        np.testing.assert_array_equal(firsts[1][key], firsts[0][key])
    assert len({bytes(image) for image in firsts[0]["images"]}) == 4  # distinct images


def test_consumption_follows_the_step_flops():
    """Per host, the same images/s on both slices (the step's FLOPs grow with the batch, its
    chips with the hosts); LLaVA-1.5's frozen-LLM pretraining at 256 per step ~16 images/s."""
    needs = {(n["stage"], n["topology"]): n for n in bench.consumption(0.5)}
    for stage in bench.STAGES:
        small, large = needs[stage, "v5p-32"], needs[stage, "v5p-128"]
        assert (small["hosts"], large["hosts"]) == (4, 16)
        assert abs(small["images_per_s_per_host"] - large["images_per_s_per_host"]) <= 0.1
    align = needs["align", "v5p-32"]
    expected = 256 / (align["step_tflops"] * 1e12 / (0.5 * 459e12 * 16)) / 4
    assert abs(align["images_per_s_per_host"] - expected) < 0.1 and 10 < expected < 30
    assert bench.workers_needed(16.2, 76.0) == 1 and bench.workers_needed(160, 76.0) == 3
