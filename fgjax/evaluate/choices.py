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

from fgjax import storage
from fgjax.evaluate import loading, negatives, prompts, protocols
from fgjax.evaluate.evaluator import Evaluator, process0
from fgjax.evaluate.generation import generate_texts
from fgjax.evaluate.likelihood import (
    LikelihoodConfig,
    class_tokens,
    continuation_scores,
    score_images,
)
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
    return storage.path(options_dir) / f"{slug}-k{k}-seed{seed}-{kind}.json"


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
        storage.write_atomic(path, json.dumps(payload))
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
    options = [[names[c] for c in row] for row in sets.options]

    def cloze():
        tokens = class_tokens(evaluator, names, cfg.lead_in)
        config = LikelihoodConfig(question=cfg.question, lead_in=cfg.lead_in)
        logp = score_images(evaluator, dataset, config, tokens)["scores"]
        return np.take_along_axis(logp, sets.options, axis=1)

    results = []
    for mode in cfg.answer_modes:
        picked, extra = answer_choices(
            evaluator, dataset, build, options, mode, cloze,
            desc=f"{k}-way choice", max_new_tokens=cfg.max_new_tokens,
        )  # fmt: skip
        results.append(_result(dataset, sets, picked, extra, mode, cfg))
    return results


ANSWER_MODES = ("letters", "generate", "likelihood")


def answer_choices(evaluator: Evaluator, source, build, options: list[list[str]], mode: str,
                   cloze, *, desc: str, max_new_tokens: int):  # fmt: skip
    """How a model answers N lettered questions in one answer mode: (picked i32[N], the index
    of the chosen option or -1 when a generated answer names none; one dict per question of
    what the choice rests on). The one switch over the modes, for every protocol.

    options: each question's option texts, in the order `build(indices)` lists them in its
    prompts; cloze: () -> f32[N, K] log-probabilities of the option texts (-inf past a
    question's own options), for "likelihood".
    """
    counts = np.asarray([len(o) for o in options])
    if mode == "letters":
        logp = letter_scores(evaluator, source, build, int(counts.max()), f"{desc} (letters)")
        key = "letter_logp"
    elif mode == "generate":
        texts = generate_texts(evaluator, source, build, max_new_tokens, f"{desc} (generate)")
        parsed = [parse_option(text, opts) for text, opts in zip(texts, options)]
        return np.asarray([-1 if p is None else p for p in parsed]), [{"text": t} for t in texts]
    elif mode == "likelihood":
        logp, key = cloze(), "option_logp"
    else:
        raise ValueError(
            f"unknown answer mode {mode!r}; use one of {', '.join(map(repr, ANSWER_MODES))}"
        )
    logp = np.where(np.arange(logp.shape[1])[None] < counts[:, None], logp, -np.inf)
    extra = [{key: dict(zip(LETTERS, map(float, row[:n])))} for row, n in zip(logp, counts)]
    return np.argmax(logp, axis=1), extra


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


def make_miner(config, evaluator: Evaluator):
    """The negatives miner of config.negatives: the taxonomy (specimens), a contrastive
    model's similarities, or class-name text similarity."""
    spec = dict(config.get("negatives") or {})
    if spec.get("miner") == "taxonomy":
        return negatives.TaxonomyMiner()
    if not spec.get("model"):
        return negatives.TextMiner()
    loaded = loading.load_contrastive(
        spec["model"], tokenizer=spec.get("tokenizer"), mesh=evaluator.mesh
    )
    return negatives.ContrastiveMiner(
        loaded.model, loaded.tokenizer, source=spec["model"],
        prompt=spec.get("prompt", "a photo of a {}."), batch_size=evaluator.batch_size,
        mesh=evaluator.mesh,
    )  # fmt: skip


def _run(context, cfg: MultipleChoiceConfig, dataset, spec) -> list[Result]:
    if "miner" not in context.cache:  # one miner for every dataset of the evaluation
        context.cache["miner"] = make_miner(context.config, context.evaluator)
    options_dir = context.config.get("options_dir") or context.workdir / "options"
    sets = option_sets(dataset, context.cache["miner"], cfg.k, cfg.seed, options_dir)
    return evaluate(context.evaluator, dataset, sets, cfg)


protocols.register(protocols.Protocol("multiple_choice", MultipleChoiceConfig, _run))
