"""Where the CPU train step loses to PyTorch: a stack of gated MLPs, forward and backward.

`train_step` finds fgjax's step slower than transformers' on this CPU while the forward pass is
at parity. This isolates the suspect: `depth` residual gated MLPs (fgjax's `Mlp`, Llama's
silu-gated one) at the train_step benchmark's sizes, against transformers' `LlamaMLP` with the
same weights, timing the forward pass and forward + backward (gradients for the input and all
weights) on each side; and fgjax's former formulation, dots over [B, T, D] activations, whose
weight gradients XLA:CPU computes through transposed copies (fgjax.models.layers.Mlp now
flattens the tokens to one axis).

    .venv/bin/python -m benchmarks.mlp_backward [--depth 6] [--tokens 2048]

Writes benchmarks/results/mlp_backward.json.
"""

from __future__ import annotations

import argparse

import jax
import jax.numpy as jnp
import numpy as np
import torch
from flax import nnx
from transformers import LlamaConfig
from transformers.models.llama.modeling_llama import LlamaMLP

from benchmarks.common import report, time_call
from fgjax.models.layers import Mlp


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--depth", type=int, default=6)
    parser.add_argument("--tokens", type=int, default=2048, help="batch x sequence length")
    parser.add_argument("--width", type=int, default=512)
    parser.add_argument("--hidden", type=int, default=1408)
    args = parser.parse_args()
    rngs = nnx.Rngs(0)
    mlps = [Mlp(args.width, args.hidden, kind="gated", act="silu", bias=False,
                dtype=jnp.float32, param_dtype=jnp.float32, rngs=rngs)
            for _ in range(args.depth)]  # fmt: skip
    hf_cfg = LlamaConfig(hidden_size=args.width, intermediate_size=args.hidden, hidden_act="silu")
    reference = [LlamaMLP(hf_cfg) for _ in range(args.depth)]
    with torch.no_grad():  # same weights: torch Linear holds [out, in]
        for ours, theirs in zip(mlps, reference):
            for name in ("gate", "up", "down"):
                kernel = np.asarray(getattr(ours, name).kernel[...])
                getattr(theirs, f"{name}_proj").weight.copy_(torch.from_numpy(kernel.T.copy()))
    x = np.random.RandomState(0).randn(8, args.tokens // 8, args.width).astype(np.float32)

    graphdef, params = nnx.split(nnx.List(mlps))

    def forward(params, x):
        for mlp in nnx.merge(graphdef, params):
            x = x + mlp(x)
        return x.sum()

    def forward_3d(params, x):  # the same MLPs as dots over [B, T, D]: what fgjax did before
        for mlp in nnx.merge(graphdef, params):
            gate, up, down = (getattr(mlp, n).kernel[...] for n in ("gate", "up", "down"))
            x = x + (jax.nn.silu(x @ gate) * (x @ up)) @ down
        return x.sum()

    fwd = jax.jit(forward)
    grad = jax.jit(jax.grad(forward, argnums=(0, 1)))
    grad_3d = jax.jit(jax.grad(forward_3d, argnums=(0, 1)))
    x_jax = jnp.asarray(x)
    x_torch = torch.tensor(x, requires_grad=True)
    weights = [p for m in reference for p in m.parameters()]

    def torch_forward():
        h = x_torch
        for mlp in reference:
            h = h + mlp(h)
        return h.sum()

    def torch_grad():
        for p in [x_torch, *weights]:
            p.grad = None
        torch_forward().backward()

    with torch.no_grad():
        expected = float(torch_forward())
    assert abs(float(fwd(params, x_jax)) - expected) <= 1e-4 * max(1.0, abs(expected))

    def timed_torch_forward():
        with torch.no_grad():
            return torch_forward()

    timings = {
        "forward": (time_call(lambda: jax.block_until_ready(fwd(params, x_jax))),
                    time_call(timed_torch_forward)),
        "forward + backward": (time_call(lambda: jax.block_until_ready(grad(params, x_jax))),
                               time_call(torch_grad)),
        "forward + backward, 3-D dots": (
            time_call(lambda: jax.block_until_ready(grad_3d(params, x_jax))), time_call(torch_grad)),
    }  # fmt: skip
    rows = [
        {"pass": name, "fgjax_s": ours, "torch_s": theirs, "speedup": theirs / ours}
        for name, (ours, theirs) in timings.items()
    ]
    print(f"{args.depth} gated MLPs {args.width} -> {args.hidden}, {args.tokens} tokens, fp32, "
          f"torch {torch.__version__} with {torch.get_num_threads()} threads")  # fmt: skip
    report("mlp_backward", rows, vars(args))


if __name__ == "__main__":
    main()
