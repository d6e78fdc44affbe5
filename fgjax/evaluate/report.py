"""Results of one protocol on one dataset, and the files they are written to.

    DIR/metrics.json       {"protocol", "dataset", "num_examples", "metrics": {...}, "info": {...}}
    DIR/predictions.jsonl  one line per example: id, label, prediction, correct, scores, ...
    DIR/per_class.json     accuracy and count of every class (classification protocols)
    DIR/confusion.json     the most confused (true, predicted) pairs

Scalars also go to TensorBoard (a clu metric writer) as "<dataset>/<protocol>/<metric>".
Only process 0 writes.
"""

from __future__ import annotations

import collections
import dataclasses
import json
from pathlib import Path

import jax
import numpy as np

from fgjax import storage


@dataclasses.dataclass
class Result:
    """protocol: its name; metrics: flat {name: number}; records: one JSON-ready dict per
    example; for classification, labels / predictions (i32[N], -1 where the answer named no
    class) / correct (bool[N]) and class_names give per-class accuracy and confusions; info:
    other facts worth keeping (prompt, option file, negative miner, chosen hyperparameters)."""

    protocol: str
    dataset: str
    metrics: dict[str, float]
    records: list[dict]
    labels: np.ndarray | None = None
    predictions: np.ndarray | None = None
    correct: np.ndarray | None = None
    class_names: tuple[str, ...] | None = None
    info: dict = dataclasses.field(default_factory=dict)

    def __post_init__(self):
        if self.correct is not None:
            self.metrics.setdefault("num_examples", len(self.correct))
            self.metrics["balanced_accuracy"] = float(
                np.mean([c["accuracy"] for c in self.per_class() if c["count"]])
            )

    def per_class(self) -> list[dict]:
        """[{"class", "count", "accuracy"}] in class order (accuracy None when never seen)."""
        counts = np.bincount(self.labels, minlength=len(self.class_names))
        hits = np.bincount(self.labels, weights=self.correct, minlength=len(self.class_names))
        return [
            {
                "class": name,
                "count": int(count),
                "accuracy": float(hit / count) if count else None,
            }
            for name, count, hit in zip(self.class_names, counts, hits)
        ]

    def confusions(self, top: int = 20) -> list[dict]:
        """The `top` most frequent wrong (true, predicted) pairs, with the share of the true
        class's examples they take."""
        counts = np.bincount(self.labels, minlength=len(self.class_names))
        pairs = collections.Counter(
            (int(t), int(p))
            for t, p, ok in zip(self.labels, self.predictions, self.correct)
            if not ok and p >= 0
        )
        ranked = sorted(pairs.items(), key=lambda item: (-item[1], item[0]))[:top]
        return [
            {
                "true": self.class_names[t],
                "predicted": self.class_names[p],
                "count": n,
                "share_of_true": n / counts[t],
            }
            for (t, p), n in ranked
        ]


def write(result: Result, directory: str | Path, writer=None, step: int = 0) -> None:
    """Writes the files of the module docstring under `directory`, and the scalars to a clu
    metric writer when given."""
    if jax.process_index() != 0:
        return
    directory = storage.path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    summary = {
        "protocol": result.protocol,
        "dataset": result.dataset,
        "num_examples": len(result.records),
        "metrics": result.metrics,
        "info": result.info,
    }
    lines = "".join(json.dumps(record, default=_json) + "\n" for record in result.records)
    storage.write_atomic(directory / "predictions.jsonl", lines)
    if result.correct is not None:
        storage.write_atomic(directory / "per_class.json", json.dumps(result.per_class(), indent=2))
        storage.write_atomic(directory / "confusion.json", json.dumps(result.confusions(), indent=2))
    # last: a result directory with metrics.json is complete
    storage.write_atomic(directory / "metrics.json", json.dumps(summary, indent=2, default=_json))
    if writer is not None:
        prefix = f"{result.dataset}/{result.protocol}"
        writer.write_scalars(step, {f"{prefix}/{k}": float(v) for k, v in scalars(result.metrics)})
        writer.flush()


def scalars(metrics: dict):
    for key, value in metrics.items():
        if isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool):
            yield key, value


def _json(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"cannot write {type(value).__name__} to JSON")
