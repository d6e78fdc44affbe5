"""Causal self-attention on this CPU, forward and forward + backward: fgjax's reference
implementation (what "auto" runs on a CPU), jax.nn.dot_product_attention (XLA) and blocked
causal attention (query blocks that skip the masked keys) against PyTorch's
scaled_dot_product_attention (a fused flash kernel on CPU, what transformers' "sdpa" runs) and
PyTorch's unfused math, in one run, at `train_step`'s shape (batch 8 x 256 tokens, 8 heads of
64). It locates the rest of `train_step`'s gap to transformers: per layer, attention is most of it.

Before timing, every implementation's output and input gradients must match a float64 NumPy
reference to 1e-4 (relative to the largest value).

    .venv/bin/python -m benchmarks.attention_cpu [--batch 8] [--length 256] [--heads 8]

Also times one batched product of the attention's shape ([B * N] products of [T, H] x [H, T])
against a single product with the same FLOPs: XLA:CPU runs the batched one on one core.
Writes benchmarks/results/attention_cpu.json.
"""

from __future__ import annotations

import argparse
import os

import numpy as np


def float64_reference(q, k, v, grad_out):
    """(out, dq, dk, dv) of causal softmax attention in float64; arrays [B, T, N, H]."""
    q, k, v, g = (np.asarray(a, np.float64).transpose(0, 2, 1, 3) for a in (q, k, v, grad_out))
    scale = q.shape[-1] ** -0.5
    s = q @ k.swapaxes(-1, -2) * scale
    s = np.where(np.tril(np.ones(s.shape[-2:], bool)), s, -np.inf)
    p = np.exp(s - s.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    out = p @ v
    dv = p.swapaxes(-1, -2) @ g
    dp = g @ v.swapaxes(-1, -2)
    ds = p * (dp - (dp * p).sum(-1, keepdims=True)) * scale
    dq, dk = ds @ k, ds.swapaxes(-1, -2) @ q
    return tuple(a.transpose(0, 2, 1, 3) for a in (out, dq, dk, dv))


def blocked_causal(q, k, v, blocks: int = 4):
    """Causal attention by query blocks, each against the keys up to its end only (the masked
    keys beyond are skipped, not computed), each block by fgjax's reference:
    [B, T, N, H] -> [B, T, N, H]."""
    import jax.numpy as jnp

    from fgjax.models.attention import causal_mask, dot_product_attention

    batch, length = q.shape[:2]
    size = length // blocks
    outs = []
    for i in range(blocks):
        end = (i + 1) * size
        mask = jnp.broadcast_to(causal_mask(length)[i * size : end, :end], (batch, size, end))
        outs.append(dot_product_attention(
            q[:, i * size : end], k[:, :end], v[:, :end], mask, q.shape[-1] ** -0.5, "reference"
        ))  # fmt: skip
    return jnp.concatenate(outs, axis=1)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--length", type=int, default=256)
    parser.add_argument("--heads", type=int, default=8)
    parser.add_argument("--head_dim", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)

    import jax
    import jax.numpy as jnp
    import torch

    from benchmarks.common import report, time_call
    from fgjax.models.attention import CausalMask, dot_product_attention

    b, t, n, h = args.batch, args.length, args.heads, args.head_dim
    rng = np.random.default_rng(0)
    q, k, v, grad_out = (rng.standard_normal((b, t, n, h)).astype(np.float32) for _ in range(4))
    expected = float64_reference(q, k, v, grad_out)
    scale = h**-0.5
    causal = CausalMask(jnp.full((b,), t, jnp.int32))  # no padding

    jax_impls = {
        "fgjax reference (CPU default)": lambda q, k, v: dot_product_attention(
            q, k, v, causal, scale, "reference"
        ),
        "jax.nn.dot_product_attention (xla)": lambda q, k, v: jax.nn.dot_product_attention(
            q, k, v, scale=scale, is_causal=True, implementation="xla"
        ),
        "blocked causal (4 query blocks, reference)": blocked_causal,
    }

    def jax_runners(attend):
        forward = jax.jit(attend)

        @jax.jit
        def backward(q, k, v, g):
            out, pull = jax.vjp(attend, q, k, v)
            return (out, *pull(g))

        inputs = [jnp.asarray(a) for a in (q, k, v)]
        g = jnp.asarray(grad_out)
        return (
            lambda: jax.block_until_ready(forward(*inputs)),
            lambda: jax.block_until_ready(backward(*inputs, g)),
        )

    tq, tk, tv = (torch.tensor(a.transpose(0, 2, 1, 3), requires_grad=True) for a in (q, k, v))
    tg = torch.tensor(grad_out.transpose(0, 2, 1, 3))
    causal_np = torch.tensor(np.tril(np.ones((t, t), bool)))

    def torch_sdpa(q, k, v):
        return torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)

    def torch_math(q, k, v):
        s = (q @ k.transpose(-1, -2)) * scale
        return s.masked_fill(~causal_np, float("-inf")).softmax(-1) @ v

    def torch_runners(attend):
        def forward():
            with torch.no_grad():
                return attend(tq, tk, tv)

        def backward():
            out = attend(tq, tk, tv)
            return (out, *torch.autograd.grad(out, (tq, tk, tv), tg))

        return forward, backward

    runners = {name: jax_runners(f) for name, f in jax_impls.items()}
    runners["torch scaled_dot_product_attention (flash)"] = torch_runners(torch_sdpa)
    runners["torch math (unfused)"] = torch_runners(torch_math)

    for name, (_, backward) in runners.items():  # every output against float64
        got = backward()
        if isinstance(got[0], torch.Tensor):
            got = [a.detach().numpy().transpose(0, 2, 1, 3) for a in got]
        for what, a, e in zip(("out", "dq", "dk", "dv"), got, expected):
            error = float(np.max(np.abs(np.asarray(a, np.float64) - e)) / np.max(np.abs(e)))
            assert error < 1e-4, (name, what, error)
    print("every implementation's output and gradients agree with float64 (to 1e-4)")

    flop = 4 * b * n * t * t * h  # the two products of the forward, the full T x T square
    times = {
        name: tuple(time_call(r, repeats=args.repeats) for r in pair)
        for name, pair in runners.items()
    }
    torch_fwd, torch_bwd = times["torch scaled_dot_product_attention (flash)"]
    rows = []
    for name, (fwd, bwd) in times.items():
        rows.append({
            "implementation": name,
            "forward_ms": fwd * 1e3,
            "forward_backward_ms": bwd * 1e3,
            "forward_GFLOP/s": flop / fwd / 1e9,
            "vs_torch_sdpa_forward": torch_fwd / fwd,
            "vs_torch_sdpa_forward_backward": torch_bwd / bwd,
        })  # fmt: skip

    # the attention's batched product against one product of the same FLOPs
    batched_a = jnp.asarray(rng.standard_normal((b * n, t, h)), jnp.float32)
    batched_b = jnp.asarray(rng.standard_normal((b * n, h, t)), jnp.float32)
    single_a = batched_a.reshape(b * n * t, h)
    single_b = batched_b[0]
    product = jax.jit(jnp.matmul)
    product_flop = 2 * b * n * t * t * h
    batched = time_call(
        lambda: product(batched_a, batched_b).block_until_ready(), repeats=args.repeats
    )
    single = time_call(
        lambda: product(single_a, single_b).block_until_ready(), repeats=args.repeats
    )
    products = {
        f"batched: {b * n} x [{t}, {h}] @ [{h}, {t}]": product_flop / batched / 1e9,
        f"single: [{b * n * t}, {h}] @ [{h}, {t}]": product_flop / single / 1e9,
    }
    for name, rate in products.items():
        print(f"XLA product {name}: {rate:.1f} GFLOP/s")
    report("attention_cpu", rows, {"shape": {"batch": b, "length": t, "heads": n, "head_dim": h},
                                   "xla_products_GFLOP/s": products, "cores": os.cpu_count(),
                                   "torch": torch.__version__, "load_average": list(os.getloadavg())})  # fmt: skip


if __name__ == "__main__":
    main()
