"""Linear probes: multinomial logistic regression on frozen features (the "specialized
classifier" baseline of Zhang et al. 2024).

Features (`FEATURES`): the vision tower's patch mean and pooled (CLS / attention-pool) output,
and the decoder's hidden state at the prompt's last token and averaged over its tokens (the
prompt being image + question in the chat template).

Fitting: features are standardized with the statistics of the fitting part; a validation part
(`val_fraction` of the train split, seeded, stratified by class) chooses the L2 weight decay
among `weight_decays` (ties: the stronger); the probe is then refit on the whole train split
with that weight decay and evaluated once on the test split. The test split never influences
any choice. Optimization: full-batch L-BFGS (scipy, on a jitted JAX loss and gradient) of the
mean cross-entropy plus wd/2 * |W|^2, weight decays from strong to weak, each warm-starting
the next.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax
import scipy.optimize

from fgjax.evaluate import datasets, inference, prompts, protocols
from fgjax.evaluate.evaluator import Evaluator
from fgjax.evaluate.report import Result

FEATURES = ("vision_patch_mean", "vision_cls", "vlm_last", "vlm_mean")


@dataclasses.dataclass(frozen=True)
class ProbeConfig:
    features: tuple[str, ...] = FEATURES
    question: str = prompts.QUESTION  # the prompt whose hidden states the vlm_* features read
    vlm_layer: int = -1  # -1: after the final norm; k: the k-th hidden state
    val_fraction: float = 0.2
    weight_decays: tuple[float, ...] = (1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1.0)
    steps: int = 300  # L-BFGS iterations at most
    seed: int = 0


def extract(evaluator: Evaluator, dataset, cfg: ProbeConfig, desc: str) -> dict[str, np.ndarray]:
    """{feature name: f32[N, D]} for the requested features, plus "label", in dataset order."""
    unknown = set(cfg.features) - set(FEATURES)
    if unknown:
        raise ValueError(f"unknown probe features {sorted(unknown)}; choose from {FEATURES}")
    want_vision = any(f.startswith("vision_") for f in cfg.features)
    want_vlm = any(f.startswith("vlm_") for f in cfg.features)
    prompt = evaluator.prompter.prompt(cfg.question)

    def compute(batch):
        out = {}
        images = evaluator.images(batch)
        if want_vision:
            vision = evaluator.call(inference.vision_features, images)
            out.update(vision_patch_mean=vision["patch_mean"], vision_cls=vision["cls"])
        if want_vlm:
            hidden = evaluator.call(
                inference.vlm_features, batch["tokens"], batch["mask"], images, layer=cfg.vlm_layer
            )
            out.update(vlm_last=hidden["last"], vlm_mean=hidden["mean"])
        return {k: v for k, v in out.items() if k in cfg.features}

    build = (lambda idx: [prompt] * len(idx)) if want_vlm else None
    return evaluator.run(dataset, compute, build, desc=desc)


def split_train_val(labels: np.ndarray, val_fraction: float, seed: int):
    """(fit indices, val indices): a seeded split with `val_fraction` of every class (at least
    one example of each class with two or more) in validation."""
    rng = np.random.default_rng(seed)
    fit, val = [], []
    for label in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == label))
        n_val = int(round(len(members) * val_fraction))
        n_val = min(max(n_val, 1 if len(members) > 1 else 0), len(members) - 1)
        val.extend(members[:n_val])
        fit.extend(members[n_val:])
    if not val:
        raise ValueError("the train split is too small to carve a validation split from")
    return np.sort(fit), np.sort(val)


def _scaler(train: np.ndarray):
    """x -> (x - mean) / std with the statistics of `train`."""
    mean, std = train.mean(axis=0), train.std(axis=0) + 1e-6
    return lambda x: (x - mean) / std


@jax.jit
def _loss_and_grad(flat, x, y, weight_decay):
    """Mean cross-entropy + wd/2 |W|^2 of a probe packed as flat = [W.ravel(), b]."""

    def loss(flat):
        w = flat[: x.shape[1] * y.shape[1]].reshape(x.shape[1], y.shape[1])
        logits = x @ w + flat[w.size :]
        return optax.softmax_cross_entropy(logits, y).mean() + 0.5 * weight_decay * jnp.sum(w**2)

    return jax.value_and_grad(loss)(flat)


def fit_logistic(x, y, num_classes: int, weight_decay: float, steps: int, init=None):
    """Multinomial logistic regression by L-BFGS (scipy driving a jitted loss and gradient).

    x: f32[N, D]; y: i32[N] -> (w f32[D, C], b f32[C]); init: a previous solution to start from.
    """
    dim = x.shape[1]
    x, onehot = jnp.asarray(x, jnp.float32), jax.nn.one_hot(y, num_classes)
    start = (
        np.zeros(dim * num_classes + num_classes)
        if init is None
        else np.concatenate([init[0].ravel(), init[1]])
    )

    def fun(flat):
        value, grad = _loss_and_grad(jnp.asarray(flat, jnp.float32), x, onehot, weight_decay)
        return float(value), np.asarray(grad, np.float64)

    solution = scipy.optimize.minimize(
        fun, start, jac=True, method="L-BFGS-B", options={"maxiter": steps}
    ).x
    return solution[: dim * num_classes].reshape(dim, num_classes), solution[dim * num_classes :]


def _accuracy(x, y, w, b) -> float:
    return float(np.mean(np.argmax(x @ w + b, axis=-1) == y))


def train_probe(train_x, train_y, num_classes: int, cfg: ProbeConfig):
    """Chooses the weight decay on a validation split of the train data, refits on all of it.

    Returns (predict: f32[M, D] -> i32[M], {"weight_decay", "val_accuracy": {wd: acc}}).
    """
    fit_idx, val_idx = split_train_val(train_y, cfg.val_fraction, cfg.seed)
    scale = _scaler(train_x[fit_idx])
    fit_x, val_x = scale(train_x[fit_idx]), scale(train_x[val_idx])
    decays = sorted(cfg.weight_decays, reverse=True)  # strong to weak, each warm-starting the next
    val_acc, solution = {}, None
    for decay in decays:
        solution = fit_logistic(fit_x, train_y[fit_idx], num_classes, decay, cfg.steps, solution)
        val_acc[decay] = _accuracy(val_x, train_y[val_idx], *solution)
    best = max(decays, key=lambda d: (val_acc[d], d))
    scale = _scaler(train_x)
    w, b = fit_logistic(scale(train_x), train_y, num_classes, best, cfg.steps)

    def predict(x):
        return np.argmax(scale(x) @ w + b, axis=-1)

    choice = {
        "weight_decay": float(best),
        "val_accuracy": {f"{d:g}": a for d, a in val_acc.items()},
        "fit_examples": len(fit_idx),
        "val_examples": len(val_idx),
    }
    return predict, choice


def evaluate(
    evaluator: Evaluator, train_set, test_set, cfg: ProbeConfig = ProbeConfig()
) -> list[Result]:
    """One Result per feature ("probe_<feature>")."""
    if tuple(train_set.class_names) != tuple(test_set.class_names):
        raise ValueError("the probe's train and test splits have different class names")
    train = extract(evaluator, train_set, cfg, "probe features (train)")
    test = extract(evaluator, test_set, cfg, "probe features (test)")
    ids, names = test_set.ids(), test_set.class_names
    results = []
    for feature in cfg.features:
        predict, choice = train_probe(
            train[feature].astype(np.float32), train["label"], len(names), cfg
        )
        predictions = predict(test[feature].astype(np.float32))
        labels = test["label"]
        correct = predictions == labels
        records = [
            {"id": ids[i], "label": names[labels[i]], "prediction": names[predictions[i]],
             "correct": bool(correct[i])}
            for i in range(len(labels))
        ]  # fmt: skip
        metrics = {"accuracy": float(correct.mean()), "weight_decay": choice["weight_decay"]}
        info = {
            "feature": feature,
            "train_split": train_set.split,
            "dim": int(train[feature].shape[1]),
            **choice,
        }
        results.append(Result(
            f"probe_{feature}", test_set.name, metrics, records, labels, predictions, correct,
            tuple(names), info,
        ))  # fmt: skip
    return results


def _run(context, cfg: ProbeConfig, dataset, spec) -> list[Result]:
    train = datasets.from_spec(spec, split="train")
    return evaluate(context.evaluator, train, dataset, cfg)


protocols.register(protocols.Protocol("probe", ProbeConfig, _run))
