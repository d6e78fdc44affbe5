"""The specimens taxonomy: 10 families of 10 fine-grained classes each (100 classes).

A family is a silhouette with its own hue. A class within a family is a combination of three
fine cues:
  shade    pale | bright | deep        (saturation and value of the family hue)
  pattern  plain | spotted | banded | striped | rimmed | mottled | eyed | tipped
           (dark markings a few pixels wide, drawn in the specimen's own frame)
  form     stout | slender             (width-to-length proportion)
Each family uses 5 of the 8 patterns (a window that moves by 3 per family); each pattern
gives a pair of classes that differ in exactly one other cue (shade or form), so every class
has a look-alike sibling, and classes sharing shade and form differ by pattern alone. Class names read "[slender] <shade word>
[<pattern word>] <family noun>", e.g. "crimson banded whorlshell".
"""

from __future__ import annotations

import colorsys
import dataclasses
import functools

SHADES = ("pale", "bright", "deep")
PATTERNS = ("plain", "spotted", "banded", "striped", "rimmed", "mottled", "eyed", "tipped")
FORMS = ("stout", "slender")
CLASSES_PER_FAMILY = 10

# (saturation, value) of each shade; the steps are far wider than the per-example colour jitter.
SHADE_SV = ((0.42, 0.97), (0.78, 0.85), (0.92, 0.55))
SLENDER_ASPECT = 0.68  # width multiplier of the slender form

PATTERN_PHRASES = {
    "plain": "and carries no markings at all",
    "spotted": "with three small dark spots in a row along its length",
    "banded": "crossed by two narrow dark bands",
    "striped": "with a single dark stripe running lengthwise down the middle",
    "rimmed": "edged all round with a dark rim",
    "mottled": "covered in a fine dark checkered mottling",
    "eyed": "with one large dark eyespot near one end",
    "tipped": "with one end dark, as if dipped in ink",
}
SHADE_PHRASES = ("a pale, washed-out", "a bright, clear", "a deep, dark")


@dataclasses.dataclass(frozen=True)
class Family:
    noun: str  # also the family name
    plural: str
    colour: str  # coarse colour word used in captions and general questions
    hue: float  # degrees on the colour wheel
    shade_words: tuple[str, str, str]  # pale, bright, deep
    blurb: str  # what the silhouette looks like
    part: str  # the body part that carries colour and markings


FAMILIES = (
    Family("whorlshell", "whorlshells", "red", 2, ("salmon", "scarlet", "crimson"),
           "a snail-like shell with a rounded whorl and a flared opening", "shell"),
    Family("shieldbeetle", "shieldbeetles", "orange", 28, ("apricot", "tangerine", "rust"),
           "a beetle with an oval, shield-shaped back, a round head and stubby legs", "back"),
    Family("duskmoth", "duskmoths", "yellow", 52, ("lemon", "golden", "ochre"),
           "a moth with two pairs of broad rounded wings", "wings"),
    Family("spearleaf", "spearleaves", "lime", 85, ("pistachio", "chartreuse", "olive"),
           "a pointed, lens-shaped leaf on a short stalk", "blade"),
    Family("reeffish", "reeffish", "green", 135, ("mint", "emerald", "pine"),
           "a small oval fish with a forked tail", "body"),
    Family("domecap", "domecaps", "teal", 178, ("aqua", "turquoise", "spruce"),
           "a mushroom with a broad domed cap on a short stem", "cap"),
    Family("spirecrystal", "spirecrystals", "blue", 215, ("sky", "cobalt", "navy"),
           "a six-sided crystal prism with pointed ends", "faces"),
    Family("brittlestar", "brittlestars", "purple", 262, ("lavender", "violet", "indigo"),
           "a sea star with five tapering arms", "arms"),
    Family("quillfeather", "quillfeathers", "magenta", 298, ("orchid", "fuchsia", "plum"),
           "a long, narrow feather with a rounded tip", "vane"),
    Family("starbloom", "starblooms", "pink", 332, ("blush", "cerise", "raspberry"),
           "a flower with six rounded petals", "petals"),
)  # fmt: skip


@dataclasses.dataclass(frozen=True)
class SpecimenClass:
    label: int
    family: int
    shade: int  # index into SHADES
    pattern: int  # index into PATTERNS
    form: int  # index into FORMS
    name: str
    description: str  # the "encyclopedia" entry: family and distinguishing cues, in words


def _family_combos(f: int) -> list[tuple[int, int, int]]:
    """The 10 (shade, pattern, form) triples of family `f`: 5 patterns x a one-cue pair."""
    combos = []
    for k in range(CLASSES_PER_FAMILY // 2):
        pattern = (3 * f + k) % len(PATTERNS)
        shade, form = (k + f) % len(SHADES), k % 2
        twin = (shade, 1 - form) if k in (2, 3) else ((shade + 1) % len(SHADES), form)
        combos += [(shade, pattern, form), (twin[0], pattern, twin[1])]
    return combos


def _class_name(fam: Family, shade: int, pattern: int, form: int) -> str:
    words = ["slender"] if FORMS[form] == "slender" else []
    words.append(fam.shade_words[shade])
    if PATTERNS[pattern] != "plain":
        words.append(PATTERNS[pattern])
    return " ".join([*words, fam.noun])


def _description(name: str, fam: Family, shade: int, pattern: int, form: int) -> str:
    others = [w for i, w in enumerate(fam.shade_words) if i != shade]
    build = (
        f"It is noticeably slender, narrower than most {fam.plural}."
        if FORMS[form] == "slender"
        else f"It has the broad, stout build typical of {fam.plural}."
    )
    return (
        f"The {name} is a {fam.noun}, {fam.blurb}. "
        f"Its {fam.part} {'are' if fam.part.endswith('s') else 'is'} {SHADE_PHRASES[shade]} "
        f"{fam.shade_words[shade]} (not {others[0]} or {others[1]}), "
        f"{PATTERN_PHRASES[PATTERNS[pattern]]}. {build}"
    )


@functools.cache
def classes() -> tuple[SpecimenClass, ...]:
    """All classes; `classes()[label]` describes fine class `label`."""
    out = []
    for f, fam in enumerate(FAMILIES):
        for shade, pattern, form in sorted(_family_combos(f)):
            name = _class_name(fam, shade, pattern, form)
            desc = _description(name, fam, shade, pattern, form)
            out.append(SpecimenClass(len(out), f, shade, pattern, form, name, desc))
    return tuple(out)


def class_names() -> list[str]:
    return [c.name for c in classes()]


def family_names() -> list[str]:
    return [f.noun for f in FAMILIES]


def descriptions() -> dict[str, str]:
    """Class name -> its 2-3 sentence encyclopedia description (for LLM pretraining text)."""
    return {c.name: c.description for c in classes()}


def rgb(hue: float, saturation: float, value: float) -> tuple[float, float, float]:
    """HSV (hue in degrees) -> RGB floats in [0, 1]."""
    return colorsys.hsv_to_rgb((hue % 360) / 360, saturation, value)


def body_colour(cls: SpecimenClass) -> tuple[float, float, float]:
    return rgb(FAMILIES[cls.family].hue, *SHADE_SV[cls.shade])


def marking_colour(cls: SpecimenClass) -> tuple[float, float, float]:
    """Markings are a near-black tone of the family hue, the same for every shade."""
    return rgb(FAMILIES[cls.family].hue, 0.7, 0.2)


FAMILY_BONUS = 1.5  # a shared family counts as much as 1.5 shared cues


@functools.cache
def similarity() -> tuple[tuple[float, ...], ...]:
    """[C][C] how alike two classes are from the taxonomy alone: shared fine cues (shade,
    pattern, form; 0-3) plus FAMILY_BONUS for the same family. A class's nearest classes are
    its sibling (same family, two cues), other families' classes with all three cues, then its
    family's one-cue look-alikes: hard negatives that need the fine cues, from the taxonomy
    rather than from any model the study trains."""
    cs = classes()
    return tuple(
        tuple(
            float((a.shade == b.shade) + (a.pattern == b.pattern) + (a.form == b.form))
            + FAMILY_BONUS * (a.family == b.family)
            for b in cs
        )
        for a in cs
    )
