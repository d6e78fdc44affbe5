"""Alt-text style captions and general question-answer pairs for a specimen scene.

Captions imitate web alt-text: about 40% name the class, the rest mention only the family,
the colour and background, or nothing useful at all. Questions never need fine-grained
knowledge (count, background colour and texture, border, coarse colour, side); each comes with
its options (every possible answer) for multiple-choice use, joined by OPTION_SEP.
"""

from __future__ import annotations

import re

import numpy as np

from fgjax.data.specimens import taxonomy
from fgjax.data.specimens.scenes import BACKGROUNDS, SIDES, TEXTURES

OPTION_SEP = "|"
CAPTION_KINDS = ("name", "family", "scene", "generic")
CAPTION_KIND_PROBS = (0.4, 0.3, 0.15, 0.15)
NUMBER_WORDS = ("zero", "one", "two", "three")

# Placeholders: {name} {names} {family} {families} {objects} {colour} {bg} {texture} {count}
# {a} ({names}, {families}, {objects} are plural when count > 1; {a} is "a" or the count word).
CAPTIONS = {
    "name": (
        "{name}",
        "{a} {names}",
        "{a} {names} on a {bg} background",
        "photo of {a} {names}",
        "{names}, {bg} backdrop",
        "close-up of {a} {names} ({family})",
        "field guide plate: {name}",
        "{Name}. Specimen from the collection.",
        "my {names} on {bg} paper",
        "{a} {names} photographed against {bg}",
    ),
    "family": (
        "{a} {colour} {families}",
        "{families} on {bg}",
        "{a} {families} on a {texture} {bg} background",
        "picture of {a} {families}",
        "{family} specimen",
        "{Families}!",
        "{a} {colour} {families} lying on {bg} paper",
    ),
    "scene": (
        "something {colour} on a {bg} background",
        "{count} {colour} {objects} on {bg}",
        "{colour} on {bg}",
        "{a} small {colour} {objects}, {texture} background",
        "a {bg} {texture} backdrop with {colour} shapes",
    ),
    "generic": (
        "image",
        "photo",
        "untitled",
        "IMG_{digits}",
        "DSC{digits}.jpg",
        "from my collection",
        "specimen photo",
        "close-up",
        "new one today",
    ),
}

QUESTIONS = {  # kind -> (phrasings, options)
    "count": (
        ("How many specimens are in the image?", "How many objects are there?",
         "How many specimens can you see?"),
        NUMBER_WORDS[1:],
    ),
    "background": (
        ("What colour is the background?", "What is the background colour?"),
        tuple(BACKGROUNDS),
    ),
    "border": (
        ("Is there a border around the image?", "Does the picture have a frame?"),
        ("yes", "no"),
    ),
    "colour": (
        ("What colour is the specimen?", "What is the main colour of the object?"),
        tuple(f.colour for f in taxonomy.FAMILIES),
    ),
    "side": (
        ("Which side of the image is the specimen on?", "Where in the picture is the object?"),
        SIDES,
    ),
    "texture": (
        ("What does the background look like?", "Is the background plain, gradient, striped "
         "or grainy?"),
        TEXTURES,
    ),
}  # fmt: skip


def _pick(rng: np.random.Generator, items):
    return items[int(rng.integers(len(items)))]


def caption(rng: np.random.Generator, label: int, count: int, background: int, texture: int):
    """One alt-text caption. Returns (caption, kind) with kind in CAPTION_KINDS."""
    cls = taxonomy.classes()[label]
    fam = taxonomy.FAMILIES[cls.family]
    kind = CAPTION_KINDS[int(rng.choice(len(CAPTION_KINDS), p=CAPTION_KIND_PROBS))]
    plural_name = f"{cls.name.rsplit(' ', 1)[0]} {fam.plural}"
    fields = dict(
        name=cls.name,
        Name=cls.name.capitalize(),
        names=plural_name if count > 1 else cls.name,
        family=fam.noun,
        families=fam.plural if count > 1 else fam.noun,
        Families=(fam.plural if count > 1 else fam.noun).capitalize(),
        colour=fam.colour,
        bg=list(BACKGROUNDS)[background],
        texture=TEXTURES[texture],
        count=NUMBER_WORDS[count],
        objects="objects" if count > 1 else "object",
        a=NUMBER_WORDS[count] if count > 1 else "a",
        digits=f"{int(rng.integers(10000)):04d}",
    )
    text = _pick(rng, CAPTIONS[kind]).format(**fields)
    return re.sub(r"\b([Aa]) (?=[aeiou])", r"\1n ", text), kind  # "a apricot" -> "an apricot"


def questions(
    rng: np.random.Generator, label: int, count: int, background: int, texture: int,
    border: bool, side: int,
) -> tuple[list[str], list[str], list[str]]:  # fmt: skip
    """Five general QA pairs: (questions, answers, options joined by OPTION_SEP)."""
    answers = {
        "count": NUMBER_WORDS[count],
        "background": list(BACKGROUNDS)[background],
        "border": "yes" if border else "no",
        "colour": taxonomy.FAMILIES[taxonomy.classes()[label].family].colour,
    }
    # Sides are only well defined for one specimen; several get a texture question instead.
    if count == 1:
        answers["side"] = SIDES[side]
    else:
        answers["texture"] = TEXTURES[texture]
    qs, ans, opts = [], [], []
    for kind, answer in answers.items():
        phrasings, options = QUESTIONS[kind]
        if kind == "colour" and count > 1:
            phrasings = (
                "What colour are the specimens?",
                "What is the main colour of the objects?",
            )
        qs.append(_pick(rng, phrasings))
        ans.append(answer)
        opts.append(OPTION_SEP.join(options))
    return qs, ans, opts


def split_options(options: str) -> list[str]:
    """The inverse of the OPTION_SEP joining used in `options`."""
    return options.split(OPTION_SEP)
