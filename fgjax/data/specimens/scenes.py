"""Scene parameters: everything random about one example, drawn from (seed, split, index).

Each example owns its random streams, seeded by `(seed, split, index, stream)`, so an example
never depends on which others are generated with it, in what order, or in which process.
Labels are balanced: each block of 100 consecutive indices holds every class once, in a
seeded order.
"""

from __future__ import annotations

import dataclasses
import functools
import math

import numpy as np

from fgjax.data.specimens import taxonomy

SPLITS = ("train", "validation", "test")
MAX_COUNT = 3
COUNT_PROBS = (0.6, 0.25, 0.15)  # 1, 2 or 3 specimens (all of the example's class)
SIDES = ("left", "center", "right")  # of a single specimen
SIDE_X = (0.3, 0.5, 0.7)
BACKGROUNDS = {  # name -> RGB in [0, 1]; muted so every specimen shade stays visible
    "white": (0.95, 0.95, 0.94),
    "light gray": (0.74, 0.74, 0.74),
    "dark gray": (0.33, 0.33, 0.34),
    "black": (0.08, 0.08, 0.09),
    "beige": (0.91, 0.85, 0.7),
    "pale blue": (0.76, 0.85, 0.95),
    "pale green": (0.79, 0.9, 0.77),
    "pink": (0.95, 0.8, 0.84),
}
TEXTURES = ("plain", "gradient", "striped", "grainy")
BORDERS = {"black": (0.06, 0.06, 0.06), "white": (0.97, 0.97, 0.97), "brown": (0.45, 0.3, 0.17)}
BORDER_PROB = 0.3
BORDER_MIN_CONTRAST = 0.35  # RGB distance: a border must stand out from the background

# Stream tags: separate streams keep images unchanged when, say, caption templates change.
SCENE_STREAM, TEXT_STREAM, LABEL_STREAM, BENCHMARK_STREAM = 0, 1, 2, 3


def split_index(split: str) -> int:
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; choose one of {SPLITS}")
    return SPLITS.index(split)


def example_rng(seed: int, split: str, index: int, stream: int) -> np.random.Generator:
    return np.random.default_rng([seed, split_index(split), index, stream])


@functools.lru_cache(maxsize=64)
def _label_block(seed: int, split: str, block: int) -> np.ndarray:
    num_classes = len(taxonomy.classes())
    return example_rng(seed, split, block, LABEL_STREAM).permutation(num_classes)


def label_of(seed: int, split: str, index: int) -> int:
    num_classes = len(taxonomy.classes())
    return int(_label_block(seed, split, index // num_classes)[index % num_classes])


@dataclasses.dataclass
class Scenes:
    """Parameters of B examples; specimen arrays have a slot axis S = MAX_COUNT (slots at or
    beyond `count` are unused). Positions and scales are fractions of the image size."""

    label: np.ndarray  # i32[B]
    count: np.ndarray  # i32[B], 1..MAX_COUNT
    side: np.ndarray  # i32[B], index into SIDES; -1 when count > 1
    background: np.ndarray  # i32[B], index into BACKGROUNDS
    texture: np.ndarray  # i32[B], index into TEXTURES
    texture_dir: np.ndarray  # f32[B, 2], unit vector of the gradient / stripe direction
    texture_freq: np.ndarray  # f32[B], stripes per image width
    border: np.ndarray  # i32[B], index into BORDERS; -1: no border
    illumination: np.ndarray  # f32[B], global brightness factor
    center: np.ndarray  # f32[B, S, 2], (x, y)
    scale: np.ndarray  # f32[B, S], image fraction per local unit (a specimen is ~2 units long)
    rotation: np.ndarray  # f32[B, S, 2], (cos, sin) of the pose angle
    body_rgb: np.ndarray  # f32[B, S, 3]
    mark_rgb: np.ndarray  # f32[B, S, 3]
    noise: np.ndarray  # f32[B, H, W, 3], additive pixel noise
    grain: np.ndarray  # f32[B, H, W], background grain (zero unless texture is "grainy")


def _layout(rng: np.random.Generator, count: int) -> tuple[list, list, int]:
    """Centres, scales and (for one specimen) the side, placed so specimens never overlap."""
    jitter = lambda a: float(rng.uniform(-a, a))
    if count == 1:
        side = int(rng.integers(3))
        centres = [(SIDE_X[side] + jitter(0.02), 0.5 + jitter(0.1))]
        return centres, [float(rng.uniform(0.21, 0.29))], side
    if count == 2:
        a, b = 0.28 + jitter(0.02), 0.72 + jitter(0.02)
        c = 0.5 + jitter(0.08)
        centres = [(a, c), (b, c)] if rng.random() < 0.5 else [(c, a), (c, b)]
        return centres, [float(rng.uniform(0.16, 0.21)) for _ in range(2)], -1
    top, bottom = (0.3, 0.73) if rng.random() < 0.5 else (0.7, 0.27)
    centres = [(0.27 + jitter(0.02), top), (0.73 + jitter(0.02), top), (0.5, bottom + jitter(0.02))]
    return centres, [float(rng.uniform(0.14, 0.18)) for _ in range(3)], -1


def _border(rng: np.random.Generator, background: int) -> int:
    """A border colour that contrasts with the background (no white frame on white)."""
    bg = np.array(list(BACKGROUNDS.values())[background])
    colours = np.array(list(BORDERS.values()))
    visible = np.flatnonzero(np.linalg.norm(colours - bg, axis=1) > BORDER_MIN_CONTRAST)
    return int(visible[rng.integers(len(visible))])


def _noise(rng: np.random.Generator, shape) -> np.ndarray:
    """f32 noise of unit variance: the sum of two random bytes (a triangular distribution),
    several times cheaper than Gaussian draws and just as good for pixel noise."""
    size = int(np.prod(shape))
    raw = rng.bit_generator.random_raw((2 * size + 7) // 8).view(np.uint8)[: 2 * size]
    pairs = raw.reshape(2, *shape).astype(np.float32)
    return (pairs[0] + pairs[1] - 255.0) * np.float32(6**0.5 / 255)


def sample_one(seed: int, split: str, index: int, resolution: int) -> dict:
    """The scene of one example as a dict of numpy values (one row of `Scenes`)."""
    rng = example_rng(seed, split, index, SCENE_STREAM)
    cls = taxonomy.classes()[label_of(seed, split, index)]
    count = 1 + int(np.searchsorted(np.cumsum(COUNT_PROBS)[:-1], rng.random(), side="right"))
    centres, scales, side = _layout(rng, count)
    body = np.array(taxonomy.body_colour(cls))
    mark = np.array(taxonomy.marking_colour(cls))
    slots = dict(center=np.zeros((MAX_COUNT, 2)), scale=np.ones(MAX_COUNT))
    slots.update(rotation=np.tile([1.0, 0.0], (MAX_COUNT, 1)))
    slots.update(body_rgb=np.zeros((MAX_COUNT, 3)), mark_rgb=np.zeros((MAX_COUNT, 3)))
    for k in range(count):
        angle = rng.uniform(0, 2 * math.pi)
        slots["center"][k] = centres[k]
        slots["scale"][k] = scales[k]
        slots["rotation"][k] = (math.cos(angle), math.sin(angle))  # libm: platform-exact
        # Per-specimen colour jitter, much smaller than the step between two shades.
        slots["body_rgb"][k] = body * rng.uniform(0.95, 1.05) + rng.uniform(-0.02, 0.02, 3)
        slots["mark_rgb"][k] = mark * rng.uniform(0.9, 1.1) + rng.uniform(-0.02, 0.02, 3)
    background = int(rng.integers(len(BACKGROUNDS)))
    texture = int(rng.integers(len(TEXTURES)))
    angle = rng.uniform(0, 2 * math.pi)
    size = (resolution, resolution)
    grain = _noise(rng, size) if TEXTURES[texture] == "grainy" else np.zeros(size, np.float32)
    return dict(
        label=cls.label,
        count=count,
        side=side,
        background=background,
        texture=texture,
        texture_dir=(math.cos(angle), math.sin(angle)),
        texture_freq=rng.uniform(3, 7),
        border=_border(rng, background) if rng.random() < BORDER_PROB else -1,
        illumination=rng.uniform(0.88, 1.12),
        noise=_noise(rng, (*size, 3)) * rng.uniform(0.01, 0.04),
        grain=grain,
        **slots,
    )


def sample(seed: int, split: str, indices, resolution: int) -> Scenes:
    """Scenes of the examples `indices` (any order; each row depends on its own index only)."""
    rows = [sample_one(seed, split, int(i), resolution) for i in indices]
    fields = {f.name for f in dataclasses.fields(Scenes)}
    stacked = {k: np.stack([np.asarray(r[k]) for r in rows]) for k in fields}
    as_type = lambda a: a.astype(np.int32 if a.dtype.kind in "iu" else np.float32, copy=False)
    return Scenes(**{k: as_type(v) for k, v in stacked.items()})
