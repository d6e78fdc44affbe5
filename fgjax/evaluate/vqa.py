"""General (non-fine-grained) questions: short-answer and multiple-choice VQA.

A question is {"id", "image", "question"} plus either "answers" (short answer: one or more
reference answers, e.g. VQA v2's ten) or "options" and "answer" (multiple choice: the correct
option's text or index); an optional "type" groups accuracies. Sources (`SOURCES`, extend with
`register_source`):
- "jsonl": {"path", "image_root"}: one question per line, "image" a path relative to
  image_root (default: the file's folder);
- "specimens" (the default): the built-in dataset's general questions (count, background,
  border, colour, side/texture), {"split": "test", "size": 500, "resolution": 64, "seed": 0};
  with "benchmark": true the study's three-part benchmark (perception, knowledge, reasoning),
  one question per image; "blank": true asks them of a blank image (the image control).

Short answers: greedy decoding after "<question>\\nAnswer the question using a single word or
phrase." (LLaVA's VQA prompt), scored by exact match and VQA accuracy (matching.py).
Multiple choice: options lettered in a seeded random order (the correct letter uniform), the
answer read from the letters' log-probs and/or parsed from generated text; or, in the cloze
formulation ("likelihood"), the likeliest option text as the answer to the short-answer prompt
(options not shown), for models too small to answer by letter.
"""

from __future__ import annotations

import collections
import dataclasses
from collections.abc import Callable

import numpy as np

from fgjax import storage
from fgjax.evaluate import prompts, protocols
from fgjax.evaluate.choices import answer_choices
from fgjax.evaluate.datasets import LazyImage, check_rows, read_jsonl_rows
from fgjax.evaluate.evaluator import Evaluator
from fgjax.evaluate.generation import generate_texts
from fgjax.evaluate.likelihood import continuation_scores
from fgjax.evaluate.matching import LETTERS, exact_match, vqa_accuracy
from fgjax.evaluate.report import Result


@dataclasses.dataclass(frozen=True)
class QAConfig:
    max_new_tokens: int = 16
    answer_modes: tuple[str, ...] = ("letters", "generate")
    shuffle_options: bool = True
    seed: int = 0


def read_jsonl(spec: dict) -> list[dict]:
    path = storage.path(spec["path"])
    root = storage.path(spec.get("image_root") or path.parent)
    questions = []
    rows = read_jsonl_rows(path, required=("image", "question"))
    for where, row in rows:
        line_no = int(where.rsplit(":", 1)[1]) - 1
        question = {
            "id": str(row.get("id", f"{path.stem}/{line_no}")),
            "image": LazyImage(root / row["image"]),
            "question": row["question"],
            "type": row.get("type"),
        }
        if "options" in row:
            options, answer = list(row["options"]), row.get("answer")
            index = answer if type(answer) is int else (
                options.index(answer) if answer in options else None
            )  # fmt: skip
            if len(options) < 2 or index is None or not 0 <= index < len(options):
                raise ValueError(
                    f"{where}: need >= 2 options and an answer among them (text or index)"
                )
            question.update(options=options, answer=index)
        elif row.get("answers"):
            answers = row["answers"]
            question["answers"] = [answers] if isinstance(answers, str) else list(answers)
        else:
            raise ValueError(f"{where}: give 'answers' (short answer) or 'options' + 'answer'")
        questions.append(question)
    check_rows(rows, [q["id"] for q in questions], [q["image"] for q in questions])
    return questions


def specimens_questions(spec: dict) -> list[dict]:
    """General questions of `size` specimens examples.

    With "benchmark": true, the study's general benchmark: one question per image, typed by its
    part (perception, knowledge or reasoning; data/specimens/benchmark.py), as multiple choice.
    Otherwise every perception question of every image, in the `forms` asked for ("short"
    answer and/or multiple "choice"; default both). "blank": true replaces every image by a
    uniform mid-grey one (the image control: what a model answers without seeing anything).
    """
    from fgjax.data import specimens
    from fgjax.data.specimens import benchmark

    split = spec.get("split", "test")
    data = specimens.generate(
        split, int(spec.get("size", 500)), resolution=int(spec.get("resolution", 64)),
        seed=int(spec.get("seed", 0)),
    )  # fmt: skip
    blank = bool(spec.get("blank", False))
    grey = np.full_like(data["image"][:1], 128)[0]

    def image(i):
        return grey if blank else data["image"][i]

    if spec.get("benchmark"):
        asked = benchmark.questions(data, split, int(spec.get("seed", 0)))
        return [
            {"image": image(i), "question": q["question"], "type": q["part"],
             "id": f"{example_id}/general", "options": q["options"],
             "answer": q["options"].index(q["answer"])}
            for i, (example_id, q) in enumerate(zip(data["id"], asked))
        ]  # fmt: skip
    forms = set(spec.get("forms", ("short", "choice")))
    if not forms or forms - {"short", "choice"}:
        raise ValueError(f"forms must be a non-empty subset of short, choice; got {sorted(forms)}")
    out = []
    for i, example_id in enumerate(data["id"]):
        for j, (question, answer, options) in enumerate(
            zip(data["questions"][i], data["answers"][i], data["options"][i])
        ):
            base = {"image": image(i), "question": question, "type": None}
            options = specimens.split_options(options)
            if "short" in forms:
                out.append({**base, "id": f"{example_id}/q{j}/short", "answers": [answer]})
            if "choice" in forms:
                out.append({**base, "id": f"{example_id}/q{j}/choice", "options": options,
                            "answer": options.index(answer)})  # fmt: skip
    return out


SOURCES: dict[str, Callable[[dict], list[dict]]] = {
    "jsonl": read_jsonl,
    "specimens": specimens_questions,
}


def register_source(name: str, read: Callable[[dict], list[dict]]) -> None:
    SOURCES[name] = read


def load_questions(spec: dict) -> list[dict]:
    kind = spec.get("source", "specimens")
    if kind not in SOURCES:
        raise ValueError(f"unknown question source {kind!r}; available: {sorted(SOURCES)}")
    return SOURCES[kind](spec)


class _Questions:
    """Random access for the loop: {"image", "label": correct letter index or 0, "id"}."""

    def __init__(self, questions: list[dict], labels):
        self.questions, self.label_values = questions, labels

    def __len__(self) -> int:
        return len(self.questions)

    def __getitem__(self, index: int) -> dict:
        q = self.questions[index]
        return {"image": q["image"], "label": int(self.label_values[index]), "id": q["id"]}


def evaluate(evaluator: Evaluator, questions: list[dict], name: str, cfg: QAConfig = QAConfig()):
    """Results "short_answer" and "choice_<mode>" for the questions of each kind present."""
    results = []
    short = [q for q in questions if "answers" in q]
    choice = [q for q in questions if "options" in q]
    if short:
        results.append(_short_answers(evaluator, short, name, cfg))
    if choice:
        results += _choices(evaluator, choice, name, cfg)
    return results


def _short_answers(evaluator, questions, name, cfg) -> Result:
    source = _Questions(questions, np.zeros(len(questions)))

    def build(indices):
        return [
            evaluator.prompter.prompt(prompts.short_answer_question(questions[i]["question"]))
            for i in indices
        ]

    texts = generate_texts(evaluator, source, build, cfg.max_new_tokens, "short answers")
    exact = np.asarray([exact_match(t, q["answers"]) for t, q in zip(texts, questions)])
    vqa = np.asarray([vqa_accuracy(t, q["answers"]) for t, q in zip(texts, questions)])
    records = [
        {"id": q["id"], "question": q["question"], "answers": q["answers"], "prediction": t,
         "correct": bool(e), "scores": {"vqa_accuracy": float(v)}}
        for q, t, e, v in zip(questions, texts, exact, vqa)
    ]  # fmt: skip
    metrics = {"exact_match": float(exact.mean()), "vqa_accuracy": float(vqa.mean()),
               "num_examples": len(questions), **_by_type(questions, exact, "exact_match")}  # fmt: skip
    return Result("short_answer", name, metrics, records, info={"prompt": prompts.SHORT_ANSWER})


def _choices(evaluator, questions, name, cfg) -> list[Result]:
    orders = [
        np.random.default_rng([cfg.seed, i]).permutation(len(q["options"]))
        if cfg.shuffle_options else np.arange(len(q["options"]))
        for i, q in enumerate(questions)
    ]  # fmt: skip
    lettered = [[q["options"][j] for j in order] for q, order in zip(questions, orders)]
    answers = np.asarray(
        [int(np.flatnonzero(o == q["answer"])[0]) for q, o in zip(questions, orders)]
    )
    counts = np.asarray([len(o) for o in lettered])
    source = _Questions(questions, answers)

    def build(indices):
        return [
            evaluator.prompter.prompt(
                prompts.multiple_choice_question(questions[i]["question"], lettered[i])
            )
            for i in indices
        ]

    results = []
    for mode in cfg.answer_modes:
        picked, extra = answer_choices(
            evaluator, source, build, lettered, mode,
            lambda: _cloze_scores(evaluator, source, questions, lettered),
            desc="choice questions", max_new_tokens=cfg.max_new_tokens,
        )  # fmt: skip
        texts = [e.get("text") for e in extra]
        correct = picked == answers
        records = [
            {"id": q["id"], "question": q["question"], "options": opts, "answer": LETTERS[a],
             "picked": LETTERS[p] if p >= 0 else None, "correct": bool(c),
             **({"scores": {"text": t}} if t is not None else {})}
            for q, opts, a, p, c, t in zip(questions, lettered, answers, picked, correct, texts)
        ]  # fmt: skip
        metrics = {
            "accuracy": float(correct.mean()),
            "chance": float(np.mean(1.0 / counts)),
            "unparseable": int((picked < 0).sum()),
            "num_examples": len(questions),
            **_by_type(questions, correct, "accuracy"),
        }
        info = {"answer": mode, "shuffle_options": cfg.shuffle_options, "seed": cfg.seed}
        results.append(Result(f"choice_{mode}", name, metrics, records, info=info))
    return results


def _cloze_scores(evaluator, source, questions, lettered) -> np.ndarray:
    """f32[N, K]: each question's options (in `lettered` order; -inf past its own) scored as
    the reply to the short-answer prompt."""
    texts = sorted({option for options in lettered for option in options})
    continuations = [evaluator.prompter.continuation(t, None) for t in texts]

    def build(indices):
        return [
            evaluator.prompter.prompt(prompts.short_answer_question(questions[i]["question"]))
            for i in indices
        ]

    logp = continuation_scores(
        evaluator, source, build, continuations, "choice questions (likelihood)"
    )["scores"]
    column = {t: j for j, t in enumerate(texts)}
    out = np.full((len(lettered), max(map(len, lettered))), -np.inf, np.float32)
    for i, options in enumerate(lettered):
        out[i, : len(options)] = [logp[i, column[o]] for o in options]
    return out


def _by_type(questions, correct, metric: str) -> dict:
    groups = collections.defaultdict(list)
    for q, ok in zip(questions, correct):
        if q.get("type"):
            groups[q["type"]].append(ok)
    return {f"{metric}/{t}": float(np.mean(v)) for t, v in sorted(groups.items())}


def _sources(entry: dict) -> list[tuple[str, dict]]:
    """(group, question source spec) of general_qa's config entry."""
    out = []
    for source in entry.get("sources") or [{"source": "specimens"}]:
        source = dict(source)
        out.append((f"general_qa/{source.get('name', source.get('source', 'specimens'))}", source))
    return out


def _run(context, cfg: QAConfig, group: str, source: dict) -> list[Result]:
    return evaluate(context.evaluator, load_questions(source), group, cfg)


protocols.register(
    protocols.Protocol("general_qa", QAConfig, _run, sources=_sources, inputs=("sources",))
)
