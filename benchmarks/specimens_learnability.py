"""Are the specimens' fine cues learnable by a tiny ViT in minutes on a CPU?

Trains the project's ViT (patch 8, mean-pooled tokens + a linear head) on fine labels for a
fixed number of steps, at two sizes, and compares test accuracy on fine classes and on
families (family = the family of the predicted class) with a raw-pixel softmax probe and chance.

    .venv/bin/python -m benchmarks.specimens_learnability [--resolution 32] [--steps 1500]

Writes benchmarks/results/specimens_learnability_<resolution>px.json.
"""

from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from benchmarks.common import report
from fgjax.data import specimens
from fgjax.models import presets
from fgjax.models.vit import VisionEncoder

ENCODERS = {  # name -> VitConfig overrides of the tiny_siglip preset
    "vit_w32_d2": dict(width=32, depth=2, num_heads=4, mlp_dim=64),
    "vit_w96_d4": dict(width=96, depth=4, num_heads=4, mlp_dim=192),
}


class Classifier(nnx.Module):
    def __init__(self, overrides: dict, resolution: int, num_classes: int, rngs: nnx.Rngs):
        cfg = presets.encoder("tiny_siglip", image_size=resolution, pool=None, **overrides)
        self.encoder = VisionEncoder(cfg, rngs=rngs)
        self.head = nnx.Linear(cfg.width, num_classes, rngs=rngs)

    def __call__(self, images):
        """images: f32[B, R, R, 3] in [-1, 1] -> logits f32[B, num_classes]."""
        return self.head(self.encoder(images).last_hidden_state.mean(axis=1))


def _normalize(images: np.ndarray) -> jax.Array:
    return jnp.asarray(images, jnp.float32) / 127.5 - 1.0


def train_and_eval(name, data, resolution, steps, batch_size=128, seed=0):
    model = Classifier(ENCODERS[name], resolution, 100, nnx.Rngs(seed))
    optimizer = nnx.Optimizer(model, optax.adamw(1e-3, weight_decay=1e-4), wrt=nnx.Param)

    @nnx.jit
    def step(model, optimizer, images, labels):
        def loss_fn(model):
            logits = model(images)
            return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()

        loss, grads = nnx.value_and_grad(loss_fn)(model)
        optimizer.update(model, grads)
        return loss

    predict = nnx.jit(lambda model, images: model(images).argmax(-1))
    train_images, train_labels = data["train"]["image"], data["train"]["label"]
    rng = np.random.default_rng(seed)
    start = time.perf_counter()
    for _ in range(steps):
        batch = rng.integers(len(train_labels), size=batch_size)
        step(model, optimizer, _normalize(train_images[batch]), jnp.asarray(train_labels[batch]))
    seconds = time.perf_counter() - start
    test = data["test"]
    preds = np.concatenate(
        [np.asarray(predict(model, _normalize(test["image"][i : i + 500])))
         for i in range(0, len(test["label"]), 500)]
    )  # fmt: skip
    families = np.array([c.family for c in specimens.classes()])
    return dict(
        steps=steps,
        seconds=seconds,
        fine=float((preds == test["label"]).mean()),
        family=float((families[preds] == test["family"]).mean()),
    )


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--resolution", type=int, default=32)
    parser.add_argument("--train", type=int, default=20_000)
    parser.add_argument("--test", type=int, default=2_000)
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--models", default=",".join(ENCODERS))
    args = parser.parse_args()
    data = {
        split: specimens.generate(split, n, args.resolution)
        for split, n in (("train", args.train), ("test", args.test))
    }
    names = args.models.split(",")
    rows = [{"model": "chance", "steps": 0, "seconds": 0.0, "fine": 0.01, "family": 0.1}]
    for name in names:
        rows.append({"model": name, **train_and_eval(name, data, args.resolution, args.steps)})
    report(f"specimens_learnability_{args.resolution}px", rows, {"args": vars(args)})


if __name__ == "__main__":
    main()
