"""K-way multiple choice with mined hard negatives (the 2026 protocol; FOCI with K = 4).

Option sets: for example i, the true class and the K-1 classes most similar to it under a
miner (negatives.py) are lettered A.. in a random order drawn from a generator seeded with
(seed, i), so the correct letter is uniform over the K letters and independent of the model.
They are written to `<options_dir>/<dataset>-<split>-<N>-k<K>-seed<seed>-<miner>.json` and read
back on every later run, so every model answers exactly the same questions; a file whose
examples or miner differ from the request is an error, never silently replaced.

Answers, three ways (each reported on its own):
- "letters": the log-probs of the K answers " A", " B", ... (reply prefix + letter; one token
  with real tokenizers, so this is the next-token distribution restricted to the letters); the
  highest wins.
- "generate": greedy decoding, then `matching.parse_option`; unparseable answers count as
  wrong and are counted.
- "likelihood": the cloze formulation (no options shown): each option's name is scored as the
  answer after the likelihood protocol's prompt and lead-in, and the likeliest option wins.
  Small language models cannot yet map an answer to its letter (multiple-choice ability
  emerges with scale; Gu et al. 2024, OLMES), so this reads what they know without that skill.
"""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

import jax
import numpy as np

from fgjax.evaluate import negatives, prompts
from fgjax.evaluate.generation import generate_texts
from fgjax.evaluate.likelihood import (
    LikelihoodConfig,
    class_tokens,
    continuation_scores,
    score_images,
)
from fgjax.evaluate.loop import Evaluator, process0
from fgjax.evaluate.matching import LETTERS, parse_option
from fgjax.evaluate.report import Result


@dataclasses.dataclass(frozen=True)
class MultipleChoiceConfig:
    k: int = 5
    seed: int = 0
    question: str = prompts.QUESTION
    answer_modes: tuple[str, ...] = ("letters", "generate")
    max_new_tokens: int = 16
    lead_in: str | None = prompts.LEAD_IN  # of the "likelihood" mode's prompt


@dataclasses.dataclass(frozen=True)
class OptionSets:
    """options: i32[N, K] class ids in letter order; answers: i32[N] the correct letter's
    index; miner: the miner's name; ids: the examples' ids."""

    options: np.ndarray
    answers: np.ndarray
    miner: str
    ids: list[str]


def draw_option_sets(scores, labels, k: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(options i32[N, K], answers i32[N]) from similarities f32[N, C] and labels i32[N]."""
    labels = np.asarray(labels, np.int32)
    candidates = np.concatenate(
        [labels[:, None], negatives.hardest_negatives(scores, labels, k - 1)], 1
    )
    options = np.empty_like(candidates)
    answers = np.empty(len(labels), np.int32)
    for i in range(len(labels)):
        order = np.random.default_rng([seed, i]).permutation(k)
        options[i] = candidates[i, order]
        answers[i] = int(np.flatnonzero(order == 0)[0])
    return options, answers


def option_file(options_dir, dataset, k: int, seed: int, miner: str) -> Path:
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "_", f"{dataset.name}-{dataset.split}-{len(dataset)}")
    kind = miner.split(":")[0]
    return Path(options_dir) / f"{slug}-k{k}-seed{seed}-{kind}.json"


def option_sets(dataset, miner, k: int, seed: int, options_dir) -> OptionSets:
    """The cached option sets of (dataset, k, seed, miner kind), mined and written if absent."""
    path = option_file(options_dir, dataset, k, seed, miner.name)
    ids, labels = dataset.ids(), dataset.labels()
    if process0(path.exists()):  # several hosts need options_dir on a shared file system
        saved = json.loads(path.read_text())
        problems = []
        if saved["miner"] != miner.name:
            problems.append(f"it was mined by {saved['miner']!r}, not {miner.name!r}")
        if saved["ids"] != ids or saved["labels"] != labels.tolist():
            problems.append("its examples or labels differ from the dataset's")
        if saved["class_names"] != list(dataset.class_names):
            problems.append("its class names differ from the dataset's")
        if problems:
            raise ValueError(
                f"option file {path}: {'; '.join(problems)}. Delete it to mine again, or set "
                "another options_dir (every model compared must use the same file)"
            )
        return OptionSets(np.asarray(saved["options"], np.int32),
                          np.asarray(saved["answers"], np.int32), saved["miner"], ids)  # fmt: skip
    options, answers = draw_option_sets(miner.scores(dataset), labels, k, seed)
    if jax.process_index() == 0:  # every process computed the same sets
        path.parent.mkdir(parents=True, exist_ok=True)
        payload = {
            "dataset": dataset.name, "split": dataset.split, "k": k, "seed": seed,
            "miner": miner.name, "class_names": list(dataset.class_names), "ids": ids,
            "labels": labels.tolist(), "options": options.tolist(), "answers": answers.tolist(),
        }  # fmt: skip
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(payload))
        tmp.replace(path)
    return OptionSets(options, answers, miner.name, ids)


def _prompt_fn(evaluator: Evaluator, dataset, sets: OptionSets, question: str):
    def build(indices):
        return [
            evaluator.prompter.prompt(
                prompts.multiple_choice_question(
                    question, [dataset.class_names[c] for c in sets.options[i]]
                )
            )
            for i in indices
        ]

    return build


def evaluate(
    evaluator: Evaluator,
    dataset,
    sets: OptionSets,
    cfg: MultipleChoiceConfig = MultipleChoiceConfig(),
) -> list[Result]:
    """One Result per answer mode ("multiple_choice_letters", "multiple_choice_generate")."""
    k = sets.options.shape[1]
    build = _prompt_fn(evaluator, dataset, sets, cfg.question)
    names = dataset.class_names
    results = []
    for mode in cfg.answer_modes:
        if mode == "letters":
            logp = letter_scores(evaluator, dataset, build, k, f"{k}-way choice (letters)")
            picked = np.argmax(logp, axis=1)
            extra = [{"letter_logp": dict(zip(LETTERS[:k], map(float, row)))} for row in logp]
        elif mode == "generate":
            texts = generate_texts(
                evaluator, dataset, build, cfg.max_new_tokens, f"{k}-way choice (generate)"
            )
            parsed = [
                parse_option(text, [names[c] for c in sets.options[i]])
                for i, text in enumerate(texts)
            ]
            picked = np.asarray([-1 if p is None else p for p in parsed])
            extra = [{"text": text} for text in texts]
        elif mode == "likelihood":
            tokens = class_tokens(evaluator, names, cfg.lead_in)
            config = LikelihoodConfig(question=cfg.question, lead_in=cfg.lead_in)
            logp = score_images(evaluator, dataset, config, tokens)["scores"]
            logp = np.take_along_axis(logp, sets.options, axis=1)
            picked = np.argmax(logp, axis=1)
            extra = [{"option_logp": dict(zip(LETTERS[:k], map(float, row)))} for row in logp]
        else:
            raise ValueError(
                f"unknown answer mode {mode!r}; use 'letters', 'generate' or 'likelihood'"
            )
        results.append(_result(dataset, sets, picked, extra, mode, cfg))
    return results


def letter_scores(evaluator: Evaluator, dataset, build, count: int, desc: str) -> np.ndarray:
    """f32[N, count]: log-probs of the answers " A", " B", ... after each example's prompt
    (a letter's tokens summed when the tokenizer splits it; usually it is one token)."""
    letters = evaluator.prompter.letter_continuations(count)
    out = continuation_scores(evaluator, dataset, build, letters, desc, sum(map(len, letters)))
    return out["scores"]


def _result(dataset, sets: OptionSets, picked, extra, mode, cfg) -> Result:
    k = sets.options.shape[1]
    labels = dataset.labels()
    names = dataset.class_names
    correct = picked == sets.answers
    predictions = np.where(
        picked >= 0, sets.options[np.arange(len(picked)), np.maximum(picked, 0)], -1
    )
    letter_counts = np.bincount(picked[picked >= 0], minlength=k)
    metrics = {
        "accuracy": float(correct.mean()),
        "chance": 1.0 / k,
        "unparseable": int((picked < 0).sum()),
        "unparseable_fraction": float((picked < 0).mean()),
    }
    metrics.update(
        {f"picked_{LETTERS[j]}": float(letter_counts[j] / len(picked)) for j in range(k)}
    )
    records = [
        {
            "id": sets.ids[i],
            "label": names[labels[i]],
            "options": [names[c] for c in sets.options[i]],
            "answer": LETTERS[sets.answers[i]],
            "picked": LETTERS[picked[i]] if picked[i] >= 0 else None,
            "prediction": names[predictions[i]] if predictions[i] >= 0 else None,
            "correct": bool(correct[i]),
            "scores": extra[i],
        }
        for i in range(len(picked))
    ]
    info = {
        "k": k,
        "seed": cfg.seed,
        "negatives": sets.miner,
        "question": cfg.question,
        "answer": mode,
    }
    return Result(
        f"multiple_choice_{mode}", dataset.name, metrics, records, labels, predictions, correct,
        tuple(names), info,
    )  # fmt: skip
