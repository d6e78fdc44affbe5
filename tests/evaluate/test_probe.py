"""Linear probes on planted features: class clusters are recovered about as well as the Bayes
rule, labels carrying no signal stay at chance, and the weight decay is chosen on a validation
split carved from the train data (the test data is never an input of the choice)."""

from __future__ import annotations

import numpy as np
import pytest

from fgjax.evaluate import probe

CLASSES, DIM = 6, 24


def clusters(n: int, seed: int, spread: float = 1.0):
    centers = np.random.default_rng(0).normal(size=(CLASSES, DIM)) * 0.5
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, CLASSES, n)
    return (
        (centers[labels] + spread * rng.normal(size=(n, DIM))).astype(np.float32),
        labels,
        centers,
    )


def test_probe_recovers_clusters_and_stays_at_chance_on_shuffled_labels():
    x, y, centers = clusters(360, seed=1)
    test_x, test_y, _ = clusters(600, seed=2)
    predict, choice = probe.train_probe(x, y, CLASSES, probe.ProbeConfig(steps=150))
    accuracy = np.mean(predict(test_x) == test_y)
    nearest = np.argmin(((test_x[:, None] - centers[None]) ** 2).sum(-1), axis=1)
    bayes = np.mean(nearest == test_y)  # equal isotropic clusters: nearest center is optimal
    assert accuracy >= bayes - 0.05 and bayes > 0.6, (accuracy, bayes)
    assert choice["fit_examples"] + choice["val_examples"] == 360
    shuffled = np.random.default_rng(3).permutation(y)
    predict, _ = probe.train_probe(x, shuffled, CLASSES, probe.ProbeConfig(steps=150))
    assert np.mean(predict(test_x) == test_y) < 1 / CLASSES + 0.08


def test_weight_decay_is_chosen_on_the_validation_split():
    # few examples, many noise dimensions: only strong regularization generalizes
    rng = np.random.default_rng(4)
    y = rng.integers(0, 2, 100)
    x = rng.normal(size=(100, 60)).astype(np.float32)
    x[:, 0] += 2 * y - 1
    config = probe.ProbeConfig(weight_decays=(1e-5, 1e-2, 1.0), steps=200)
    _, choice = probe.train_probe(x, y, 2, config)
    val = choice["val_accuracy"]
    assert choice["weight_decay"] == max(config.weight_decays, key=lambda d: (val[f"{d:g}"], d))
    assert val["1"] > val["1e-05"], val


def test_validation_split_is_stratified_disjoint_and_complete():
    labels = np.repeat(np.arange(5), [10, 10, 10, 3, 1])
    fit, val = probe.split_train_val(labels, 0.2, seed=0)
    assert set(fit).isdisjoint(val) and sorted([*fit, *val]) == list(range(len(labels)))
    assert np.bincount(labels[val], minlength=5).tolist() == [2, 2, 2, 1, 0]
    with pytest.raises(ValueError, match="too small"):
        probe.split_train_val(np.arange(4), 0.2, seed=0)
