"""The fast path: examples of a split as numpy arrays and lists, without TFDS.

The TFDS builder calls `generate_batches` too, so both give the very same examples.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from fgjax.data.specimens import draw, scenes, taxonomy, text

RESOLUTIONS = (32, 64, 128)  # any multiple of 8 from 16 up works; these are tested
DEFAULT_SIZES = {"train": 20_000, "validation": 2_000, "test": 5_000}


def example_id(seed: int, split: str, index: int) -> str:
    return f"specimens-s{seed}-{split}-{index:06d}"


def _check(split: str, n: int, resolution: int, start: int) -> None:
    scenes.split_index(split)  # raises for an unknown split
    if n < 0 or start < 0:
        raise ValueError(f"need n >= 0 and start >= 0, got n={n}, start={start}")
    if resolution < 16 or resolution % 8:
        raise ValueError(f"resolution={resolution}: use a multiple of 8, at least 16 (e.g. 32, 64)")


def generate(
    split: str, n: int, resolution: int = 64, seed: int = 0, start: int = 0, batch_size: int = 512
) -> dict:
    """Examples `start .. start + n - 1` of `split`, all in memory.

    Returns a dict with
      id: list[str]; image: u8[n, R, R, 3]; label, family: i32[n];
      class_name, family_name, caption: list[str]; caption_kind: list[str] (text.CAPTION_KINDS);
      questions, answers, options: list[list[str]] (5 per example; options are the possible
      answers joined by text.OPTION_SEP).
    """
    batches = list(generate_batches(split, n, resolution, seed, start, batch_size))
    if not batches:
        batches = [_empty(resolution)]
    out = {}
    for key, first in batches[0].items():
        if isinstance(first, np.ndarray):
            out[key] = np.concatenate([b[key] for b in batches])
        else:
            out[key] = [item for b in batches for item in b[key]]
    return out


def generate_batches(
    split: str, n: int, resolution: int = 64, seed: int = 0, start: int = 0, batch_size: int = 512
) -> Iterator[dict]:
    """The same examples as `generate`, as a stream of dicts of at most `batch_size`."""
    _check(split, n, resolution, start)
    for lo in range(start, start + n, batch_size):
        indices = range(lo, min(lo + batch_size, start + n))
        yield _batch(split, indices, resolution, seed)


def _batch(split: str, indices: range, resolution: int, seed: int) -> dict:
    batch = scenes.sample(seed, split, indices, resolution)
    classes = taxonomy.classes()
    out = _empty(resolution)
    out["image"] = draw.render(batch, resolution)
    out["label"] = batch.label
    out["family"] = np.array([classes[label].family for label in batch.label], np.int32)
    for row, index in enumerate(indices):
        label, count = int(batch.label[row]), int(batch.count[row])
        background, texture = int(batch.background[row]), int(batch.texture[row])
        rng = scenes.example_rng(seed, split, index, scenes.TEXT_STREAM)
        caption, caption_kind = text.caption(rng, label, count, background, texture)
        qs, answers, options = text.questions(
            rng, label, count, background, texture, batch.border[row] >= 0, int(batch.side[row])
        )
        out["id"].append(example_id(seed, split, index))
        out["class_name"].append(classes[label].name)
        out["family_name"].append(taxonomy.FAMILIES[classes[label].family].noun)
        out["caption"].append(caption)
        out["caption_kind"].append(caption_kind)
        out["questions"].append(qs)
        out["answers"].append(answers)
        out["options"].append(options)
    return out


def _empty(resolution: int) -> dict:
    return dict(
        id=[],
        image=np.zeros((0, resolution, resolution, 3), np.uint8),
        label=np.zeros((0,), np.int32),
        class_name=[],
        family=np.zeros((0,), np.int32),
        family_name=[],
        caption=[],
        caption_kind=[],
        questions=[],
        answers=[],
        options=[],
    )
