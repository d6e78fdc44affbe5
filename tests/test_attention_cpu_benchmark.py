"""benchmarks/attention_cpu.py: its float64 reference (the check every implementation must
pass before timing) against torch's float64 autograd, and the script end to end at tiny shapes."""

import json

import numpy as np
import torch

from benchmarks import attention_cpu, common


def test_float64_reference_matches_torch_autograd():
    rng = np.random.default_rng(1)
    q, k, v, g = (rng.standard_normal((2, 8, 3, 4)) for _ in range(4))
    tq, tk, tv = (torch.tensor(a.transpose(0, 2, 1, 3), requires_grad=True) for a in (q, k, v))
    out = torch.nn.functional.scaled_dot_product_attention(tq, tk, tv, is_causal=True)
    grads = torch.autograd.grad(out, (tq, tk, tv), torch.tensor(g.transpose(0, 2, 1, 3)))
    expected = [a.detach().numpy().transpose(0, 2, 1, 3) for a in (out, *grads)]
    for got, want in zip(attention_cpu.float64_reference(q, k, v, g), expected):
        np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12)


def test_runs_end_to_end_at_tiny_shapes(tmp_path, monkeypatch):
    monkeypatch.setattr(common, "RESULTS_DIR", tmp_path)  # never the recorded results
    attention_cpu.main(["--batch", "2", "--length", "16", "--heads", "2", "--head_dim", "8",
                        "--repeats", "1"])  # fmt: skip
    rows = json.loads((tmp_path / "attention_cpu.json").read_text())["rows"]
    assert len(rows) == 5 and all(r["forward_backward_ms"] > 0 for r in rows)
