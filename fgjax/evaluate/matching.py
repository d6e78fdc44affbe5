"""Reading answers: class names in generated text, option letters, and VQA answer scoring.

- `match_classes`: the protocol of Zhang et al. 2024 for open- and closed-world generation: an
  answer names class c when the lower-cased name (or one of its synonyms) is a substring of the
  lower-cased answer, whitespace collapsed. The answer is correct when the true class is named;
  answers that name no class are unmatched (wrong, and counted).
- `parse_option`: a letter answer ("B", "(B)", "B. tulip", "The answer is B") or, failing
  that, exactly one option's text; anything else is unparseable (wrong, and counted).
- `vqa_accuracy`: the VQA v2 metric, min(1, matching annotators / 3) averaged over the ten
  leave-one-annotator-out subsets, on answers normalized as the official evaluation does
  (lower case, punctuation, articles, number words, common contractions).
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Sequence

LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"


def normalize_text(text: str) -> str:
    """Lower case with runs of whitespace collapsed to one space."""
    return " ".join(text.lower().split())


class ClassMatcher:
    """Finds class names (and synonyms) in answers. synonyms: {class name: [other names]}."""

    def __init__(
        self, class_names: Sequence[str], synonyms: dict[str, Sequence[str]] | None = None
    ):
        synonyms = synonyms or {}
        unknown = sorted(set(synonyms) - set(class_names))
        if unknown:
            raise ValueError(f"synonyms for names that are not classes: {unknown[:10]}")
        self.class_names = tuple(class_names)
        self.aliases = [
            tuple(dict.fromkeys(normalize_text(n) for n in (name, *synonyms.get(name, ()))))
            for name in class_names
        ]

    def named(self, answer: str) -> list[int]:
        """The classes the answer names, longest matching alias first (ties: class order)."""
        text = normalize_text(answer)
        found = []
        for class_id, aliases in enumerate(self.aliases):
            lengths = [len(a) for a in aliases if a and a in text]
            if lengths:
                found.append((-max(lengths), class_id))
        return [class_id for _, class_id in sorted(found)]

    def match(self, answer: str, label: int) -> dict:
        """{"correct": the true class is named, "prediction": the class with the longest named
        alias or None, "named": how many classes the answer names}."""
        named = self.named(answer)
        return {
            "correct": label in named,
            "prediction": named[0] if named else None,
            "named": len(named),
        }


_LETTER_PATTERNS = (  # an upper-case letter: "A tulip" is an article, not option A
    r"^\s*\(?([A-Z])\s*$",  # "B", "(B"
    r"^\s*\(?([A-Z])[.):,;]",  # "B.", "(B)", "B) tulip", "B: tulip"
    r"(?i:\b(?:answer|option|choice)(?:\s+is)?)\s*:?\s*\(?([A-Z])\b",  # "The answer is B"
)


def parse_option(answer: str, options: Sequence[str]) -> int | None:
    """The index of the option a generated answer picks, or None when unparseable.

    A letter among the first len(options) wins (at the start, or after "answer/option/choice
    (is)"); otherwise the answer must contain exactly one option's text (case-insensitive).
    """
    text = answer.strip()
    for pattern in _LETTER_PATTERNS:
        hit = re.search(pattern, text)
        if hit and hit.group(1) in LETTERS[: len(options)]:
            return LETTERS.index(hit.group(1))
    lowered = normalize_text(text)
    contained = [i for i, option in enumerate(options) if normalize_text(option) in lowered]
    if len(contained) > 1:  # "tulip" and "tulip tree": keep only maximal matches
        contained = [
            i
            for i in contained
            if not any(
                i != j and normalize_text(options[i]) in normalize_text(options[j])
                for j in contained
            )
        ]
    return contained[0] if len(contained) == 1 else None


def option_lines(options: Sequence[str]) -> str:
    """ "A. first\\nB. second\\n..." (LLaVA's multiple-choice layout)."""
    if len(options) > len(LETTERS):
        raise ValueError(f"{len(options)} options; at most {len(LETTERS)} can be lettered")
    return "\n".join(f"{LETTERS[i]}. {option}" for i, option in enumerate(options))


# -- VQA answer normalization and accuracy -----------------------------------------------------

_NUMBERS = {
    w: str(i) for i, w in enumerate("zero one two three four five six seven eight nine ten".split())
}
_ARTICLES = {"a", "an", "the"}
_CONTRACTIONS = {
    "dont": "don't", "doesnt": "doesn't", "isnt": "isn't", "arent": "aren't", "cant": "can't",
    "wont": "won't", "wasnt": "wasn't", "werent": "weren't", "im": "i'm", "ive": "i've",
    "youre": "you're", "theyre": "they're", "thats": "that's", "whats": "what's",
}  # fmt: skip
_PUNCTUATION = re.compile(r"[;/\[\]\"{}()=+\\_\-><@`,?!*#%^&$~|:]")


def normalize_answer(answer: str) -> str:
    """VQA v2 answer normalization: lower case; punctuation removed (a period only when not
    between digits; a comma between digits is dropped); number words to digits; articles
    dropped; common contractions restored."""
    text = answer.replace("\n", " ").replace("\t", " ").strip().lower()
    text = re.sub(r"(?<=\d),(?=\d)", "", text)
    text = _PUNCTUATION.sub(" ", text)
    text = re.sub(r"(?<!\d)\.|\.(?!\d)", "", text)
    words = []
    for word in text.split():
        word = _NUMBERS.get(word, word)
        if word not in _ARTICLES:
            words.append(_CONTRACTIONS.get(word, word))
    return " ".join(words)


def exact_match(prediction: str, answers: Sequence[str]) -> bool:
    """The normalized prediction equals one of the normalized answers."""
    predicted = normalize_answer(prediction)
    return any(predicted == normalize_answer(a) for a in answers)


def vqa_accuracy(prediction: str, answers: Sequence[str]) -> float:
    """VQA accuracy against human answers (usually ten): the mean over every leave-one-out
    subset of min(1, #matches / 3). With fewer than 2 answers it is exact match."""
    predicted = normalize_answer(prediction)
    normalized = [normalize_answer(a) for a in answers]
    if len(normalized) < 2:
        return float(predicted in normalized)
    scores = [
        min(1.0, sum(a == predicted for a in subset) / 3.0)
        for subset in itertools.combinations(normalized, len(normalized) - 1)
    ]
    return sum(scores) / len(scores)
