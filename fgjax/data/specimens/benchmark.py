"""The general benchmark: one question per image, in three parts (the image's index mod 3).

  perception  what is seen, no knowledge needed: count, background, border, colour, side or
              texture (text.QUESTIONS) -- a control that a better LLM should barely move;
  knowledge   recognise the family ("What kind of specimen is this?") or recall a text-only
              fact about it ("Where does this kind of specimen live?", facts.py);
  reasoning   combine what is seen with a fact: "How many of the specimens in the picture live
              in sand dunes?" (the count when the family lives there, else zero).

Every question has at most MAX_OPTIONS options (the answer and seeded others), the same for
the letter and the cloze read-outs. Questions are drawn from their own random stream, so they
never change the images, captions or instruction data.
"""

from __future__ import annotations

import numpy as np

from fgjax.data.specimens import facts, scenes, taxonomy, text

PARTS = ("perception", "knowledge", "reasoning")
MAX_OPTIONS = 5
KIND_QUESTION = "What kind of specimen is this?"
REASONING = {
    "habitat": "How many of the specimens in the picture live in {value}?",
    "diet": "How many of the specimens in the picture eat {value}?",
}
TEXT_REASONING = {  # the same reasoning over a described scene, for the LM corpus
    "habitat": "There {are} {count} {families}. How many of them live in {value}?",
    "diet": "There {are} {count} {families}. How many of them eat {value}?",
}


def part_of(index: int) -> str:
    return PARTS[index % len(PARTS)]


def _cap(rng: np.random.Generator, answer: str, options: list[str]) -> list[str]:
    others = [o for o in options if o != answer]
    return [answer] + [others[i] for i in rng.permutation(len(others))[: MAX_OPTIONS - 1]]


def general_question(
    rng: np.random.Generator, index: int, family: int, count: int, perception: list[tuple]
) -> dict:
    """{"part", "question", "answer", "options"} for one image.

    perception: the image's (question, answer, options) triples from text.questions.
    """
    part = part_of(index)
    if part == "perception":
        question, answer, options = perception[int(rng.integers(len(perception)))]
        options = _cap(rng, answer, text.split_options(options))
    elif part == "knowledge":
        kind = ("family", "habitat", "diet")[int(rng.integers(3))]
        if kind == "family":
            question, answer = KIND_QUESTION, taxonomy.FAMILIES[family].noun
            options = _cap(rng, answer, taxonomy.family_names())
        else:
            question, answer, options = facts.fact_question(rng, family, kind, True, MAX_OPTIONS)
    else:
        kind = ("habitat", "diet")[int(rng.integers(2))]
        question, answer, options = reasoning_question(rng, family, count, kind, REASONING[kind])
    return {"part": part, "question": question, "answer": answer, "options": options}


def questions(data: dict, split: str, seed: int) -> list[dict]:
    """The general question of every example of `data` (as specimens.generate returns it),
    example i drawn from its own stream (seed, split, i, BENCHMARK_STREAM)."""
    out = []
    for i in range(len(data["id"])):
        rng = scenes.example_rng(seed, split, i, scenes.BENCHMARK_STREAM)
        count = text.NUMBER_WORDS.index(data["answers"][i][0])  # the count question's answer
        perception = list(zip(data["questions"][i], data["answers"][i], data["options"][i]))
        out.append(general_question(rng, i, int(data["family"][i]), count, perception))
    return out


def reasoning_question(
    rng: np.random.Generator, family: int, count: int, kind: str, template: str, **fields
) -> tuple[str, str, list[str]]:
    """A count of specimens with a fact: half the time the family's own value (answer: the
    count), else another (answer: zero). Options: every count word."""
    own = facts.family_facts()[family][kind]
    values = facts.FACT_VALUES[kind]
    value = own if rng.random() < 0.5 else _cap(rng, own, list(values))[1]
    answer = text.NUMBER_WORDS[count] if value == own else text.NUMBER_WORDS[0]
    fam = taxonomy.FAMILIES[family]
    question = template.format(
        value=value, count=text.NUMBER_WORDS[count], are="is" if count == 1 else "are",
        families=fam.plural if count > 1 else fam.noun, **fields,
    )  # fmt: skip
    return question, answer, list(text.NUMBER_WORDS)
