"""Training records from the built-in specimens dataset, in the formats the trainer reads.

    SpecimensSource(kind, split="train", size=20000, resolution=32, seed=0, keep=None,
                    text_fraction=1.0)

kinds (records are built on access from examples generated once per process):
  captions   {"image", "caption", "conversations": [<image>, caption]}: alignment and
             contrastive pretraining on web-style alt-text (only some captions name the class).
             keep: a JSON file of example indices, the pairs a data filter kept (the study's
             learned filter writes one, as DFN filters web pairs for its CLIP)
  curated    the same with an expert's caption, the class name (a field-guide plate): the
             small curated set a data-filtering network is trained on (DFN), never the pool
  instruct   {"image", "conversations"}: one general (perception) question, as
             a short answer or as lettered multiple choice in LLaVA-1.5's formats, and in some
             records a request for a short caption (the alt-text) -- no fine-grained knowledge
             beyond the captions', and no text-only fact, is taught here
  classify   {"image", "conversations"}: classification data, Zhang et al. 2024's remedy:
             "What type of object is in this photo?" -> class name, or five-way lettered
             multiple choice over the class and its taxonomy look-alikes
  text       {"text"}: language-model pretraining text -- captions, question-answer pairs,
             each class's encyclopedia description, every fact of facts.py in its paraphrases,
             and questions about the facts (short and lettered multiple choice, and counting
             with a fact), so a language model knows the world from text before it sees an
             image. text_fraction < 1 keeps a seeded subset of these records (less text: the
             study's base LLM)
"""

from __future__ import annotations

import functools
import json
from pathlib import Path

import numpy as np

from fgjax.data import specimens
from fgjax.data.specimens import benchmark, facts

# LLaVA-1.5's answer-format instructions (the evaluation prompts use the same strings).
SHORT_ANSWER = "{question}\nAnswer the question using a single word or phrase."
MULTIPLE_CHOICE = (
    "{question}\n{options}\nAnswer with the option's letter from the given choices directly."
)
LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
CLASSIFY_QUESTION = "What type of object is in this photo?"
# LLaVA-665K's short-caption instruction (its COCO/TextCaps rows): the instruct mix asks for the
# image's alt-text caption this way -- no more fine-grained than the captions themselves.
CAPTION_QUESTION = "Provide a one-sentence caption for the provided image."
CAPTION_TURN_RATE = 0.5  # of short-answer records
MAX_OPTIONS = 5
KINDS = ("captions", "curated", "instruct", "classify", "text")
MULTIPLE_CHOICE_RATE = 0.6  # of instruction and text questions asked as lettered options
TEXT_COPIES = 4  # each description and fact statement appears this often in the text records


@functools.lru_cache(maxsize=8)
def _examples(split: str, size: int, resolution: int, seed: int) -> dict:
    return specimens.generate(split, size, resolution=resolution, seed=seed)


class SpecimensSource:
    """A random-access (grain) source of training records; deterministic per (seed, index)."""

    def __init__(
        self,
        kind: str,
        split: str = "train",
        size: int = 20_000,
        resolution: int = 32,
        seed: int = 0,
        keep: str | None = None,
        text_fraction: float = 1.0,
    ):
        if kind not in KINDS:
            raise ValueError(f"unknown specimens record kind {kind!r}; use one of {KINDS}")
        self.kind, self.seed = kind, seed
        self.data = _examples(split, size, resolution, seed)
        self.size = size
        self.names = specimens.class_names()
        # text records: one per example (caption or QA), then the descriptions and the fact
        # statements TEXT_COPIES times each, then one question about a fact per example
        self.texts = list(specimens.descriptions().values()) + facts.statements()
        self.length = size + (TEXT_COPIES * len(self.texts) + size if kind == "text" else 0)
        self.indices = None  # record index -> underlying index, for a kept subset
        if keep is not None:
            self.indices = _kept_indices(keep, kind, size)
        if not 0 < text_fraction <= 1 or (text_fraction < 1 and kind != "text"):
            raise ValueError(f"text_fraction={text_fraction}: use 0 < f <= 1, for kind 'text'")
        if text_fraction < 1:
            order = np.random.default_rng((seed, 4099)).permutation(self.length)
            self.indices = np.sort(order[: int(round(text_fraction * self.length))])
        if self.indices is not None:
            self.length = len(self.indices)

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> dict:
        index = int(index) if self.indices is None else int(self.indices[index])
        if self.kind == "text":
            return {"text": self._text(index)}
        d = self.data
        record = {"id": d["id"][index], "image": d["image"][index]}
        if self.kind in ("captions", "curated"):
            caption = d["caption"][index] if self.kind == "captions" else d["class_name"][index]
            record.update(caption=caption, conversations=_turns([("<image>", caption)]))
        elif self.kind == "classify":
            record["conversations"] = self._classify(index)
        else:
            record["conversations"] = self._instruct(index)
        return record

    def _rng(self, index: int) -> np.random.Generator:
        return np.random.default_rng((self.seed, 7919, index))

    def _instruct(self, index: int) -> list[dict]:
        """One of the example's perception questions, as a short answer or as lettered
        multiple choice (the correct letter uniform over the options); a short-answer record
        sometimes also asks for the alt-text caption (never a lettered one, which would not
        fit the study's rows)."""
        d, rng = self.data, self._rng(index)
        q = int(rng.integers(len(d["questions"][index])))
        question, answer = d["questions"][index][q], d["answers"][index][q]
        options = specimens.split_options(d["options"][index][q])
        pairs = [_question(rng, question, answer, options)]
        lettered = "\nA. " in pairs[0][0]  # its options are listed
        if not lettered and rng.random() < CAPTION_TURN_RATE:
            pairs.insert(int(rng.integers(2)), (CAPTION_QUESTION, d["caption"][index]))
        first_question, first_answer = pairs[0]
        pairs[0] = (f"<image>\n{first_question}", first_answer)
        return _turns(pairs)

    def _classify(self, index: int) -> list[dict]:
        """The class name asked for, openly or among its four taxonomy look-alikes."""
        d, rng = self.data, self._rng(index)
        label = int(d["label"][index])
        if rng.random() < MULTIPLE_CHOICE_RATE:
            similar = np.asarray(specimens.similarity()[label])
            similar[label] = -np.inf
            negatives = np.argsort(-similar, kind="stable")[: MAX_OPTIONS - 1]
            options = [self.names[label]] + [self.names[i] for i in negatives]
            question, answer = _lettered(rng, CLASSIFY_QUESTION, self.names[label], options)
        else:
            name = self.names[label]
            question, answer = CLASSIFY_QUESTION, f"{_article(name)} {name}."
        return _turns([(f"<image>\n{question}", answer)])

    def _text(self, index: int) -> str:
        d, rng = self.data, self._rng(index)
        if index >= self.size + TEXT_COPIES * len(self.texts):
            return _fact_question_text(rng, int(d["family"][index % self.size]))
        if index >= self.size:
            return self.texts[(index - self.size) % len(self.texts)]
        if rng.random() < 0.3:
            return d["caption"][index]
        q = int(rng.integers(len(d["questions"][index])))
        question, answer = d["questions"][index][q], d["answers"][index][q]
        if rng.random() > MULTIPLE_CHOICE_RATE:
            return _chat(question, f"{answer}.")
        # which option a text names, by letter: the lettered-answer skill, in text
        options = specimens.split_options(d["options"][index][q])
        which = rng.choice(options) if len(options) > 1 else answer
        prompt, letter = _question(rng, f"Which option is {which}?", which, options, True)
        return _chat(prompt, letter)


def _question(rng, question, answer, options, force_letters=False) -> tuple[str, str]:
    """(prompt, reply): a short-answer question, or lettered multiple choice."""
    if len(options) > 1 and (force_letters or rng.random() < MULTIPLE_CHOICE_RATE):
        others = [o for o in options if o != answer]
        chosen = [answer] + [others[i] for i in rng.permutation(len(others))[: MAX_OPTIONS - 1]]
        return _lettered(rng, question, answer, chosen)
    return SHORT_ANSWER.format(question=question), answer


def _lettered(rng, question: str, answer: str, options: list[str]) -> tuple[str, str]:
    """The options in a random order, lettered A.., as LLaVA-1.5 asks; (prompt, letter)."""
    order = rng.permutation(len(options))
    lines = "\n".join(f"{LETTERS[i]}. {options[j]}" for i, j in enumerate(order))
    letter = LETTERS[int(np.flatnonzero(order == options.index(answer))[0])]
    return MULTIPLE_CHOICE.format(question=question, options=lines), letter


def _fact_question_text(rng: np.random.Generator, family: int) -> str:
    """A question about a family fact, in text: short, lettered, or counting with the fact."""
    kind = ("habitat", "diet")[int(rng.integers(2))]
    if rng.random() < 1 / 3:
        count = int(rng.integers(1, len(specimens.NUMBER_WORDS)))
        question, answer, _ = benchmark.reasoning_question(
            rng, family, count, kind, benchmark.TEXT_REASONING[kind]
        )
        options = list(specimens.NUMBER_WORDS)
    else:
        question, answer, options = facts.fact_question(rng, family, kind, False, MAX_OPTIONS)
    return _chat(*_question(rng, question, answer, options))


def _chat(prompt: str, reply: str) -> str:
    """A question and its answer in the chat template's words (vicuna_v1), so that a language
    model meets in text the form in which the VLM is asked."""
    return f"USER: {prompt} ASSISTANT: {reply}"


def _kept_indices(path: str, kind: str, size: int) -> np.ndarray:
    """i64[n_kept]: the example indices a data filter kept (a JSON list in `path`)."""
    if kind != "captions":
        raise ValueError(f"keep={path!r} (record kind {kind!r}): a data filter applies to captions")
    try:
        kept = np.asarray(json.loads(Path(path).read_text()), np.int64)
    except (OSError, ValueError) as e:
        raise ValueError(f"keep={path!r}: not a readable JSON list of example indices") from e
    if kept.ndim != 1 or not len(kept) or kept.min() < 0 or kept.max() >= size:
        raise ValueError(f"keep={path!r}: need a non-empty list of indices in [0, {size})")
    return kept


def _turns(pairs: list[tuple[str, str]]) -> list[dict]:
    turns = []
    for question, answer in pairs:
        turns += [{"from": "human", "value": question}, {"from": "gpt", "value": answer}]
    return turns


def _article(name: str) -> str:
    return "An" if name[0].lower() in "aeiou" else "A"


def corpus(size: int = 2000, seed: int = 0) -> list[str]:
    """Every kind of text the study's models meet, for training a tokenizer: class names,
    descriptions, captions, questions and answers, option letters and instructions."""
    data = _examples("train", size, 32, seed)
    texts = list(specimens.class_names()) + list(specimens.descriptions().values())
    texts += data["caption"]
    for qs, answers, options in zip(data["questions"], data["answers"], data["options"]):
        texts += qs + answers + [" ".join(specimens.split_options(o)) for o in options]
    texts += [SHORT_ANSWER, MULTIPLE_CHOICE, CLASSIFY_QUESTION, CAPTION_QUESTION]
    texts += ["The photo features a"]
    texts += [f"{letter}. " for letter in LETTERS[:8]]
    texts += facts.statements() + list(facts.HABITATS) + list(facts.DIETS)
    texts += [q for pair in facts.FACT_QUESTIONS.values() for q in pair]
    texts += [benchmark.KIND_QUESTION, *benchmark.REASONING.values(), *benchmark.TEXT_REASONING.values()]
    return texts
