"""benchmarks/gpu_suite.py end to end with tiny shapes on the CPU: every row is produced, every
agreement check against transformers runs and passes before the timing, and a planted
disagreement (noise on transformers' LM head after the weights are shared) fails every check
and leaves the fgjax rows untimed. The check helpers' bf16 near-tie rule on planted arrays."""

import json

import numpy as np
import pytest
import torch

from benchmarks import common, gpu_suite

ROWS = [
    ("align", "fgjax remat=full"),
    ("align_llm", "fgjax remat=none"),
    ("align_llm", "fgjax remat=full"),
    ("ranking", "fgjax shared prefix"),
    ("ranking", "transformers class by class"),
    ("generation", "fgjax greedy_generate"),
    ("generation", "transformers generate"),
]


def run_suite(tmp_path, monkeypatch, *flags):
    monkeypatch.setattr(common, "RESULTS_DIR", tmp_path)  # never the recorded results
    argv = ["--tiny", "--torch_threads", "1", "--peak_tflops", "1", "--tmp", str(tmp_path)]
    threads = torch.get_num_threads()
    try:
        code = gpu_suite.main([*argv, *flags])
    finally:
        torch.set_num_threads(threads)  # as the other tests of this process expect
    return code, json.loads((tmp_path / "gpu_suite.json").read_text())


def fgjax_rows(result):
    return [r for r in result["rows"] if r["implementation"].startswith("fgjax")]


def test_tiny_suite_runs_checks_and_times_every_row(tmp_path, monkeypatch):
    code, result = run_suite(tmp_path, monkeypatch)
    rows = result["rows"]
    assert code == 0
    assert len(rows) == len(ROWS)
    for (part, prefix), row in zip(ROWS, rows):
        assert row["part"] == part and row["implementation"].startswith(prefix), row
    for row in fgjax_rows(result):
        assert row["agreement"].startswith("pass: "), row
        assert row["ms"] > 0 and row["TFLOP/s"] > 0
        assert row["MFU"] == pytest.approx(row["TFLOP/s"])  # against --peak_tflops 1
        speed = row["tokens/s"] if row["part"] != "ranking" else row["images/s"]
        assert speed > 0
        if row["part"] in ("ranking", "generation"):
            assert row["vs_transformers"] > 0
    checks = {(a["part"], a["implementation"]): a for a in result["agreement"] if "passed" in a}
    assert len(checks) == 5 and all(a["passed"] for a in checks.values())
    generation = next(a for (part, _), a in checks.items() if part == "generation")
    assert generation["identical"]  # float32: the very same greedy tokens
    losses = [a for (part, _), a in checks.items() if part.startswith("align")]
    assert all(a["rel_diff"] < gpu_suite.FLOAT32.loss_rel for a in losses)
    assert result["tolerance"] == {"rel_rms": 1e-4, "loss_rel": 1e-5, "tie_sigmas": 0.0,
                                   "exact_tokens": True}  # fmt: skip


def test_planted_disagreement_fails_every_check(tmp_path, monkeypatch):
    code, result = run_suite(tmp_path, monkeypatch, "--plant_disagreement")
    assert code == 1
    rows = fgjax_rows(result)
    assert len(rows) == 5
    for row in rows:
        assert row["agreement"].startswith("FAIL: ") and row["ms"] is None, row


def planted_tie(noise: float, gap: float):
    """Class scores of 4 images and fgjax's with `noise`; image 0's top two classes are `gap`
    apart, in the other order for fgjax."""
    rng = np.random.default_rng(0)
    theirs = rng.normal(size=(4, 50))
    theirs[0, :2] = [3.0, 3.0 - gap]
    ours = theirs + rng.normal(scale=noise, size=theirs.shape)
    ours[0, :2] = [3.0 - gap, 3.0]
    return ours, theirs


def test_bf16_near_ties_may_flip_an_argmax_float32_may_not():
    ours, theirs = planted_tie(noise=1e-3, gap=1e-3)  # a flip within the noise
    assert gpu_suite.check_scores(ours, theirs, gpu_suite.BFLOAT16)["passed"]
    ours, theirs = planted_tie(noise=1e-7, gap=1e-5)
    check = gpu_suite.check_scores(ours, theirs, gpu_suite.FLOAT32)
    assert check["rel_rms"] < gpu_suite.FLOAT32.rel_rms and not check["top1_ok"]
    assert not check["passed"]
    ours, theirs = planted_tie(noise=1e-3, gap=0.1)  # a flip far beyond the noise
    assert not gpu_suite.check_scores(ours, theirs, gpu_suite.BFLOAT16)["passed"]
