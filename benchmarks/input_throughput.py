"""Input throughput: images/s of the real training input pipeline in threads and in grain worker
processes (config.data.worker_processes), against the rate the LLaVA-1.5-7B recipe consumes per
v5p host at 50% MFU -- so the table says how many worker processes a host needs.

The pipeline is the one training runs (train/inputs.py `train_dataset` on configs/llava15.py,
its data paths pointed here): LLaVA-665K-format JSON rows on local disk with synthetic
photo-like JPEGs of 160 to 1024 px a side (benchmarks/preprocess_throughput.py), decoded and
letterboxed to CLIP ViT-L/14-336's float32[336, 336, 3], the conversation tokenized with the
stage's template (vicuna_v1 for instruction tuning) and padded to 2048 tokens, then batched.
The tokenizer is a Llama-style sentencepiece BPE trained here on the rows' text (a few
thousand pieces, not vicuna's 32,000); the run reports the text's share of the transform time.

Checked before any figure is reported: every setting's first epoch equals the in-process
pipeline's byte for byte (SHA-1 of every array of every example) and holds each row once.
Timing starts after `--warmup` batches (more than the two batches each setting prefetches).

The consumption side: the recipe's step FLOPs from the fit check's code path
(experiment.build + task.step_flops, the fit report's "analytic model FLOPs per step"), peak
bf16 FLOP/s of a v5p chip from train/flops.py, 4 chips per v5p host (v5p-32: 16 chips on 4
hosts; v5p-128: 64 chips on 16 hosts): a host consumes global batch / step time / hosts
images per second, step time = step FLOPs / (MFU * peak * chips).

    .venv/bin/python benchmarks/input_throughput.py [--rows 128] [--batch 16] [--batches 40]
        [--warmup 3] [--workers 0,1,2] [--threads 1] [--stage finetune] [--mfu 0.5]

Writes benchmarks/results/input_throughput.json.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import io
import json
import math
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

if not __package__:  # run as a file: the repository root holds the benchmarks package
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks import common  # noqa: E402
from benchmarks.preprocess_throughput import synthetic_jpegs  # noqa: E402
from fgjax.data import pipeline  # noqa: E402
from fgjax.data.tokenizer import tokenizer_for  # noqa: E402
from fgjax.data.tokenizer_train import tiny_tokenizer  # noqa: E402
from fgjax.train.flops import peak_flops  # noqa: E402

RECIPE = Path(__file__).parents[1] / "configs" / "llava15.py"
# (name, configs/llava15.py argument): LLaVA-1.5's two stages and the study's trained-LLM
# pretraining
STAGES = {
    "align": "stage=pretrain,llm_frozen=True",
    "align_llm": "stage=pretrain,llm_frozen=False",
    "finetune": "stage=finetune",
}
TOPOLOGIES = ("v5p-32", "v5p-128")
CHIPS_PER_HOST = 4  # a v5p TPU VM: 4 chips, 208 vCPUs
VCPUS_PER_HOST = 208
V5P_PEAK = peak_flops("TPU v5p")  # bf16 FLOP/s per chip
WORDS = (
    "the a man woman dog cat red blue green small large two three on in near holding wearing "
    "street table field sign bus car tree sky window white black wooden sitting standing "
    "what where how many is are color left right picture image shown behind front"
).split()


def recipe_module():
    spec = importlib.util.spec_from_file_location("llava15", RECIPE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def sentence(rng, low: int, high: int) -> str:
    return " ".join(rng.choice(WORDS, size=int(rng.integers(low, high)))).capitalize()


def conversation(rng, index: int, stage: str) -> list[dict]:
    """LLaVA turns: one caption (pretraining) or 1-4 question/answer pairs (instruction tuning),
    with the row's number so that every row is distinct."""
    if stage != "finetune":
        return [
            {"from": "human", "value": "<image>\nGive a brief description of the image."},
            {"from": "gpt", "value": f"{sentence(rng, 8, 20)} ({index})."},
        ]
    turns = []
    for turn in range(int(rng.integers(1, 5))):
        question = f"{sentence(rng, 5, 12)}? ({index})" if turn == 0 else sentence(rng, 5, 12)
        turns += [
            {"from": "human", "value": ("<image>\n" if turn == 0 else "") + question + "?"},
            {"from": "gpt", "value": sentence(rng, 4, 40) + "."},
        ]
    return turns


def write_data(directory: Path, rows: int, stage: str = "finetune", seed: int = 0) -> dict:
    """`rows` LLaVA rows with their JPEGs in `directory`, and a tokenizer trained on their text."""
    rng = np.random.default_rng(seed)
    (directory / "images").mkdir(parents=True, exist_ok=True)
    table, pixels, sizes = [], [], []
    for i, jpeg in enumerate(synthetic_jpegs(rows, seed)):
        (directory / "images" / f"{i}.jpg").write_bytes(jpeg)
        with Image.open(io.BytesIO(jpeg)) as image:
            pixels.append(image.width * image.height)
        sizes.append(len(jpeg))
        table.append(
            {"id": str(i), "image": f"{i}.jpg", "conversations": conversation(rng, i, stage)}
        )
    (directory / "data.json").write_text(json.dumps(table))
    texts = [turn["value"] for row in table for turn in row["conversations"]]
    tokenizer = tiny_tokenizer("sentencepiece", vocab_size=4000, texts=texts)
    tokenizer.save(str(directory / "tokenizer"))
    return {
        "json": str(directory / "data.json"),
        "images": str(directory / "images"),
        "tokenizer": str(directory / "tokenizer"),
        "rows": rows,
        "stage": stage,
        "jpeg_mean_megapixels": round(float(np.mean(pixels)) / 1e6, 3),
        "jpeg_mean_kib": round(float(np.mean(sizes)) / 1024, 1),
    }


def recipe_config(stage: str, data: dict | None = None, batch: int | None = None):
    """configs/llava15.py for `stage`, its data and tokenizer those of `data` (if given)."""
    config = recipe_module().get_config(STAGES[stage])
    if data is not None:
        config.data.sources = [
            {"name": "llava_json", "path": data["json"], "image_root": data["images"]}
        ]
        config.data.tokenizer = data["tokenizer"]
    if batch is not None:
        config.batch_size = batch
    return config


def training_inputs(config, workers: int, threads: int | None):
    """The training stream as the trainer builds it (trainer.train's input steps)."""
    from fgjax.train import inputs as train_inputs
    from fgjax.train import schema, tasks

    tokenizer = tokenizer_for(config.data.tokenizer, image_token=True)
    config.model.image_token_id = tokenizer.token_to_id("<image>")
    config.data.worker_processes, config.data.num_threads = workers, threads
    config = schema.resolve(config)
    model_cfg = tasks.get(config.task).model_config(config)
    ds, transform, sources = train_inputs.train_dataset(
        config, model_cfg, tokenizer, pipeline.HostShard(0, 1)
    )
    return ds, transform, sources[0]


def digests(batch: dict) -> list[str]:
    """SHA-1 of every array of each example of a batch, in key order."""
    keys = sorted(batch)
    out = []
    for i in range(len(batch[keys[0]])):
        h = hashlib.sha1()
        for key in keys:
            h.update(np.ascontiguousarray(batch[key][i]).tobytes())
        out.append(h.hexdigest())
    return out


def run(
    data: dict, workers: int, threads: int | None, batch: int, batches: int, warmup: int
) -> dict:
    """Images/s of one setting over `batches` batches after `warmup`, the first epoch's
    example digests and its first batch. The first epoch's batches are kept (not hashed)
    while timing."""
    epoch = data["rows"] // batch
    if data["rows"] % batch or warmup + batches < epoch:
        raise ValueError(
            "--rows must be a multiple of --batch and at most (warmup + batches) * batch"
        )
    start = time.perf_counter()
    ds, _, _ = training_inputs(recipe_config(data["stage"], data, batch), workers, threads)
    it = iter(ds)
    first = next(it)
    startup = time.perf_counter() - start
    kept = [first] + [next(it) for _ in range(warmup - 1)]
    start = time.perf_counter()
    for _ in range(batches):
        batch_ = next(it)
        if len(kept) < epoch:
            kept.append(batch_)
    seconds = time.perf_counter() - start
    it.close()
    return {
        "images_per_s": batches * batch / seconds,
        "first_batch_s": startup,
        "epoch_digests": [d for b in kept[:epoch] for d in digests(b)],
        "first_batch": first,
    }


def throughput(data: dict, settings, *, batch: int, batches: int, warmup: int):
    """(one row per (workers, threads) setting, the first batch of each); raises unless every
    setting's first epoch is the first setting's, each row exactly once."""
    rows, firsts, reference = [], [], None
    for workers, threads in settings:
        result = run(data, workers, threads, batch, batches, warmup)
        firsts.append(result["first_batch"])
        epoch = result["epoch_digests"]
        if len(set(epoch)) != data["rows"]:
            raise AssertionError(
                f"{len(set(epoch))} distinct examples in an epoch of {data['rows']} rows"
            )
        if reference is None:
            reference = epoch
        elif epoch != reference:
            raise AssertionError(
                f"workers={workers}: the first epoch differs from the in-process one"
            )
        each = threads or (1 if workers else default_threads())
        cores = min(max(workers, 1) * each, os.cpu_count() or 1)
        rows.append(
            {
                "mode": f"{workers} worker process{'es' * (workers > 1)}"
                if workers
                else "threads in the trainer",
                "workers": workers,
                "threads_each": each,
                "images_per_s": round(result["images_per_s"], 1),
                "images_per_s_per_core": round(result["images_per_s"] / cores, 1),
                "first_batch_s": round(result["first_batch_s"], 1),
            }
        )
    return rows, firsts


def default_threads() -> int:
    return min(16, max(1, (os.cpu_count() or 1) // 4))  # pipeline.training_dataset's default


def transform_profile(data: dict, limit: int = 48) -> dict:
    """Milliseconds per row in one thread, no pipeline: reading and decoding the JPEG (the
    source), then the transform (letterbox + normalize + tokenize), and tokenizing alone."""
    _, transform, source = training_inputs(recipe_config(data["stage"], data, 1), 0, None)
    count = min(limit, len(source))
    start = time.perf_counter()
    records = [source[i] for i in range(count)]
    read = time.perf_counter() - start
    start = time.perf_counter()
    for record in records:
        transform(record)
    transformed = time.perf_counter() - start
    start = time.perf_counter()
    for record in records:
        transform.encoder.encode(record["conversations"], has_image=True)
    text = time.perf_counter() - start
    return {
        "read_and_decode_ms": round(1e3 * read / count, 2),
        "transform_ms": round(1e3 * transformed / count, 2),
        "tokenize_ms": round(1e3 * text / count, 3),
        "text_share_of_row": round(text / (read + transformed), 4),
        "tokenizer_pieces": transform.encoder.tokenizer.vocab_size,
    }


def consumption(mfu: float) -> list[dict]:
    """Images/s per v5p host each stage's step consumes at `mfu`, per topology."""
    import jax

    from fgjax.fit import parse_topology
    from fgjax.train import experiment

    out = []
    for stage in STAGES:
        config = recipe_config(stage)
        exp = experiment.build(config, devices=jax.devices()[:1])
        batch, length = int(config.batch_size), int(config.data.max_length)
        step_flops = exp.task.step_flops(exp.model_cfg, batch, length, exp.flags)
        for topology in TOPOLOGIES:
            chips = parse_topology(topology).devices
            step_s = step_flops / (mfu * V5P_PEAK * chips)
            out.append(
                {
                    "stage": stage,
                    "topology": topology,
                    "chips": chips,
                    "hosts": chips // CHIPS_PER_HOST,
                    "global_batch": batch,
                    "step_tflops": round(step_flops / 1e12),
                    "step_s": round(step_s, 2),
                    "images_per_s_per_host": round(batch / step_s / (chips // CHIPS_PER_HOST), 1),
                }
            )
    return out


def workers_needed(needed: float, per_worker: float) -> int:
    return max(1, math.ceil(needed / per_worker))


def main() -> None:
    cores = os.cpu_count() or 1
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=128, help="distinct rows (one epoch)")
    parser.add_argument("--batch", type=int, default=16, help="host batch")
    parser.add_argument("--batches", type=int, default=40, help="timed batches per setting")
    parser.add_argument("--warmup", type=int, default=3, help="batches before the timing")
    parser.add_argument("--workers", default=",".join(map(str, range(cores + 1))),
                        help="worker process counts (0: threads in the trainer)")  # fmt: skip
    parser.add_argument("--threads", type=int, default=None,
                        help="threads per worker (default 1) or, for 0 workers, in the trainer "
                        "(default: the pipeline's, a quarter of the cores)")  # fmt: skip
    parser.add_argument("--stage", choices=sorted(STAGES), default="finetune")
    parser.add_argument("--mfu", type=float, default=0.5)
    parser.add_argument("--data", default=None, help="keep the generated rows here")
    args = parser.parse_args()

    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as scratch:
        start = time.perf_counter()
        data = write_data(Path(args.data or scratch), args.rows, args.stage)
        print(
            f"{args.rows} rows written in {time.perf_counter() - start:.1f} s: JPEGs of "
            f"{data['jpeg_mean_megapixels']} MP, {data['jpeg_mean_kib']} KiB on average"
        )
        settings = [(int(w), args.threads) for w in args.workers.split(",")]
        if 0 in dict(settings) and args.threads is None and default_threads() < cores:
            settings.insert(1, (0, cores))  # also threads on every core
        rows, _ = throughput(
            data, settings, batch=args.batch, batches=args.batches, warmup=args.warmup
        )
        profile = transform_profile(data)
    needs = consumption(args.mfu)
    one = next((r for r in rows if r["workers"] == 1), None)
    per_worker = one["images_per_s"] if one else max(r["images_per_s_per_core"] for r in rows)
    for need in needs:
        need["workers_per_host"] = workers_needed(need["images_per_s_per_host"], per_worker)

    print(
        f"\nThe training input pipeline ({args.stage} rows, CLIP-L/336 letterbox, 2048 tokens), "
        f"{cores} cores, load average {load_before:.1f} before / {os.getloadavg()[0]:.1f} after; "
        f"all settings' first epochs identical, each of the {args.rows} rows once"
    )
    print(f"one row in one thread, no pipeline: {profile}")
    common.report(
        "input_throughput",
        rows,
        {
            "settings": vars(args),
            "jpeg_mean_megapixels": data["jpeg_mean_megapixels"],
            "jpeg_mean_kib": data["jpeg_mean_kib"],
            "load_average_1min": [round(load_before, 2), round(os.getloadavg()[0], 2)],
            "transform_profile": profile,
            "per_worker_images_per_s": per_worker,
            "consumption": needs,
            "assumptions": {
                "mfu": args.mfu,
                "peak_flops_per_chip": V5P_PEAK,
                "chips_per_host": CHIPS_PER_HOST,
                "step_flops": "experiment.build + task.step_flops (fgjax.fit's analytic FLOPs)",
            },
        },
    )
    print(
        f"\nConsumed per v5p host at {args.mfu:.0%} MFU ({V5P_PEAK / 1e12:.0f} TFLOP/s bf16 per "
        f"chip, {CHIPS_PER_HOST} chips per host; step FLOPs of configs/llava15.py at 2048 "
        f"tokens, as fgjax.fit reports), against {per_worker:.1f} images/s per worker process "
        "measured here:"
    )
    header = ("stage", "topology", "hosts", "global_batch", "step_s", "images_per_s_per_host",
              "workers_per_host")  # fmt: skip
    print("  ".join(header))
    for need in needs:
        print("  ".join(str(need[k]) for k in header))
    print(
        f"(a v5p host has {VCPUS_PER_HOST} vCPUs. Packed rows (config.data.packing) hold at most "
        "2048 // 576 = 3 images (576 tokens each) in the same 2048 tokens: at most 3x these rates)"
    )


if __name__ == "__main__":
    main()
