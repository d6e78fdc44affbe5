"""The fit check's table for the README: per-device memory of the real-scale training recipes
on TPU topologies, each compiled ahead of time by `python -m fgjax.fit` (libtpu, no TPU and
no weights needed), one subprocess per recipe.

    pip install -e '.[tpu]'    # libtpu: compiles for a named topology on a CPU machine
    python -m benchmarks.fit_table                        # every recipe below
    python -m benchmarks.fit_table --only=qwen3,gemma2    # those whose name contains a word

Writes benchmarks/results/fit_<name>.json per recipe and prints the markdown table (with the
libtpu version, date and commit) that the README shows.
"""

from __future__ import annotations

import argparse
import datetime
import importlib.metadata
import json
import subprocess
import sys
from pathlib import Path

from benchmarks.common import RESULTS_DIR

ROOT = Path(__file__).parents[1]
LLAVA = "configs/llava15.py:stage=pretrain"
# (name, config argument, topology, what the row says)
RECIPES = [
    ("llava15_v5p-32_align", f"{LLAVA},llm_frozen=True", "v5p-32",
     "LLaVA-1.5-7B, align (LLM frozen)"),
    ("llava15_v5p-32_align_llm", f"{LLAVA},llm_frozen=False", "v5p-32",
     "LLaVA-1.5-7B, align_llm (LLM trained)"),
    ("llava15_v5p-128_align", f"{LLAVA},llm_frozen=True", "v5p-128",
     "LLaVA-1.5-7B, align (LLM frozen)"),
    ("llava15_v5p-128_align_llm", f"{LLAVA},llm_frozen=False", "v5p-128",
     "LLaVA-1.5-7B, align_llm (LLM trained)"),
    ("llava15_qwen3_8b_v5p-32_align_llm", f"{LLAVA},llm_frozen=False,llm=qwen3_8b", "v5p-32",
     "CLIP-L/336 + Qwen3-8B, align_llm"),
    ("llava15_gemma2_9b_v5p-32_align_llm", f"{LLAVA},llm_frozen=False,llm=gemma2_9b", "v5p-32",
     "CLIP-L/336 + Gemma 2 9B, align_llm"),
    ("llava15_gemma2_9b_loss64_v5p-32_align_llm",
     f"{LLAVA},llm_frozen=False,llm=gemma2_9b,loss_tokens=64", "v5p-32",
     "CLIP-L/336 + Gemma 2 9B, align_llm, LM head at 64 loss positions"),
    ("llava15_dinov3_qwen25_v5p-32_align_llm",
     f"{LLAVA},llm_frozen=False,encoder=dinov3_l16,llm=qwen25_7b", "v5p-32",
     "DINOv3-L/16 + Qwen2.5-7B, align_llm"),
    ("gemma3_12b_v5p-32_finetune", "configs/finetune_vlm.py:vlm=gemma3_12b", "v5p-32",
     "Gemma 3 12B VLM (SigLIP 896 px), finetune on LLaVA-665K, batch 128"),
    ("qwen25vl_7b_v5p-32_finetune", "configs/finetune_vlm.py:vlm=qwen25vl_7b", "v5p-32",
     "Qwen2.5-VL-7B (448 px, 256 image tokens), finetune on LLaVA-665K, batch 128"),
]  # fmt: skip


def run(name: str, config: str, topology: str) -> dict:
    out = RESULTS_DIR / f"fit_{name}.json"
    command = [sys.executable, "-m", "fgjax.fit", f"--config={config}",
               f"--topology={topology}", f"--json_out={out}"]  # fmt: skip
    print("$", " ".join(command), flush=True)
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{name} failed:\n{done.stderr[-3000:]}")
    return json.loads(out.read_text())


def table(rows: list[tuple[str, str, dict]]) -> str:
    lines = [
        "| recipe | target | chips | parameters | optimizer | activations + temporaries "
        "| total (GiB) | fits |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for label, topology, r in rows:
        lines.append(
            f"| {label} | {topology} | {r['devices']} | {r['params_gib']:.2f} | "
            f"{r['optimizer_gib']:.2f} | {r['activations_and_temporaries_gib']:.2f} | "
            f"{r['total_gib']:.2f} | {'yes' if r['fits'] else 'NO'} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default="", help="comma-separated words; run recipes with any")
    args = parser.parse_args()
    words = [w for w in args.only.split(",") if w]
    chosen = [r for r in RECIPES if not words or any(w in r[0] for w in words)]
    RESULTS_DIR.mkdir(exist_ok=True)
    rows = [(label, topology, run(name, config, topology))
            for name, config, topology, label in chosen]  # fmt: skip
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT,
                            capture_output=True, text=True).stdout.strip()  # fmt: skip
    print()
    print(table(rows))
    print(f"\nlibtpu {importlib.metadata.version('libtpu')}, {datetime.date.today()}, {commit}")


if __name__ == "__main__":
    main()
