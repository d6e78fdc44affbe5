"""Training-step throughput of a small VLM on this CPU, fgjax vs transformers' PyTorch
LlavaForConditionalGeneration (same sizes, same batch, forward + backward + AdamW, encoder frozen,
projector and LLM trained: the study's `align_llm` stage), in float32 and in bf16 compute (fgjax
`model.dtype=bfloat16`, whose products run bf16 x bf16 -> float32 through models/mixed_dot.py;
torch's bf16 autocast), and the per-device memory of a LLaVA-1.5-7B train step for fsdp=8 vs
fsdp=1, from ahead-of-time compilation on 8 fake CPU devices (no weights allocated), for
`align` and `align_llm`.

Before timing, every fgjax variant's first-step loss must equal transformers' float32 one
(same weights, same batch): to 1e-5 relative in float32, 2e-2 in bf16.

    python -m benchmarks.train_step [--part throughput|memory|both]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time

import ml_collections


def small_config(batch: int, length: int) -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.task, c.seed, c.stage = "vlm", 0, "align_llm"
    c.model = dict(
        encoder="tiny_clip",
        decoder="tiny_llama",
        projector="mlp2x_gelu",
        image_token_id=8191,
        encoder_overrides=dict(width=256, depth=4, num_heads=4, mlp_dim=1024, image_size=112, patch_size=14),
        decoder_overrides=dict(vocab_size=8192, width=512, depth=6, num_heads=8, num_kv_heads=8, mlp_dim=1408),
    )
    c.optim = dict(lr=1e-4, warmup_steps=0, weight_decay=0.0, clip_norm=1.0)
    c.data = dict(max_length=length)
    c.batch_size, c.grad_accum, c.num_steps = batch, 1, 100
    c.checkpoint = dict(every_steps=100)  # required by the schema; the benchmark never saves
    c.mesh = {"data": -1}
    return c


def throughput(batch: int, length: int, repeats: int) -> None:
    import jax
    import numpy as np
    import torch
    from flax import nnx
    from transformers import LlavaConfig, LlavaForConditionalGeneration

    from benchmarks.common import report, time_call
    from fgjax import hf
    from fgjax.train import experiment, optim, trainer

    # name -> (scan_layers, compute dtype)
    layouts = {"scanned layers": True, "unrolled layers": False}
    variants = {"float32, scanned layers": (True, "float32"),
                "float32, unrolled layers": (False, "float32"),
                "bf16, unrolled layers": (False, "bfloat16")}  # fmt: skip
    experiments = {}
    for name, (scan, dtype) in variants.items():
        config = small_config(batch, length)
        config.model.dtype = dtype
        config.model.encoder_overrides["scan_layers"] = scan
        config.model.decoder_overrides["scan_layers"] = scan
        experiments[name] = experiment.build(config)
    exp = experiments["float32, scanned layers"]
    cfg = exp.model_cfg
    torch.manual_seed(0)
    reference = LlavaForConditionalGeneration(LlavaConfig(**hf.to_hf(cfg))).train()
    params = {}
    with tempfile.TemporaryDirectory() as tmp:  # identical weights on every side
        reference.save_pretrained(tmp)
        for layout, scan in layouts.items():
            model, _ = hf.load(tmp, scan_layers=scan)
            params[layout] = nnx.to_pure_dict(nnx.state(model, nnx.Param))

    rng = np.random.RandomState(0)
    n_img = cfg.num_image_tokens
    tokens = rng.randint(0, cfg.image_token_id, (batch, length)).astype(np.int32)
    tokens[:, 1 : 1 + n_img] = cfg.image_token_id
    loss_mask = np.zeros((batch, length), bool)
    loss_mask[:, 1 + n_img + 8 :] = True
    res = cfg.encoder.resolution
    images = rng.randn(batch, res, res, 3).astype(np.float32)
    batch_np = {"tokens": tokens, "loss_mask": loss_mask, "input_mask": np.ones_like(loss_mask), "images": images}

    def jax_runner(exp, params):
        state, frozen = trainer.fresh_state(exp, jax.tree.map(np.array, params))  # copies: steps donate
        global_batch = jax.device_put(batch_np, exp.batch_sharding)
        holder = {"state": state}

        def run_jax():
            holder["state"], metrics = exp.step(holder["state"], frozen, global_batch)
            return jax.block_until_ready(metrics["loss"])

        return run_jax

    for p in reference.model.vision_tower.parameters():
        p.requires_grad_(False)
    trained = [p for p in reference.parameters() if p.requires_grad]
    adam = torch.optim.AdamW(trained, lr=1e-4, weight_decay=0.0)
    labels = torch.tensor(np.where(loss_mask, tokens, -100), dtype=torch.long)
    inputs = dict(
        input_ids=torch.tensor(tokens, dtype=torch.long),
        pixel_values=torch.tensor(images.transpose(0, 3, 1, 2)),
        attention_mask=torch.ones(batch, length, dtype=torch.long),
        labels=labels,
    )

    def torch_runner(bf16: bool):
        def run_torch():
            adam.zero_grad()
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                out = reference(**inputs)
            out.loss.backward()
            torch.nn.utils.clip_grad_norm_(trained, 1.0)
            adam.step()
            return float(out.loss)

        return run_torch

    runners = {f"fgjax (jax.jit step, {name})": jax_runner(experiments[name], params["scanned layers" if scan else "unrolled layers"])
               for name, (scan, _) in variants.items()}  # fmt: skip
    first = {name: float(run()) for name, run in runners.items()}  # identical weights: step 1
    torch_f32, torch_bf16 = (f"transformers (torch {torch.__version__}, {p})" for p in ("float32", "bf16 autocast"))
    runners[torch_f32], runners[torch_bf16] = torch_runner(False), torch_runner(True)
    reference_loss = runners[torch_f32]()
    for name, loss in first.items():
        tolerance = 2e-2 if "bf16" in name else 1e-5
        assert abs(loss - reference_loss) <= tolerance * abs(reference_loss), (name, loss, reference_loss)
    print("first-step losses agree: " + ", ".join(f"{k} {v:.6f}" for k, v in {**first, torch_f32: reference_loss}.items()))
    timings = {name: time_call(run, repeats=repeats) for name, run in runners.items()}
    tokens_per_step = batch * length
    step_flops = exp.task.step_flops(cfg, batch, length, exp.flags)
    peak = measured_matmul_peak()
    rows = []
    for name, seconds in timings.items():
        t_torch = timings[torch_bf16 if "bf16" in name else torch_f32]
        rows.append({
            "implementation": name,
            "step_s": seconds,
            "tokens/s": tokens_per_step / seconds,
            "TFLOP/s": step_flops / seconds / 1e12,
            "MFU_vs_f32_matmul_peak": step_flops / seconds / peak,
            "speedup_vs_torch_same_precision": t_torch / seconds,
        })  # fmt: skip
    counts = optim.count_report(exp.abstract_params, exp.path_groups, exp.flags)
    print(f"align_llm train step, batch {batch} x {length} tokens ({n_img} image tokens), "
          f"{sum(r['params'] for r in counts):,} params, analytic {step_flops / 1e9:.1f} GFLOP/step, "
          f"measured matmul peak {peak / 1e9:.1f} GFLOP/s on {os.cpu_count()} cores")  # fmt: skip
    report("train_step_throughput", rows, {"batch": batch, "length": length, "step_gflop": step_flops / 1e9})


def measured_matmul_peak() -> float:
    """FLOP/s of a large float32 matmul under jax.jit: the CPU's practical peak, for MFU."""
    import jax
    import jax.numpy as jnp

    from benchmarks.common import time_call

    a = jnp.ones((2048, 2048), jnp.float32)
    f = jax.jit(lambda a: a @ a)
    return 2 * 2048**3 / time_call(lambda: f(a).block_until_ready(), repeats=5)


MEMORY_SCRIPT = """
import json, sys
from benchmarks.train_step import llava_memory
print(json.dumps(llava_memory()))
"""


def llava_memory() -> list[dict]:
    """Per-device bytes of the LLaVA-1.5-7B train step (global batch 8 x 2048 tokens, bf16
    compute, remat), compiled ahead of time on 8 fake CPU devices."""
    from fgjax.train import experiment

    rows = []
    for stage in ("align", "align_llm"):
        for mesh in ({"fsdp": 8}, {"data": 8}):
            c = small_config(8, 2048)
            c.stage, c.mesh = stage, mesh
            c.model = dict(
                encoder="clip_l336", decoder="vicuna7b_llava", projector="mlp2x_gelu", dtype="bfloat16", remat="full"
            )
            start = time.perf_counter()
            compiled = experiment.build(c).compile()
            m = compiled.memory_analysis()
            gib = 2**30
            rows.append({
                "stage": stage,
                "mesh": ",".join(f"{k}={v}" for k, v in mesh.items()),
                "arguments_GiB": m.argument_size_in_bytes / gib,
                "outputs_GiB": m.output_size_in_bytes / gib,
                "temp_GiB": m.temp_size_in_bytes / gib,
                "aliased_GiB": m.alias_size_in_bytes / gib,
                "peak_estimate_GiB": (m.argument_size_in_bytes + m.output_size_in_bytes - m.alias_size_in_bytes + m.temp_size_in_bytes) / gib,
                "compile_s": time.perf_counter() - start,
            })  # fmt: skip
    return rows


def memory() -> None:
    import json

    from benchmarks.common import report

    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=8", "JAX_PLATFORMS": "cpu"}
    out = subprocess.run([sys.executable, "-c", MEMORY_SCRIPT], env=env, capture_output=True, text=True, check=True)
    rows = json.loads(out.stdout.strip().splitlines()[-1])
    print("LLaVA-1.5-7B train step, per device, global batch 8 x 2048, bf16 compute, remat=full, 8 fake CPU devices")
    report("train_step_memory_llava7b", rows)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--part", choices=["throughput", "memory", "both"], default="both")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--length", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    if args.part in ("throughput", "both"):
        throughput(args.batch, args.length, args.repeats)
    if args.part in ("memory", "both"):
        memory()


if __name__ == "__main__":
    main()
