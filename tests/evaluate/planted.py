"""A planted evaluation setup: images whose colour fixes their class, a tokenizer that knows the
prompts' words, and a tiny VLM trained for a few hundred steps (a plain optax loop) to answer
every protocol's prompt for that image -> class mapping. The evaluation tests check that this
model scores near perfectly and that an untrained one stays near chance.

Multiple choice: reading K options and pointing at the right one is a two-hop lookup that a
tiny model learns only after thousands of steps. So the image also carries its answer's
letter -- the colour of its bottom half (the class colours the top half) -- and the model
learns letter <- that colour. The evaluation images get the squares of the letters the protocol's
seeded option sets assign (`choices.draw_option_sets`), so a model answers right exactly when
the harness shows, reads and scores the letters consistently.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from PIL import Image

from fgjax.data import images as image_ops
from fgjax.data.conversation import ConversationEncoder
from fgjax.data.templates import get_template
from fgjax.data.tokenizer_train import tiny_tokenizer
from fgjax.evaluate import choices, negatives, prompts
from fgjax.evaluate.datasets import ArraySource, ClassificationSet
from fgjax.evaluate.matching import LETTERS
from fgjax.models import presets
from fgjax.train.tasks import next_token_loss

# class names of one to three tokens (the last is not in the tokenizer's training text)
CLASSES = ("rose", "tulip", "daisy", "iris", "water lily", "red poppy", "snow drop", "zqx")
COLOURS = np.array(
    [[220, 30, 30], [30, 200, 40], [40, 40, 220], [230, 220, 30],
     [30, 210, 210], [200, 40, 200], [245, 245, 245], [20, 20, 20]], np.float32
)  # fmt: skip
MAX_LENGTH = 64
IMAGE_SIZE = 16  # 2 x 2 patches: 4 image tokens keep the sequences short


K = 5
LETTER_COLOURS = np.array(
    [[255, 128, 0], [128, 0, 255], [128, 128, 128], [120, 70, 0], [255, 150, 200]], np.float32
)  # the bottom half's colour for the letters A..E


def make_images(labels: np.ndarray, letters: np.ndarray, seed: int) -> np.ndarray:
    """u8[N, S, S, 3]: the class's colour on top, the letter's colour below, pixel noise."""
    rng = np.random.default_rng(seed)
    images = np.repeat(COLOURS[labels][:, None, None, :], IMAGE_SIZE, axis=1)
    images = np.repeat(images, IMAGE_SIZE, axis=2)
    images[:, IMAGE_SIZE // 2 :] = LETTER_COLOURS[letters][:, None, None, :]
    images += rng.normal(0, 12, images.shape)
    return np.clip(images, 0, 255).astype(np.uint8)


def answer_letters(labels: np.ndarray, seed: int) -> np.ndarray:
    """The correct letters of the multiple-choice option sets of these labels (text miner)."""
    scores = negatives.TextMiner().class_similarity(CLASSES)[labels]
    return choices.draw_option_sets(scores, labels, K, seed)[1]


def dataset(size: int, seed: int, name: str = "planted", marked: bool = True) -> ClassificationSet:
    """`size` examples cycling through the classes; `marked`: with the letters of their option
    sets (k=5, seed 0), else all in the class colour."""
    labels = np.arange(size) % len(CLASSES)
    if marked:
        images = make_images(labels, answer_letters(labels, 0), seed)
    else:
        images = make_images(labels, np.zeros(size, int), seed)
        images[:, IMAGE_SIZE // 2 :] = images[:, : IMAGE_SIZE // 2]
    return ClassificationSet(
        name, "test", CLASSES, ArraySource(images, labels, prefix=f"{name}-{seed}")
    )


def tokenizer():
    texts = [
        prompts.QUESTION, prompts.LEAD_IN, prompts.MULTIPLE_CHOICE, prompts.SHORT_ANSWER,
        'Choose one from "', "USER: ASSISTANT:", *(f"{prompts.LEAD_IN} {c}." for c in CLASSES[:-1]),
        "A. B. C. D. E.",
    ]  # fmt: skip
    return tiny_tokenizer("bpe", vocab_size=512, texts=texts * 8)


def model_config(tok):
    return presets.vlm(
        "tiny_clip", "tiny_llama", "mlp2x_gelu",
        image_token_id=tok.token_to_id("<image>"),
        encoder_overrides={"image_size": IMAGE_SIZE},
        decoder_overrides={"vocab_size": tok.vocab_size},
    )  # fmt: skip


def encoder(tok, cfg) -> ConversationEncoder:
    template = get_template("vicuna_v1").with_system(None)
    return ConversationEncoder.for_model(tok, template, cfg, max_length=MAX_LENGTH)


KIND_SHARES = (0.2, 0.1, 0.5, 0.2)  # open, closed, multiple choice, short answer


def conversation(label: int, letter: int, rng: np.random.Generator) -> list[dict]:
    """One training conversation for an image of class `label` marked with `letter`, in one
    of the protocols' prompt forms."""
    name, kind = CLASSES[label], rng.choice(4, p=KIND_SHARES)
    if kind == 0:
        question, answer = prompts.QUESTION, f"{prompts.LEAD_IN} {name}"
    elif kind == 1:
        names = [CLASSES[c] for c in rng.permutation(len(CLASSES))]
        question = prompts.closed_world_question(prompts.QUESTION, names)
        answer = f"{prompts.LEAD_IN} {name}"
    elif kind == 2:
        others = rng.choice([c for c in range(len(CLASSES)) if c != label], K - 1, replace=False)
        options = [CLASSES[c] for c in rng.permutation(others)]
        options.insert(letter, name)
        question = prompts.multiple_choice_question(prompts.QUESTION, options)
        answer = LETTERS[letter]
    else:
        question, answer = prompts.short_answer_question("What is this?"), name
    return [{"from": "human", "value": question}, {"from": "gpt", "value": answer}]


def train(model, enc: ConversationEncoder, steps: int, batch: int = 8, lr: float = 3e-3, seed=0):
    """Trains every parameter on random conversations; returns the trained model."""
    preprocess = image_ops.preprocess_config_for(model.cfg.encoder)
    graphdef, params = nnx.split(model)
    tx = optax.adam(optax.warmup_cosine_decay_schedule(0.0, lr, steps // 10, steps, lr / 10))
    opt_state = tx.init(params)

    # Optimized code even under the tests' XLA opt level 0: the loop runs hundreds of steps.
    @functools.partial(jax.jit, compiler_options={"xla_backend_optimization_level": 3})
    def step(params, opt_state, tokens, loss_mask, input_mask, images):
        def loss(params):
            logits = nnx.merge(graphdef, params)(tokens, images, input_mask=input_mask).logits
            total, count, _ = next_token_loss(logits, tokens, loss_mask)
            return total / count

        value, grads = jax.value_and_grad(loss)(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, value

    rng = np.random.default_rng(seed)
    for _ in range(steps):
        labels = rng.integers(0, len(CLASSES), batch)
        letters = rng.integers(0, K, batch)
        tokens = np.zeros((batch, MAX_LENGTH), np.int32)
        loss_mask = np.zeros((batch, MAX_LENGTH), bool)
        input_mask = np.zeros((batch, MAX_LENGTH), bool)
        for row, (label, letter) in enumerate(zip(labels, letters)):
            sample = enc.encode(conversation(int(label), int(letter), rng), has_image=True)
            n = len(sample.tokens)
            tokens[row, :n], loss_mask[row, :n], input_mask[row, :n] = (
                sample.tokens,
                sample.loss_mask,
                True,
            )
        images = image_ops.preprocess_batch(
            list(make_images(labels, letters, int(rng.integers(1 << 30)))), preprocess
        )
        params, opt_state, value = step(
            params, opt_state, tokens, loss_mask, input_mask, jnp.asarray(images)
        )
    return nnx.merge(graphdef, params), float(value)


def write_split(directory: Path, name: str, dataset) -> str:
    """A JSONL classification file of a planted dataset (images as PNG files)."""
    labels = dataset.labels()
    lines = []
    for i in range(len(dataset)):
        Image.fromarray(dataset[i]["image"]).save(directory / f"{name}{i}.png")
        lines.append({"image": f"{name}{i}.png", "label": CLASSES[labels[i]], "id": f"{name}-{i}"})  # fmt: skip
    (directory / f"{name}.jsonl").write_text("\n".join(json.dumps(x) for x in lines))
    return str(directory / f"{name}.jsonl")
