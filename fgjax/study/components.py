"""Stage-0 steps that are not training runs: the data filter's selection and the probe ceilings.

select_pool: DFN's recipe in miniature. A filtering network (the study's contrastive model
architecture, trained on a small curated set of expert-captioned pairs from another split)
scores every image-caption pair of the raw training pool by its image-text cosine; the top
`keep_fraction` are kept (`kept.json`, example indices). No label is read: the filter only
sees pixels and the alt-text, as DFN's network only sees web pairs.

ceiling: a ridge classifier on each encoder's frozen features (pooled + patch mean), trained on
labelled training images with its regularization chosen on a validation split carved from them
(never on test), then asked the study's five-way questions (the likeliest of the five options)
and the 100-way question: what the encoder's features know, the "specialized classifier" a VLM
is compared with. Written to `ceiling.json`.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from fgjax.data import images as image_ops
from fgjax.data import specimens
from fgjax.data.specimens_source import SpecimensSource
from fgjax.data.tokenizer import caption_ids, load_tokenizer
from fgjax.evaluate import choices, datasets, loading, negatives
from fgjax.evaluate.probe import split_train_val
from fgjax.evaluate.prompts import pad_prompts
from fgjax.storage import write_atomic

LAMBDAS = (0.1, 1.0, 10.0, 100.0, 1000.0)
BATCH = 250


def pair_scores(model, tokenizer, pixels: np.ndarray, captions: list[str]) -> np.ndarray:
    """f32[N]: the cosine of each image u8[N, H, W, 3] with its own caption."""
    cfg = image_ops.preprocess_config_for(model.cfg.image)
    limit = model.cfg.text.max_length
    embed = jax.jit(lambda x, t, m: jnp.sum(model.embed_images(x) * model.embed_texts(t, m), -1))
    out = []
    for start in range(0, len(captions), BATCH):
        part = slice(start, start + BATCH)
        ids = [np.asarray(caption_ids(tokenizer, c, max_length=limit)[:limit]) for c in captions[part]]
        tokens, mask = pad_prompts(ids, bucket=limit)
        out.append(np.asarray(embed(image_ops.normalize(pixels[part], cfg), tokens, mask)))
    return np.concatenate(out)


def select_pool(config, workdir: Path) -> dict:
    """Scores the pool with the filtering network; writes kept.json; returns a summary."""
    loaded = loading.load_contrastive(config.model, tokenizer=config.tokenizer)
    spec = dict(config.pool)
    pool = SpecimensSource("captions", spec["split"] if "split" in spec else "train",
                           int(spec["size"]), int(spec["resolution"]), int(spec["seed"]))  # fmt: skip
    scores = pair_scores(loaded.model, loaded.tokenizer, pool.data["image"], pool.data["caption"])
    keep = int(round(float(config.keep_fraction) * len(scores)))
    kept = np.sort(np.argsort(-scores, kind="stable")[:keep])
    # diagnostics only (the selection never reads them): which caption kinds survived
    kinds = np.asarray(pool.data["caption_kind"])
    summary = {
        "pool": len(scores), "kept": keep,
        "kept_by_caption_kind": {k: int((kinds[kept] == k).sum()) for k in specimens.CAPTION_KINDS},
        "pool_by_caption_kind": {k: int((kinds == k).sum()) for k in specimens.CAPTION_KINDS},
    }  # fmt: skip
    logging.info("data filter: %s", summary)
    write_atomic(workdir / "filter_summary.json", json.dumps(summary))
    write_atomic(workdir / "kept.json", json.dumps(kept.tolist()))
    return summary


def encoder_features(model, pixels: np.ndarray) -> np.ndarray:
    """u8[N, H, W, 3] -> f32[N, 2 * width]: the image tower's pooled and patch-mean output."""
    cfg = image_ops.preprocess_config_for(model.cfg.image)
    run = jax.jit(lambda x: jnp.concatenate([(o := model.image(x)).pooled,
                                             o.last_hidden_state.mean(1)], -1))  # fmt: skip
    x = image_ops.normalize(pixels, cfg)
    return np.concatenate([np.asarray(run(x[i : i + BATCH])) for i in range(0, len(x), BATCH)])


def ridge(train_x, train_y, lam: float, num_classes: int) -> np.ndarray:
    """f32[D + 1, C]: one-vs-rest ridge regression weights (last row: bias)."""
    x = np.concatenate([train_x, np.ones((len(train_x), 1), np.float32)], 1)
    targets = np.eye(num_classes, dtype=np.float32)[train_y] - 1.0 / num_classes
    return np.linalg.solve(x.T @ x + lam * np.eye(x.shape[1]), x.T @ targets)


def ridge_scores(train_x, train_y, test_x, num_classes: int) -> tuple[np.ndarray, float]:
    """(f32[N, C] test scores, chosen lambda): lambda picked on a validation split carved from
    train (20% of every class)."""
    mean, std = train_x.mean(0), train_x.std(0) + 1e-6
    train_x, test_x = (train_x - mean) / std, (test_x - mean) / std
    fit, val = split_train_val(train_y, 0.2, seed=0)

    def val_accuracy(lam):
        w = ridge(train_x[fit], train_y[fit], lam, num_classes)
        return ((train_x[val] @ w[:-1] + w[-1]).argmax(1) == train_y[val]).mean()

    lam = max(LAMBDAS, key=val_accuracy)
    w = ridge(train_x, train_y, lam, num_classes)
    return test_x @ w[:-1] + w[-1], lam


def ceiling(config, workdir: Path) -> dict:
    """Per encoder: probe5 (0/1 per test image on the study's five-way questions), probe100
    (accuracy), the chosen lambda; written to ceiling.json."""
    test = datasets.from_spec(dict(config.dataset))
    sets = choices.option_sets(test, negatives.TaxonomyMiner(), 5, 0, config.options_dir)
    train = specimens.generate("train", int(config.train_size), resolution=int(config.resolution))
    pixels = np.stack([np.asarray(test[i]["image"]) for i in range(len(test))])
    labels, out = test.labels(), {}
    load_tokenizer(config.tokenizer)  # fail early on a missing tokenizer
    for level, source in config.encoders.items():
        model = loading.load_contrastive(source, tokenizer=config.tokenizer).model
        scores, lam = ridge_scores(encoder_features(model, train["image"]), train["label"],
                                   encoder_features(model, pixels), test.num_classes)  # fmt: skip
        picked = np.take_along_axis(scores, sets.options, 1).argmax(1)
        out[level] = {
            "probe5": (picked == sets.answers).astype(int).tolist(),
            "probe100": float((scores.argmax(1) == labels).mean()),
            "lambda": lam,
        }
        logging.info("ceiling %s: five-way %.3f, 100-way %.3f", level,
                     np.mean(out[level]["probe5"]), out[level]["probe100"])  # fmt: skip
    write_atomic(workdir / "ceiling.json", json.dumps(out))
    return out
