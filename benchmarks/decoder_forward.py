"""Forward-pass throughput of the fgjax decoder vs transformers' PyTorch LlamaForCausalLM on the
same config, same weights and same tokens, on this machine's CPU (float32).

    python benchmarks/decoder_forward.py [--batch 8 --length 256]
"""

from __future__ import annotations

import argparse
import tempfile

import jax
import jax.numpy as jnp
import numpy as np
import torch
from flax import nnx
from transformers import LlamaConfig, LlamaForCausalLM

from benchmarks.common import report, time_call
from fgjax import hf, models
from fgjax.models import presets


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--length", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    cfg = presets.decoder(
        "tiny_llama", vocab_size=8192, width=512, depth=8, num_heads=8, num_kv_heads=4, mlp_dim=1408
    )
    torch.manual_seed(0)
    reference = LlamaForCausalLM(LlamaConfig(**hf.to_hf(cfg))).eval()
    with tempfile.TemporaryDirectory() as tmp:  # the same weights on both sides
        reference.save_pretrained(tmp)
        model, _ = hf.load(tmp)
    tokens = np.random.RandomState(0).randint(0, cfg.vocab_size, (args.batch, args.length))

    graphdef, state = nnx.split(model)
    forward = jax.jit(lambda state, toks: nnx.merge(graphdef, state)(toks).logits)
    toks_jax = jnp.asarray(tokens, jnp.int32)
    toks_torch = torch.tensor(tokens)

    def run_jax():
        return forward(state, toks_jax).block_until_ready()

    def run_torch():
        with torch.inference_mode():
            return reference(toks_torch).logits

    diff = float(np.abs(np.asarray(run_jax()) - run_torch().numpy()).max())
    n = args.batch * args.length
    t_jax = time_call(run_jax, repeats=args.repeats)
    t_torch = time_call(run_torch, repeats=args.repeats)
    rows = [
        {"implementation": "fgjax (jax.jit, scanned layers)", "seconds": t_jax, "tokens/s": n / t_jax, "ratio": t_torch / t_jax},
        {"implementation": f"transformers {reference.config._attn_implementation} (torch {torch.__version__})",
         "seconds": t_torch, "tokens/s": n / t_torch, "ratio": 1.0},
    ]  # fmt: skip
    print(f"decoder forward, batch {args.batch} x {args.length} tokens, {models.param_count(cfg):,} params, "
          f"torch threads {torch.get_num_threads()}, max |logit diff| {diff:.2e}")  # fmt: skip
    report("decoder_forward", rows, {"config": vars(args), "max_abs_logit_diff": diff})


if __name__ == "__main__":
    main()
