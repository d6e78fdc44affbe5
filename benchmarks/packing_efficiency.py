"""Packing efficiency (real tokens / row slots) and rows saved, packed vs one example per padded
row, on a SYNTHETIC length distribution shaped like LLaVA-665K (LLaVA-1.5's instruction mix).

The mixture (declared here, not measured on the real file; token counts as a Llama/Vicuna
tokenizer gives them, image rows with LLaVA-1.5's 576 image tokens on top of their text):

    component      share       text tokens                    image  total tokens
    short VQA      467/665     uniform 100-250                yes    676-826
    conversations  158/665     log-uniform 150-1400           yes    726-1976
    ShareGPT text  40/665      log-uniform 200-2000           no     200-2000

(the academic VQA/OCR/grounding sets; LLaVA-Instruct-158K's conversations, detail and
reasoning; the ~40K text-only ShareGPT rows). An example longer than a row is truncated to it,
as the encoder does. Packing is fgjax's training packer (fgjax/data/packing.py: grain's
first-fit or best-fit packers) with `bins` rows filled at once (config.data.packing.bins; the
per-process batch by default) and at most max_length // 576 images per row (the default of
config.data.packing.max_images_per_row; the encoder runs on every slot, so images_per_row /
max_images is the share of its work that is real).

    .venv/bin/python -m benchmarks.packing_efficiency [--samples 20000]

Writes benchmarks/results/packing_efficiency.json.
"""

from __future__ import annotations

import argparse

import grain
import numpy as np

from benchmarks.common import report
from fgjax.data.packing import Packing

IMAGE_TOKENS = 576
MIXTURE = {  # name: (share, (low, high) text tokens, distribution, has an image)
    "short VQA": (467 / 665, (100, 250), "uniform", True),
    "conversations": (158 / 665, (150, 1400), "log-uniform", True),
    "ShareGPT text": (40 / 665, (200, 2000), "log-uniform", False),
}
ROW_LENGTHS = (2048, 4096)
BINS = (8, 32, 128)
STRATEGIES = ("first_fit", "best_fit")


def sample_lengths(count: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(total tokens i64[count], has an image bool[count]) drawn from MIXTURE, in random order."""
    rng = np.random.default_rng(seed)
    names = list(MIXTURE)
    which = rng.choice(len(names), size=count, p=[MIXTURE[n][0] for n in names])
    tokens = np.zeros(count, np.int64)
    images = np.zeros(count, bool)
    for k, name in enumerate(names):
        _, (low, high), distribution, has_image = MIXTURE[name]
        picked = which == k
        if distribution == "uniform":
            text = rng.uniform(low, high, picked.sum())
        else:
            text = np.exp(rng.uniform(np.log(low), np.log(high), picked.sum()))
        tokens[picked] = np.round(text).astype(np.int64) + IMAGE_TOKENS * has_image
        images[picked] = has_image
    return tokens, images


def examples(tokens: np.ndarray, images: np.ndarray, length: int) -> list[dict]:
    """Unpadded examples as the training transform gives them (truncated to the row); the
    image is a 1-pixel stand-in of ones (packing reads only how many there are; unused slots
    are zeros)."""
    return [
        {
            "tokens": np.ones(min(int(t), length), np.int32),
            "loss_mask": np.ones(min(int(t), length), bool),
            "images": np.ones((int(i), 1, 1, 3), np.float32),
        }
        for t, i in zip(tokens, images)
    ]


def packed_rows(batch: list[dict], length: int, bins: int, strategy: str) -> tuple[int, int, int]:
    """(rows, real tokens, images) of `batch` packed as training packs it."""
    packing = Packing(length, max_images=length // IMAGE_TOKENS, bins=bins, strategy=strategy)
    rows = packing.rows(grain.MapDataset.source(batch).to_iter_dataset(), bins=bins, seed=0)
    count, used, images = 0, 0, 0
    for row in rows:
        count += 1
        used += int(row["input_mask"].sum())
        images += int(row["images"].any(axis=(1, 2, 3)).sum())
    return count, used, images


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=20_000)
    args = parser.parse_args()
    tokens, images = sample_lengths(args.samples)
    out = []
    for length in ROW_LENGTHS:
        batch = examples(tokens, images, length)
        real = int(np.minimum(tokens, length).sum())
        for strategy in STRATEGIES:
            for bins in BINS:
                rows, used, placed = packed_rows(batch, length, bins, strategy)
                assert used == real and placed == images.sum()  # each example whole, once
                out.append({
                    "row_length": length, "strategy": strategy, "bins": bins,
                    "max_images": length // IMAGE_TOKENS,
                    "padded_efficiency": real / (len(batch) * length),
                    "packed_efficiency": real / (rows * length),
                    "samples_per_row": len(batch) / rows,
                    "images_per_row": placed / rows,
                    "rows_saved": 1 - rows / len(batch),
                })  # fmt: skip
    mixture = {
        name: {"share": share, "text_tokens": list(text), "distribution": how, "image": image}
        for name, (share, text, how, image) in MIXTURE.items()
    }
    report(
        "packing_efficiency",
        out,
        {
            "synthetic": "LLaVA-665K-shaped mixture declared in the script, not the real file",
            "mixture": mixture,
            "image_tokens": IMAGE_TOKENS,
            "samples": args.samples,
            "truncated_at_2048": int((tokens > 2048).sum()),
            "mean_tokens": float(tokens.mean()),
        },
    )


if __name__ == "__main__":
    main()
