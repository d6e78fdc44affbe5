"""Training records from the built-in specimens dataset, in the formats the trainer reads.

    SpecimensSource(kind, split="train", size=20000, resolution=32, seed=0, caption_kinds=None)

kinds (records are built on access from examples generated once per process):
  captions   {"image", "caption", "conversations": [<image>, caption]}: alignment and
             contrastive pretraining on web-style alt-text (only some captions name the class).
             caption_kinds (a subset of text.CAPTION_KINDS) keeps only the pairs whose caption
             is of those kinds: a filtered pool, as DFN filters web pairs for its CLIP (here
             with an oracle for the filter network)
  instruct   {"image", "conversations"}: general questions (count, background, border, colour,
             side or texture), each either as a short answer or as lettered multiple choice in
             LLaVA-1.5's formats, and in half the records a request for a short caption (the
             alt-text) -- no fine-grained knowledge beyond the captions' is taught here
  classify   {"image", "conversations"}: "What type of object is in this photo?" -> class name
             (classification data, Zhang et al. 2024's remedy; not used by the default study)
  text       {"text"}: language-model pretraining text -- captions, question-answer pairs and
             each class's encyclopedia description (so a language model can know a class from
             text before it ever sees an image of it)
"""

from __future__ import annotations

import functools

import numpy as np

from fgjax.data import specimens

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
CAPTION_TURN_RATE = 0.5
MAX_OPTIONS = 5
KINDS = ("captions", "instruct", "classify", "text")


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
        caption_kinds: tuple[str, ...] | None = None,
    ):
        if kind not in KINDS:
            raise ValueError(f"unknown specimens record kind {kind!r}; use one of {KINDS}")
        self.kind, self.seed = kind, seed
        self.data = _examples(split, size, resolution, seed)
        self.size = size
        self.names = specimens.class_names()
        self.descriptions = list(specimens.descriptions().values())
        # text records: one per example (caption or a QA pair), plus every description 4 times
        self.length = size + (4 * len(self.descriptions) if kind == "text" else 0)
        self.indices = None  # record index -> example index, for a filtered pool
        if caption_kinds is not None:
            self.indices = _filter_by_caption(self.data, kind, tuple(caption_kinds))
            self.length = len(self.indices)

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> dict:
        index = int(index) if self.indices is None else int(self.indices[index])
        if self.kind == "text":
            return {"text": self._text(index)}
        d = self.data
        record = {"id": d["id"][index], "image": d["image"][index]}
        if self.kind == "captions":
            caption = d["caption"][index]
            record.update(caption=caption, conversations=_turns([("<image>", caption)]))
        elif self.kind == "classify":
            answer = f"{_article(d['class_name'][index])} {d['class_name'][index]}."
            record["conversations"] = _turns([(f"<image>\n{CLASSIFY_QUESTION}", answer)])
        else:
            record["conversations"] = self._instruct(index)
        return record

    def _rng(self, index: int) -> np.random.Generator:
        return np.random.default_rng((self.seed, 7919, index))

    def _instruct(self, index: int) -> list[dict]:
        """2-3 of the example's general questions, each as a short answer or as lettered
        multiple choice (the correct letter uniform over the options)."""
        d, rng = self.data, self._rng(index)
        picked = rng.permutation(len(d["questions"][index]))[: rng.integers(2, 4)]
        pairs = []
        for q in picked:
            question, answer = d["questions"][index][q], d["answers"][index][q]
            options = specimens.split_options(d["options"][index][q])
            if rng.random() < 0.5 and len(options) > 1:
                # the answer and up to MAX_OPTIONS - 1 others, in random order (as 5-way evaluation)
                others = [o for o in options if o != answer]
                chosen = [answer] + [
                    others[i] for i in rng.permutation(len(others))[: MAX_OPTIONS - 1]
                ]
                order = rng.permutation(len(chosen))
                lines = "\n".join(f"{LETTERS[i]}. {chosen[j]}" for i, j in enumerate(order))
                letter = LETTERS[int(np.flatnonzero(order == 0)[0])]
                pairs.append((MULTIPLE_CHOICE.format(question=question, options=lines), letter))
            else:
                pairs.append((SHORT_ANSWER.format(question=question), answer))
        if rng.random() < CAPTION_TURN_RATE:
            pairs.insert(int(rng.integers(len(pairs) + 1)), (CAPTION_QUESTION, d["caption"][index]))
        first_question, first_answer = pairs[0]
        pairs[0] = (f"<image>\n{first_question}", first_answer)
        return _turns(pairs)

    def _text(self, index: int) -> str:
        if index >= self.size:
            return self.descriptions[(index - self.size) % len(self.descriptions)]
        d, rng = self.data, self._rng(index)
        if rng.random() < 0.5:
            return d["caption"][index]
        q = int(rng.integers(len(d["questions"][index])))
        return f"Q: {d['questions'][index][q]} A: {d['answers'][index][q]}."


def _filter_by_caption(data: dict, kind: str, caption_kinds: tuple[str, ...]) -> np.ndarray:
    """Indices of the examples whose caption kind is in `caption_kinds`; i64[n_kept]."""
    unknown = set(caption_kinds) - set(specimens.CAPTION_KINDS)
    if kind != "captions" or unknown or not caption_kinds:
        raise ValueError(
            f"caption_kinds={caption_kinds!r} (record kind {kind!r}): a caption filter applies "
            f"to kind 'captions' only, with a non-empty subset of {specimens.CAPTION_KINDS}"
        )
    keep = np.isin(np.asarray(data["caption_kind"]), caption_kinds)
    if not keep.any():
        raise ValueError(f"no example has a caption of kinds {caption_kinds}; use a larger size")
    return np.flatnonzero(keep)


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
    return texts
