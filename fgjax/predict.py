"""Images and a prompt through a trained VLM: its greedy reply, and optionally the score of
each of a list of labels.

    python -m fgjax.predict --model=run:DIR --image=photo.jpg --prompt="What type of object is in this photo?"
    python -m fgjax.predict --model=hf:DIR --image=a.png --image=b.png --prompt=... \\
        --labels="cat,dog,fox" [--lead_in="The photo features a"] [--max_new_tokens=64]

The model's own chat template, tokenizer and image preprocessing are used (those the run was
trained with; --template, --system, --tokenizer and --preprocess replace them). A label's score is the
summed log-probability of its tokens as the reply (after the lead-in when one is given), the
likelihood protocol's ranking. Prints one JSON object per image.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from absl import app, flags

from fgjax.data.conversation import ConversationEncoder
from fgjax.evaluate import loading, runner
from fgjax.evaluate.datasets import LazyImage
from fgjax.evaluate.evaluator import Evaluator
from fgjax.evaluate.generation import generate_texts
from fgjax.evaluate.likelihood import continuation_scores


@dataclasses.dataclass(frozen=True)
class Prediction:
    image: str
    reply: str
    label_scores: dict[str, float] | None  # label -> summed log-prob, best first


class _Images:
    """The images as the evaluation loop reads a dataset."""

    def __init__(self, images: Sequence):
        self.images = [LazyImage(Path(i)) if isinstance(i, (str, Path)) else i for i in images]

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> dict:
        return {"image": self.images[index], "label": 0, "id": str(index)}


def predict(
    model: str,
    images: Sequence,
    prompt: str,
    *,
    labels: Sequence[str] | None = None,
    lead_in: str | None = None,
    max_new_tokens: int = 64,
    template: str | None = None,
    system=loading.KEEP,
    tokenizer: str | None = None,
    preprocess=...,
    batch_size: int = 1,
) -> list[Prediction]:
    """One Prediction per image (paths or PIL images, in order). `system` replaces the
    template's system message (None: none); `preprocess` (an image mode, or None for the
    tower's default) replaces the run's own; by default both are kept."""
    for image in images:
        if isinstance(image, (str, Path)) and not Path(image).is_file():
            raise FileNotFoundError(f"image {str(image)!r} is not a file")
    loaded = loading.load_vlm(model, tokenizer=tokenizer, template=template, system=system)
    encoder = ConversationEncoder.for_model(loaded.tokenizer, loaded.template, loaded.cfg)
    chosen = {} if preprocess is ... else {"preprocess": preprocess}
    evaluator = Evaluator(
        loaded.model, encoder, batch_size=batch_size, progress=False,
        preprocess_mode=runner.preprocess_mode(chosen, loaded.recorded),
    )  # fmt: skip
    source = _Images(images)
    tokens = evaluator.prompter.prompt(prompt)  # the image, then the question, as in training
    replies = generate_texts(
        evaluator, source, lambda idx: [tokens] * len(idx), max_new_tokens, "predict"
    )
    scores = None
    if labels:
        with_lead_in = evaluator.prompter.prompt(prompt, lead_in=lead_in)
        continuations = [evaluator.prompter.continuation(label, lead_in) for label in labels]
        scores = continuation_scores(
            evaluator, source, lambda idx: [with_lead_in] * len(idx), continuations, "labels"
        )["scores"]
    out = []
    for i, reply in enumerate(replies):
        ranked = None
        if scores is not None:
            order = np.argsort(-scores[i], kind="stable")
            ranked = {labels[j]: round(float(scores[i, j]), 4) for j in order}
        name = str(images[i]) if isinstance(images[i], (str, Path)) else f"image {i}"
        out.append(Prediction(name, reply, ranked))
    return out


_MODEL = flags.DEFINE_string("model", None, "run:DIR (an fgjax run or export) or hf:DIR")
_IMAGES = flags.DEFINE_multi_string("image", [], "an image file (repeat for several)")
_PROMPT = flags.DEFINE_string("prompt", "What type of object is in this photo?", "the question")
_LABELS = flags.DEFINE_string("labels", None, "comma-separated labels to score")
_LEAD_IN = flags.DEFINE_string("lead_in", None, "text after which the labels are scored")
_MAX_NEW = flags.DEFINE_integer("max_new_tokens", 64, "length of the greedy reply at most")
_TEMPLATE = flags.DEFINE_string("template", None, "replaces the run's chat template")
_SYSTEM = flags.DEFINE_string("system", None, "replaces the template's system message; 'none': none")
_TOKENIZER = flags.DEFINE_string("tokenizer", None, "replaces the run's tokenizer")
_PREPROCESS = flags.DEFINE_string("preprocess", None, "replaces the run's image preprocessing")


def main(argv) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments {argv[1:]}")
    if not _MODEL.value or not _IMAGES.value:
        raise app.UsageError("--model and at least one --image are required")
    labels = [x.strip() for x in _LABELS.value.split(",")] if _LABELS.value else None
    extra = {} if _PREPROCESS.value is None else {"preprocess": _PREPROCESS.value}
    if _SYSTEM.value is not None:
        extra["system"] = None if _SYSTEM.value.lower() == "none" else _SYSTEM.value
    for p in predict(
        _MODEL.value, _IMAGES.value, _PROMPT.value, labels=labels, lead_in=_LEAD_IN.value,
        max_new_tokens=_MAX_NEW.value, template=_TEMPLATE.value, tokenizer=_TOKENIZER.value,
        **extra,
    ):  # fmt: skip
        print(json.dumps(dataclasses.asdict(p)))


if __name__ == "__main__":
    app.run(main, argv=sys.argv)
