"""Specimens: the built-in procedural fine-grained dataset (100 classes in 10 families).

Fast path (numpy, no TFDS):   specimens.generate("train", 1000, resolution=32, seed=0)
TFDS (registered on import):  tfds.load("specimens/32") or Specimens(config=specimens.config(...))
Metadata:                     class_names(), family_names(), descriptions(), classes()
See docs/specimens.md for the design.
"""

from fgjax.data.specimens.builder import Specimens, SpecimensConfig, config
from fgjax.data.specimens.examples import DEFAULT_SIZES, example_id, generate, generate_batches
from fgjax.data.specimens.taxonomy import (
    FAMILIES,
    class_names,
    classes,
    descriptions,
    family_names,
    similarity,
)
from fgjax.data.specimens.text import CAPTION_KINDS, NUMBER_WORDS, OPTION_SEP, split_options

__all__ = [
    "CAPTION_KINDS",
    "DEFAULT_SIZES",
    "FAMILIES",
    "NUMBER_WORDS",
    "OPTION_SEP",
    "Specimens",
    "SpecimensConfig",
    "class_names",
    "classes",
    "config",
    "descriptions",
    "example_id",
    "family_names",
    "generate",
    "generate_batches",
    "similarity",
    "split_options",
]
