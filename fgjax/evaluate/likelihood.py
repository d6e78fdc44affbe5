"""Likelihood ranking over all class names (Zhang et al. 2024, section 3).

Each image's prompt (image + question + answer lead-in) runs once; every class name is then
teacher-forced after it with the shared-prefix scorer (`inference.score_continuations`). Scores
per class: "sum" (summed token log-probs) and "mean" (divided by the class's token count).
Calibration mixes in a per-class prior with weight alpha,
    score = alpha * logp(class | image) + (1 - alpha) * prior(class),
the prior being either the class's mean score over all evaluated images ("prior") or its score
after the same prompt without the image ("no_image"); alpha > 1 subtracts the prior. Every
variant reports top-1 and top-k accuracy; `primary` picks the one whose predictions, per-class
accuracy and confusions are written.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from fgjax.evaluate import inference, prompts, protocols
from fgjax.evaluate.evaluator import Evaluator
from fgjax.evaluate.report import Result


@dataclasses.dataclass(frozen=True)
class LikelihoodConfig:
    question: str = prompts.QUESTION
    lead_in: str | None = prompts.LEAD_IN
    chunk_tokens: int = 128  # packed continuation tokens per forward
    alphas: tuple[float, ...] = (0.5, 1.5, 2.0)  # calibration weights (1.0 = none, always shown)
    no_image_prior: bool = True
    top_k: int = 5
    primary: str = "sum"  # the variant written per example, e.g. "mean+prior@1.5"


def class_tokens(evaluator: Evaluator, class_names, lead_in) -> list[list[int]]:
    return [evaluator.prompter.continuation(name, lead_in) for name in class_names]


def _chunks(evaluator: Evaluator, continuations: list[list[int]], chunk_tokens: int):
    """The continuations packed into as few rows as `chunk_tokens` allows (at least the
    longest one's length, so free-text options of any length fit), each row no longer than
    that takes (`inference.fitted_chunk_tokens`), as constants on the mesh."""
    size = inference.fitted_chunk_tokens(continuations, chunk_tokens)
    packed = inference.pack_continuations(continuations, size)
    return inference.Chunks(*(evaluator.constant(a) for a in packed))


def continuation_scores(
    evaluator: Evaluator, dataset, build, continuations: list[list[int]], desc: str,
    chunk_tokens: int = 128,
) -> dict:  # fmt: skip
    """{"scores": f32[N, C] summed log-probs of each of the C token lists after each example's
    prompt (`build(indices)` -> prompts), "index", "label"}: all C scored against one run of
    the prompt's KV cache, packed `chunk_tokens` per row."""
    chunks = _chunks(evaluator, continuations, chunk_tokens)

    def compute(batch):
        scores = evaluator.call(
            inference.score_continuations, batch["tokens"], batch["mask"],
            evaluator.images(batch), chunks, num_classes=len(continuations),
        )  # fmt: skip
        return {"scores": scores}

    return evaluator.run(dataset, compute, build, desc=desc)


def score_images(evaluator: Evaluator, dataset, cfg: LikelihoodConfig, tokens) -> dict:
    """{"scores": f32[N, C] summed log-probs of the class `tokens`, "index", "label"}; computed
    once per (dataset, prompt, tokens) and evaluator, then reused."""
    prompt = evaluator.prompter.prompt(cfg.question, lead_in=cfg.lead_in)
    key = (
        "score_images", dataset.name, dataset.split, tuple(dataset.ids()),
        tuple(np.asarray(prompt).tolist()), tuple(map(tuple, tokens)), cfg.chunk_tokens,
    )  # fmt: skip
    if key not in evaluator.memo:
        evaluator.memo[key] = continuation_scores(
            evaluator, dataset, lambda indices: [prompt] * len(indices), tokens, "likelihood",
            cfg.chunk_tokens,
        )  # fmt: skip
    return evaluator.memo[key]


def score_without_image(evaluator: Evaluator, cfg: LikelihoodConfig, tokens) -> np.ndarray:
    """f32[C]: each class's summed log-prob after the prompt with no image."""
    chunks = _chunks(evaluator, tokens, cfg.chunk_tokens)
    prompt = evaluator.prompter.prompt(cfg.question, has_image=False, lead_in=cfg.lead_in)
    tok, mask = prompts.pad_prompts([prompt])
    scores = evaluator.call(
        inference.score_continuations,
        evaluator.constant(tok),
        evaluator.constant(mask),
        None,
        chunks,
        num_classes=len(tokens),
    )
    return np.asarray(scores)[0]


def variants(sums, lengths, alphas, no_image=None) -> dict[str, np.ndarray]:
    """{name: f32[N, C]}: "sum", "mean", and "<base>+prior@<alpha>" / "<base>+no_image@<alpha>"."""
    bases = {"sum": sums, "mean": sums / lengths[None, :]}
    out = dict(bases)
    for base, scores in bases.items():
        priors = {"prior": scores.mean(axis=0)}
        if no_image is not None:
            priors["no_image"] = no_image if base == "sum" else no_image / lengths
        for prior_name, prior in priors.items():
            for alpha in alphas:
                out[f"{base}+{prior_name}@{alpha:g}"] = alpha * scores + (1 - alpha) * prior[None]
    return out


def top_k_accuracy(scores: np.ndarray, labels: np.ndarray, k: int) -> float:
    """Fraction of rows whose label is among the k highest scores (ties broken by class
    order, as argsort)."""
    k = min(k, scores.shape[1])
    top = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return float(np.mean(np.any(top == labels[:, None], axis=1)))


def _run(context, cfg: LikelihoodConfig, dataset, spec) -> list[Result]:
    return [evaluate(context.evaluator, dataset, cfg)]


def evaluate(evaluator: Evaluator, dataset, cfg: LikelihoodConfig = LikelihoodConfig()) -> Result:
    tokens = class_tokens(evaluator, dataset.class_names, cfg.lead_in)
    out = score_images(evaluator, dataset, cfg, tokens)
    sums, labels = out["scores"].astype(np.float64), out["label"]
    lengths = np.asarray([len(t) for t in tokens])
    no_image = score_without_image(evaluator, cfg, tokens) if cfg.no_image_prior else None
    table = variants(sums, lengths, cfg.alphas, no_image)
    if cfg.primary not in table:
        raise ValueError(f"likelihood primary={cfg.primary!r}; choose one of {sorted(table)}")
    metrics = {}
    for name, scores in table.items():
        metrics[f"{name}/top1"] = top_k_accuracy(scores, labels, 1)
        metrics[f"{name}/top{cfg.top_k}"] = top_k_accuracy(scores, labels, cfg.top_k)
    primary = table[cfg.primary]
    predictions = np.argmax(primary, axis=1)
    metrics["accuracy"] = metrics[f"{cfg.primary}/top1"]
    ids = dataset.ids()
    names = dataset.class_names
    records = []
    for row, (label, prediction) in enumerate(zip(labels, predictions)):
        top = np.argsort(-primary[row], kind="stable")[: cfg.top_k]
        records.append({
            "id": ids[row],
            "label": names[label],
            "prediction": names[prediction],
            "correct": bool(prediction == label),
            "scores": {
                "top": [{"class": names[c], cfg.primary: float(primary[row, c]),
                         "sum": float(sums[row, c]), "mean": float(sums[row, c] / lengths[c])}
                        for c in top],
                "label": {"sum": float(sums[row, label]), "mean": float(sums[row, label] / lengths[label])},
            },
        })  # fmt: skip
    info = {
        "question": cfg.question,
        "lead_in": cfg.lead_in,
        "primary": cfg.primary,
        "class_token_counts": {"min": int(lengths.min()), "max": int(lengths.max())},
    }
    return Result(
        "likelihood", dataset.name, metrics, records, labels, predictions,
        predictions == labels, tuple(names), info,
    )  # fmt: skip


protocols.register(protocols.Protocol("likelihood", LikelihoodConfig, _run))
