"""Open-world and closed-world generation (Zhang et al. 2024).

Open world: "What type of object is in this photo?" in the model's chat template, greedy
decoding (`max_new_tokens`, 64 by default), correct when the true class name (or a synonym) is a
case-insensitive substring of the answer. Closed world: the same question followed by
`Choose one from "<all class names>".`, the names shuffled per image by a generator seeded with
(seed, example index). Answers that name no class are wrong and counted ("unmatched"); answers
naming several classes are counted too ("multiple_named"), and their prediction is the class
with the longest matching name.
"""

from __future__ import annotations

import dataclasses
import json

import numpy as np

from fgjax import storage
from fgjax.evaluate import inference, prompts, protocols
from fgjax.evaluate.evaluator import Evaluator
from fgjax.evaluate.matching import ClassMatcher
from fgjax.evaluate.report import Result


@dataclasses.dataclass(frozen=True)
class GenerationConfig:
    question: str = prompts.QUESTION
    max_new_tokens: int = 64
    seed: int = 0  # closed world: the per-image order of the class list


def closed_world_order(num_classes: int, seed: int, index: int) -> np.ndarray:
    """The class order listed in example `index`'s closed-world prompt."""
    return np.random.default_rng([seed, index]).permutation(num_classes)


def open_world(
    evaluator: Evaluator, dataset, cfg: GenerationConfig = GenerationConfig(), synonyms=None
) -> Result:
    prompt = evaluator.prompter.prompt(cfg.question)
    texts = generate_texts(
        evaluator, dataset, lambda idx: [prompt] * len(idx), cfg.max_new_tokens, "open world"
    )
    return _score(dataset, texts, "open_world", cfg, synonyms, {"question": cfg.question})


def closed_world(
    evaluator: Evaluator, dataset, cfg: GenerationConfig = GenerationConfig(), synonyms=None
) -> Result:
    names = dataset.class_names

    def build(indices):
        return [
            evaluator.prompter.prompt(
                prompts.closed_world_question(
                    cfg.question, [names[c] for c in closed_world_order(len(names), cfg.seed, i)]
                )
            )
            for i in indices
        ]

    texts = generate_texts(evaluator, dataset, build, cfg.max_new_tokens, "closed world")
    example = prompts.closed_world_question(cfg.question, ["<c1>", "<c2>", "..."])
    return _score(
        dataset, texts, "closed_world", cfg, synonyms, {"question": example, "seed": cfg.seed}
    )


def generate_texts(
    evaluator: Evaluator, dataset, build, max_new_tokens: int, desc: str
) -> list[str]:
    """Greedy replies to each example's prompt, in dataset order."""
    stops = evaluator.constant(evaluator.prompter.stop_ids())

    def compute(batch):
        new = evaluator.call(
            inference.greedy_generate,
            batch["tokens"], batch["mask"], evaluator.images(batch), stops,
            max_new_tokens=max_new_tokens,
        )  # fmt: skip
        return {"generated": new}

    out = evaluator.run(dataset, compute, build, desc=desc)
    return [evaluator.prompter.decode_reply(row) for row in out["generated"]]


def _score(dataset, texts, protocol, cfg, synonyms, info) -> Result:
    matcher = ClassMatcher(dataset.class_names, synonyms)
    labels, ids, names = dataset.labels(), dataset.ids(), dataset.class_names
    matches = [matcher.match(text, int(label)) for text, label in zip(texts, labels)]
    correct = np.asarray([m["correct"] for m in matches])
    predictions = np.asarray([-1 if m["prediction"] is None else m["prediction"] for m in matches])
    named = np.asarray([m["named"] for m in matches])
    metrics = {
        "accuracy": float(correct.mean()),
        "unmatched": int((named == 0).sum()),
        "unmatched_fraction": float((named == 0).mean()),
        "multiple_named": int((named > 1).sum()),
    }
    records = [
        {
            "id": ids[i],
            "label": names[labels[i]],
            "prediction": names[predictions[i]] if predictions[i] >= 0 else None,
            "correct": bool(correct[i]),
            "scores": {"text": texts[i], "classes_named": int(named[i])},
        }
        for i in range(len(texts))
    ]
    info = {**info, "max_new_tokens": cfg.max_new_tokens, "synonyms": bool(synonyms)}
    return Result(
        protocol, dataset.name, metrics, records, labels, predictions, correct, tuple(names), info
    )


def _synonyms(context, dataset_name: str):
    """{class name: [synonyms]} of config.synonyms[dataset] (a JSON file), or None."""
    path = dict(context.config.get("synonyms") or {}).get(dataset_name)
    return json.loads(storage.path(path).read_text()) if path else None


def _open(context, cfg: GenerationConfig, dataset, spec) -> list[Result]:
    return [open_world(context.evaluator, dataset, cfg, _synonyms(context, dataset.name))]


def _closed(context, cfg: GenerationConfig, dataset, spec) -> list[Result]:
    return [closed_world(context.evaluator, dataset, cfg, _synonyms(context, dataset.name))]


protocols.register(protocols.Protocol("open_world", GenerationConfig, _open))
protocols.register(protocols.Protocol("closed_world", GenerationConfig, _closed))
