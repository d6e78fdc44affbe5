"""Several VLMs, of any mix of families, under the same datasets and protocols, in one table
(the 2026 paper's first table): models x datasets x protocols, with CLIP-style zero-shot
references (contrastive models: the image-prompt cosine over "a photo of a {}.") and each
VLM's own linear probes (the `probe` protocol) beside them. A reference is an fgjax run
("run:DIR") or an HF CLIPModel / SiglipModel directory ("hf:DIR", loaded whole with its
tokenizer; prompts tokenized as its family's tokenizer does: negatives.ContrastiveMiner),
e.g. `references=run:/r/clip+hf:/m/clip-vit-large-patch14-336`.

    python -m fgjax.main --workdir=OUT --config=configs/eval/compare.py:\\
      models=hf:/m/llava-1.5-7b-hf+hf:/m/llava-qwen,templates=vicuna_v1+chatml,references=run:/r/clip

Each model is one ordinary evaluation (runner.evaluate) in OUT/models/<name>/, so a rerun
resumes it and a model can be added later; each reference writes
OUT/references/<name>/<dataset>/zero_shot/. Then OUT/comparison.csv (one row per model,
dataset and result: accuracy with its 95% Wilson interval) and OUT/comparison.md (one row per
model, a column per dataset and result) are written from the metrics.json files on disk.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math

import jax
import ml_collections
import numpy as np

from fgjax import storage
from fgjax.config_utils import REQUIRED, Field, parse_arg
from fgjax.config_utils import resolve as resolve_fields
from fgjax.evaluate import configs, datasets, loading, negatives, report, runner, schema

F = Field
FIELDS: dict[str, Field] = {
    "job": F("compare", "what fgjax.main runs"),
    "models": F(REQUIRED, "[{'name', 'model', 'template', 'tokenizer'}]: the VLMs compared"),
    "references": F([], "[{'name', 'model', 'tokenizer', 'prompt'}]: contrastive zero-shot rows"),
    "eval": F(REQUIRED, "the evaluation config every model runs (fgjax/evaluate/schema.py)"),
}
HEADLINE = ("accuracy", "exact_match", "vqa_accuracy")  # the first a result has is its cell
Z95 = 1.959963984540054


def build(arg: str | None, *, datasets: tuple, protocols: dict) -> ml_collections.ConfigDict:
    """A compare config from "models=a+b,templates=t1+t2,tokenizers=..,references=r1+r2,..."
    (the other keys are those of configs.build, shared by every model)."""
    own = parse_arg(
        _own_part(arg), models="", templates="", tokenizers="", references="",
        reference_tokenizers="", prompt="",
    )  # fmt: skip
    sources = [m for m in own.models.split("+") if m]
    if not sources:
        raise ValueError("give the models to compare: compare.py:models=hf:DIR1+run:DIR2")
    templates = _aligned(own.templates, len(sources), "templates")
    tokenizers = _aligned(own.tokenizers, len(sources), "tokenizers")
    shared = ",".join([f"model={sources[0]}", *_shared_part(arg)])
    c = ml_collections.ConfigDict()
    c.job = "compare"
    c.eval = configs.build(shared, datasets=datasets, protocols=protocols)
    c.models = [
        {"name": model_name(s), "model": s, "template": t, "tokenizer": k}
        for s, t, k in zip(sources, templates, tokenizers)
    ]
    references = [r for r in own.references.split("+") if r]
    reference_tokenizers = _aligned(
        own.reference_tokenizers, len(references), "reference_tokenizers"
    )
    c.references = [
        {"name": model_name(s), "model": s, "tokenizer": k,
         "prompt": own.prompt or "a photo of a {}."}
        for s, k in zip(references, reference_tokenizers)
    ]  # fmt: skip
    names = [m["name"] for m in c.models] + [r["name"] for r in c.references]
    if len(set(names)) != len(names):
        raise ValueError(f"two compared models share a directory name: {names}")
    return c


_OWN_KEYS = ("models", "templates", "tokenizers", "references", "reference_tokenizers", "prompt")


def _own_part(arg):
    return ",".join(i for i in (arg or "").split(",") if i.partition("=")[0] in _OWN_KEYS)


def _shared_part(arg):
    return [i for i in (arg or "").split(",") if i and i.partition("=")[0] not in _OWN_KEYS]


def _aligned(text: str, count: int, what: str) -> list:
    """ "a+b" for `count` models -> ["a", "b"]; empty -> [None] * count (each model's own)."""
    if not text:
        return [None] * count
    values = [None if v in ("", "auto") else v for v in text.split("+")]
    if len(values) != count:
        raise ValueError(f"{what} lists {len(values)} values for {count}; give one each")
    return values


def model_name(source: str) -> str:
    """'hf:/models/llava-1.5-7b-hf' -> 'llava-1.5-7b-hf' (a directory name per model)."""
    path = source.partition(":")[2] or source
    return path.rstrip("/").split("/")[-1].split("@")[0] or "model"


def run(config, workdir: str) -> dict:
    """Evaluates every model and reference not finished yet, then writes the table."""
    config = resolve_fields(config, FIELDS, "compare config")
    schema.resolve(config.eval)  # a wrong eval field fails before any model is loaded
    workdir = storage.path(workdir)
    for i, entry in enumerate(config.models):
        logging.info("model %d/%d: %s", i + 1, len(config.models), entry["model"])
        sub = ml_collections.ConfigDict(config.eval.to_dict())
        sub.model = entry["model"]
        for key in ("template", "tokenizer"):
            if entry.get(key):
                sub[key] = entry[key]
        runner.evaluate(sub, str(workdir / "models" / entry["name"]))
    for entry in config.references:
        zero_shot(entry, config.eval, workdir / "references" / entry["name"])
    rows = collect(workdir, config)
    if jax.process_index() == 0:
        storage.write_atomic(workdir / "comparison.csv", to_csv(rows))
        storage.write_atomic(workdir / "comparison.md", to_markdown(rows))
    return {"rows": rows}


def zero_shot(entry: dict, eval_config, directory) -> None:
    """CLIP-style zero-shot classification by a contrastive model on every dataset."""
    loaded = None
    for spec in list(eval_config.datasets):
        dataset = datasets.from_spec(spec if isinstance(spec, str) else dict(spec))
        out = directory / dataset.name / "zero_shot"
        if (out / "metrics.json").is_file() and not eval_config.get("overwrite", False):
            continue
        if loaded is None:
            loaded = loading.load_contrastive(entry["model"], tokenizer=entry.get("tokenizer"))
            miner = negatives.ContrastiveMiner(
                loaded.model, loaded.tokenizer, source=entry["model"], prompt=entry["prompt"],
                batch_size=int(eval_config.batch_size),
            )  # fmt: skip
        scores = miner.scores(dataset)
        labels, ids = dataset.labels(), dataset.ids()
        predictions = np.argmax(scores, axis=1).astype(np.int32)
        correct = predictions == labels
        records = [
            {"id": i, "label": int(y), "prediction": int(p)}
            for i, y, p in zip(ids, labels, predictions)
        ]
        result = report.Result(
            "zero_shot", dataset.name, {"accuracy": float(correct.mean())}, records, labels,
            predictions, correct, tuple(dataset.class_names),
            {"model": entry["model"], "prompt": entry["prompt"]},
        )  # fmt: skip
        report.write(result, out)


def collect(workdir, config) -> list[dict]:
    """One row per (model, dataset, result) from the metrics.json files: the headline metric,
    its 95% Wilson interval over the examples, and the example count."""
    rows = []
    groups = [("model", m["name"], workdir / "models" / m["name"]) for m in config.models]
    groups += [("reference", r["name"], workdir / "references" / r["name"])
               for r in config.references]  # fmt: skip
    for kind, name, root in groups:
        for path in sorted(root.glob("*/*/metrics.json")):
            summary = json.loads(path.read_text())
            metrics = summary["metrics"]
            key = next((k for k in HEADLINE if k in metrics), None)
            if key is None:
                continue
            n = int(metrics.get("num_examples", summary.get("num_examples", 0)))
            lo, hi = wilson(float(metrics[key]), n)
            rows.append({
                "model": name, "kind": kind, "dataset": summary["dataset"],
                "result": summary["protocol"], "metric": key, "value": float(metrics[key]),
                "low": lo, "high": hi, "n": n,
            })  # fmt: skip
    return rows


def wilson(p: float, n: int) -> tuple[float, float]:
    """The 95% Wilson score interval of a proportion p over n trials ((nan, nan) for n = 0)."""
    if n <= 0:
        return math.nan, math.nan
    denom = 1 + Z95**2 / n
    centre = (p + Z95**2 / (2 * n)) / denom
    half = Z95 * math.sqrt(p * (1 - p) / n + Z95**2 / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def to_csv(rows: list[dict]) -> str:
    out = io.StringIO()
    fields = ["model", "kind", "dataset", "result", "metric", "value", "low", "high", "n"]
    writer = csv.DictWriter(out, fieldnames=fields, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue()


def to_markdown(rows: list[dict]) -> str:
    """Models (references last) x "dataset / result" columns, cells "62.3 [58.1, 66.4]" in %."""
    columns = sorted({(r["dataset"], r["result"]) for r in rows})
    names = list(
        dict.fromkeys(r["model"] for r in sorted(rows, key=lambda r: r["kind"] != "model"))
    )
    cells = {(r["model"], r["dataset"], r["result"]): r for r in rows}
    header = ["model", *[f"{d} / {p}" for d, p in columns]]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for name in names:
        line = [name]
        for d, p in columns:
            r = cells.get((name, d, p))
            line.append(
                ""
                if r is None
                else f"{100 * r['value']:.1f} [{100 * r['low']:.1f}, {100 * r['high']:.1f}]"
            )
        lines.append("| " + " | ".join(line) + " |")
    note = (
        "\nAccuracy in % with 95% Wilson intervals over each dataset's examples; "
        "zero_shot rows are contrastive references, probe_* columns each VLM's linear probes.\n"
    )
    return "\n".join(lines) + "\n" + note
