"""How hard are the study's five-way questions, and how far below its encoder's ceiling is a VLM?

For a finished miniature study (`python -m fgjax.study --workdir=study`), mines the five-way
questions with each snapshot of the contrastive model (base and upgraded), exactly as the
evaluation does (same test images, k = 5, seed 0), and reports per miner:
  - same_family: the fraction of negatives from the answer's family (random: 9 / 99);
  - ridge_5way / ridge_100way: a ridge classifier on each encoder's frozen features (pooled +
    patch mean), trained on `--train` labelled images, its regularization chosen on a
    validation split carved from them -- the encoder's own ceiling on those questions;
  - best_vlm_5way: the study's best variant on the questions the study used (from results.csv).

    .venv/bin/python -m benchmarks.study_ceiling [--workdir study] [--seed 0] [--train 4000]

Writes benchmarks/results/study_ceiling.json.
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks.common import report
from fgjax.data import images as image_ops
from fgjax.data import specimens
from fgjax.data.tokenizer import load_tokenizer
from fgjax.evaluate import choices, datasets, loading, negatives
from fgjax.evaluate.probe import split_train_val
from fgjax.study.stages import LEVELS

LAMBDAS = (0.1, 1.0, 10.0, 100.0, 1000.0)


def encoder_features(model, pixels: np.ndarray) -> np.ndarray:
    """uint8[N, H, W, 3] -> f32[N, 2 * width]: the image tower's pooled and patch-mean output."""
    cfg = image_ops.preprocess_config_for(model.cfg.image)
    run = jax.jit(lambda x: jnp.concatenate([(o := model.image(x)).pooled,
                                             o.last_hidden_state.mean(1)], -1))  # fmt: skip
    x = image_ops.normalize(pixels, cfg)
    return np.concatenate([np.asarray(run(x[i : i + 250])) for i in range(0, len(x), 250)])


def ridge(train_x, train_y, lam: float, num_classes: int) -> np.ndarray:
    """f32[D + 1, C]: one-vs-rest ridge regression weights (last row: bias)."""
    x = np.concatenate([train_x, np.ones((len(train_x), 1), np.float32)], 1)
    targets = np.eye(num_classes, dtype=np.float32)[train_y] - 1.0 / num_classes
    return np.linalg.solve(x.T @ x + lam * np.eye(x.shape[1]), x.T @ targets)


def ridge_scores(train_x, train_y, test_x, num_classes: int) -> tuple[np.ndarray, float]:
    """(f32[N, C] test scores, chosen lambda): lambda picked on a validation split carved from
    train as the linear probe carves its own (20% of every class)."""
    mean, std = train_x.mean(0), train_x.std(0) + 1e-6
    train_x, test_x = (train_x - mean) / std, (test_x - mean) / std
    fit, val = split_train_val(train_y, 0.2, seed=0)

    def val_accuracy(lam):
        w = ridge(train_x[fit], train_y[fit], lam, num_classes)
        return ((train_x[val] @ w[:-1] + w[-1]).argmax(1) == train_y[val]).mean()

    lam = max(LAMBDAS, key=val_accuracy)
    w = ridge(train_x, train_y, lam, num_classes)
    return test_x @ w[:-1] + w[-1], lam


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", default="study")
    parser.add_argument("--seed", type=int, default=0, help="which of the study's seeds")
    parser.add_argument("--train", type=int, default=4000, help="labelled images for the ridge")
    args = parser.parse_args()
    workdir = Path(args.workdir).absolute()
    study = json.loads((workdir / "study_config.json").read_text())
    root, base_step = workdir / f"seed{args.seed}", study["encoder"]["base_step"]
    sources = {"base": f"run:{root}/stage0/encoder@{base_step}",
               "upgraded": f"run:{root}/stage0/encoder"}  # fmt: skip
    tokenizer = str(workdir / "tokenizer")
    resolution, size = study["resolution"], study["eval"]["size"]

    test = datasets.from_spec({"name": "specimens", "size": size, "resolution": resolution})
    labels = test.labels()
    train = specimens.generate("train", args.train, resolution=resolution, seed=0)
    test_pixels = np.stack([test[i]["image"] for i in range(len(test))])
    family = np.asarray([c.family for c in specimens.taxonomy.classes()])
    models = {lvl: loading.load_contrastive(src, tokenizer=tokenizer).model
              for lvl, src in sources.items()}  # fmt: skip
    ceilings = {}
    for level, model in models.items():
        ceilings[level] = ridge_scores(
            encoder_features(model, train["image"]), train["label"],
            encoder_features(model, test_pixels), test.num_classes,
        )  # fmt: skip

    results = list(csv.DictReader((workdir / "results.csv").open()))
    best_vlm = max(float(r["fine_mc5"]) for r in results if int(r["seed"]) == args.seed)
    used = study["eval"].get("negatives_from", "upgraded")
    rows = []
    for miner_level in LEVELS["encoder"]:
        miner = negatives.ContrastiveMiner(
            models[miner_level], load_tokenizer(tokenizer), source=sources[miner_level],
            batch_size=50, progress=False,
        )  # fmt: skip
        options, answers = choices.draw_option_sets(miner.scores(test), labels, 5, seed=0)
        if miner_level == used:  # the questions the study asked: check they are the same
            saved = choices.option_file(root / "eval" / "options", test, 5, 0, miner.name)
            if saved.exists() and json.loads(saved.read_text())["options"] != options.tolist():
                raise RuntimeError(f"mined options differ from the study's {saved}")
        negs = np.stack([np.delete(o, a) for o, a in zip(options, answers)])
        row = {"mined_by": miner_level,
               "same_family": float((family[negs] == family[labels][:, None]).mean())}  # fmt: skip
        for level, (scores, lam) in ceilings.items():
            picked = np.take_along_axis(scores, options, 1).argmax(1)
            row[f"ridge_{level}_5way"] = float((picked == answers).mean())
            row[f"ridge_{level}_100way"] = float((scores.argmax(1) == labels).mean())
            row[f"ridge_{level}_lambda"] = lam
        row["best_vlm_5way"] = best_vlm / 100 if miner_level == used else None
        rows.append(row)
    report("study_ceiling", rows, {"workdir": str(workdir), "train_images": args.train})


if __name__ == "__main__":
    main()
