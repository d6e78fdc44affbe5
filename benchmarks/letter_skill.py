"""How many steps does a decoder of the study's size need to answer multiple choice by letter?

The pilot behind the miniature study's declared primary read-out (configs/study/mini.py). The
task is the letter skill alone, in text, with nothing else to learn: a target word, then five
lettered options of which one is that word, then the answer letter ("Which option is moss?
A. dew B. moss ... -> B"). A decoder must find the matching option and copy the letter before
it (an induction-style circuit). The study's LLM (2 blocks, width 128) is trained on fresh
batches of 64 questions with AdamW and a cosine schedule, the loss on the answer letter only
(the densest signal there is) or on every token (as a language model trains); accuracy is on
512 held-out questions (chance 20%).

    .venv/bin/python -m benchmarks.letter_skill [--steps 1500] [--lr 1e-3]

Writes benchmarks/results/letter_skill.json.
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
from fgjax import models
from fgjax.models import presets

VOCAB, OPTIONS, WORDS = 128, 5, range(10, 90)
QUESTION, NEWLINE, DOT, ANSWER = 100, 101, 102, 103  # token ids; letters are 1..5


def questions(rng: np.random.Generator, n: int) -> np.ndarray:
    """i32[n, 3 + 4 * OPTIONS]: QUESTION word (NEWLINE letter DOT word)* NEWLINE ANSWER letter."""
    rows = []
    for _ in range(n):
        words = rng.choice(np.asarray(WORDS), size=OPTIONS, replace=False)
        answer = int(rng.integers(OPTIONS))
        row = [QUESTION, int(words[answer])]
        for i, word in enumerate(words):
            row += [NEWLINE, 1 + i, DOT, int(word)]
        rows.append(row + [NEWLINE, ANSWER, 1 + answer])
    return np.asarray(rows, np.int32)


def train(steps: int, lr: float, loss_on: str, every: int, seed: int = 0) -> list[dict]:
    cfg = presets.decoder("tiny_llama", vocab_size=VOCAB, width=128, depth=2, num_heads=4,
                          num_kv_heads=2, mlp_dim=256)  # fmt: skip
    model = models.build(cfg, seed=seed)
    schedule = optax.warmup_cosine_decay_schedule(0.0, lr, 30, steps)
    optimizer = nnx.Optimizer(model, optax.adamw(schedule, weight_decay=1e-4), wrt=nnx.Param)

    def logits_of(m, x):
        out = m(x[:, :-1])
        return (out[0] if isinstance(out, tuple) else out).astype(jnp.float32)

    @nnx.jit
    def step(m, opt, x):
        def loss_fn(m):
            logp = jax.nn.log_softmax(logits_of(m, x))
            ll = jnp.take_along_axis(logp, x[:, 1:, None], -1)[..., 0]
            return -(ll[:, -1] if loss_on == "letter" else ll).mean()

        loss, grads = nnx.value_and_grad(loss_fn)(m)
        opt.update(m, grads)
        return loss

    @nnx.jit
    def accuracy(m, x):
        letters = logits_of(m, x)[:, -1, 1 : 1 + OPTIONS]
        return (jnp.argmax(letters, -1) + 1 == x[:, -1]).mean()

    rng = np.random.default_rng(seed)
    test = jnp.asarray(questions(np.random.default_rng(seed + 1), 512))
    rows, start = [], time.perf_counter()
    for i in range(1, steps + 1):
        step(model, optimizer, jnp.asarray(questions(rng, 64)))
        if i % every == 0:
            rows.append({"loss_on": loss_on, "step": i, "accuracy": float(accuracy(model, test)),
                         "seconds": round(time.perf_counter() - start, 1)})  # fmt: skip
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--every", type=int, default=300)
    args = parser.parse_args()
    rows = []
    for loss_on in ("letter", "every token"):
        rows += train(args.steps, args.lr, loss_on, args.every)
    report("letter_skill", rows, {"args": vars(args), "chance": 1 / OPTIONS})


if __name__ == "__main__":
    main()
