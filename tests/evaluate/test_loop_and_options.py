"""The sharded evaluation loop (every example once, rows aligned with their prompts) and the
multiple-choice option sets (hard negatives, uniform letters, cached and reproducible)."""

from __future__ import annotations

import json

import jax.numpy as jnp
import numpy as np
import pytest
import scipy.stats
from flax import nnx

from fgjax import models
from fgjax.data import images as image_ops
from fgjax.data.images import PreprocessConfig
from fgjax.data.tokenizer import caption_ids
from fgjax.data.tokenizer_train import tiny_tokenizer
from fgjax.evaluate import choices, negatives
from fgjax.evaluate.datasets import ArraySource, ClassificationSet
from fgjax.evaluate.evaluator import DatasetRunner, _in_dataset_order
from fgjax.evaluate.prompts import pad_prompts
from fgjax.models.contrastive import ContrastiveConfig, TextTowerConfig
from fgjax.models.presets import encoder as encoder_preset

NAMES = tuple(
    f"{shade} {pattern} {family}"
    for family in ("moth", "shell", "beetle")
    for shade in ("pale", "bright", "deep")
    for pattern in ("plain", "banded", "striped")
)  # 27 classes with look-alike names


def labelled(size: int, num_classes: int = len(NAMES), seed: int = 0) -> ClassificationSet:
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, num_classes, size)
    images = rng.integers(0, 256, (size, 16, 16, 3)).astype(np.uint8)
    return ClassificationSet("looks", "test", NAMES[:num_classes], ArraySource(images, labels))


def test_every_example_once_and_rows_keep_their_prompts():
    """13 examples, global batch 4: the last batch is padded; each output row must belong to
    its example (image pixel, label, and a prompt built from its index)."""
    dataset = labelled(13)
    runner = DatasetRunner(PreprocessConfig(size=16, mode="resize_naive", mean=(0, 0, 0),
                                            std=(1, 1, 1)), batch_size=4, progress=False)  # fmt: skip

    def compute(batch):
        return {
            "prompt_sum": jnp.sum(batch["tokens"] * batch["mask"], axis=1),
            "pixel": batch["image"][:, 3, 5, 1],
        }

    out = runner.run(dataset, compute, lambda idx: [np.full(i % 4 + 1, i) for i in idx])
    index = np.arange(13)
    np.testing.assert_array_equal(out["index"], index)
    np.testing.assert_array_equal(out["prompt_sum"], index * (index % 4 + 1))
    np.testing.assert_array_equal(out["label"], dataset.labels())
    pixels = np.stack([dataset[i]["image"][3, 5, 1] for i in index]) / 255
    np.testing.assert_allclose(out["pixel"], pixels, atol=1e-6)


def test_missing_or_repeated_examples_are_an_error():
    rows = {"index": np.array([0, 1, 1, 3]), "label": np.zeros(4), "valid": np.ones(4, bool)}
    with pytest.raises(RuntimeError, match="1 examples were never evaluated and 1 more than once"):
        _in_dataset_order([rows], 4, "test")


def test_option_sets_hold_the_hardest_negatives_and_uniform_letters(tmp_path):
    dataset = labelled(1000)
    miner = negatives.TextMiner()
    sets = choices.option_sets(dataset, miner, k=5, seed=0, options_dir=tmp_path)
    labels = dataset.labels()
    similarity = miner.class_similarity(NAMES)
    for i in range(0, 1000, 37):
        options = sets.options[i]
        assert options[sets.answers[i]] == labels[i] and len(set(options)) == 5
        distractors = [c for c in options if c != labels[i]]
        others = np.delete(similarity[labels[i]], labels[i])
        # the four distractors are the four most similar other classes
        assert np.min(similarity[labels[i], distractors]) >= np.sort(others)[-4] - 1e-6
    counts = np.bincount(sets.answers, minlength=5)
    assert scipy.stats.chisquare(counts).pvalue > 0.01, counts
    # text similarity: every class's nearest other class differs from it in one word only
    for c, name in enumerate(NAMES):
        nearest = NAMES[np.argsort(-similarity[c], kind="stable")[1]]
        assert len(set(name.split()) & set(nearest.split())) == 2, (name, nearest)


def test_option_sets_are_cached_identical_on_rerun_and_guarded(tmp_path):
    dataset = labelled(40)
    first = choices.option_sets(dataset, negatives.TextMiner(), 5, 3, tmp_path)
    (path,) = tmp_path.iterdir()
    saved = json.loads(path.read_text())
    assert saved["miner"] == "text:char-ngram-tfidf" and saved["options"] == first.options.tolist()
    again = choices.option_sets(dataset, negatives.TextMiner(), 5, 3, tmp_path)  # read back
    path.unlink()
    mined_again = choices.option_sets(dataset, negatives.TextMiner(), 5, 3, tmp_path)
    for other in (again, mined_again):
        np.testing.assert_array_equal(other.options, first.options)
        np.testing.assert_array_equal(other.answers, first.answers)
    other_seed = choices.option_sets(dataset, negatives.TextMiner(), 5, 4, tmp_path)
    assert not np.array_equal(other_seed.answers, first.answers)
    changed = labelled(40, seed=1)  # same name, split and size, other examples
    with pytest.raises(ValueError, match="examples or labels differ"):
        choices.option_sets(changed, negatives.TextMiner(), 5, 3, tmp_path)


def test_contrastive_miner_ranks_classes_by_image_text_cosine(tmp_path):
    tok = tiny_tokenizer("bpe", vocab_size=300)
    cfg = ContrastiveConfig(
        image=encoder_preset("tiny_siglip", image_size=16),
        text=TextTowerConfig(vocab_size=tok.vocab_size, width=32, depth=1, num_heads=2, mlp_dim=64),
        embed_dim=16,
    )
    model = models.build(cfg, seed=0)
    miner = negatives.ContrastiveMiner(model, tok, source="test", batch_size=4, progress=False)
    dataset = labelled(9, num_classes=8)
    scores = miner.scores(dataset)
    # reference: all images in one batch, captions tokenized and padded here
    graphdef, state = nnx.split(model)
    captions = [
        caption_ids(tok, f"a photo of a {name}.", cfg.text.max_length) for name in dataset.class_names
    ]
    tokens, mask = pad_prompts(captions, bucket=1)
    texts = negatives._embed_texts(graphdef, state, tokens, mask)
    pixels = image_ops.preprocess_batch([dataset[i]["image"] for i in range(9)],
                                        image_ops.preprocess_config_for(cfg.image))  # fmt: skip
    expected = np.asarray(negatives._embed_images(graphdef, state, pixels) @ texts.T)
    np.testing.assert_allclose(scores, expected, atol=1e-5)
    sets = choices.option_sets(dataset, miner, 3, 0, tmp_path)
    assert sets.miner == "contrastive:test"
    for i in range(9):
        top = [c for c in np.argsort(-expected[i], kind="stable") if c != dataset.labels()[i]][:2]
        assert sorted(c for c in sets.options[i] if c != dataset.labels()[i]) == sorted(top)
