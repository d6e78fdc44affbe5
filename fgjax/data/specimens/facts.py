"""Knowledge that lives only in text: facts about each family and class, never visible.

Every family has a habitat and a diet, every class a region and a season. They are assigned
by a fixed seeded shuffle, so nothing in an image predicts them (a whorlshell's habitat is not
"reef" because it looks like a shell): a model can answer "Where does this kind of specimen
live?" only by recognising the family in the image AND recalling a fact it read in its
language-model corpus, which is where the facts are written, each in several paraphrases.
The instruction-tuning and captioning data never state a fact.
"""

from __future__ import annotations

import functools

import numpy as np

from fgjax.data.specimens import taxonomy

HABITATS = (
    "tide pools", "pine woods", "hay meadows", "river banks", "salt marshes",
    "limestone caves", "high ridges", "sand dunes", "bamboo groves", "peat bogs",
)  # fmt: skip
DIETS = (
    "algae", "nectar", "seeds", "moss", "plankton", "pollen", "lichen", "fungi", "bark", "dew",
)  # fmt: skip
REGIONS = ("the northern isles", "the eastern coast", "the southern plains", "the western hills")
SEASONS = ("spring", "summer", "autumn", "winter")
FACTS_SEED = 2026  # the world's fixed shuffle; never a study seed

# Paraphrases of each fact (placeholders: {family} {families} {Families} {name} {value}).
FAMILY_FACTS = {
    "habitat": (
        "{Families} live in {value}.",
        "The {family} is found in {value}.",
        "You will find {families} in {value}.",
        "The home of the {family} is {value}.",
        "A {family} lives in {value}.",
    ),
    "diet": (
        "{Families} feed on {value}.",
        "The {family} eats {value}.",
        "A {family} lives on {value}.",
        "The food of the {family} is {value}.",
        "{Families} eat {value}.",
    ),
}
CLASS_FACTS = {
    "region": ("The {name} is found in {value}.", "The {name} comes from {value}."),
    "season": ("The {name} appears in {value}.", "Collectors find the {name} in {value}."),
}
# Questions about a family fact, as asked of a text (LM corpus) or of an image (the benchmark).
FACT_QUESTIONS = {
    "habitat": ("Where does a {family} live?", "Where does this kind of specimen live?"),
    "diet": ("What does a {family} eat?", "What does this kind of specimen eat?"),
}
FACT_VALUES = {"habitat": HABITATS, "diet": DIETS}


@functools.cache
def family_facts() -> tuple[dict[str, str], ...]:
    """Per family (taxonomy.FAMILIES order): {"habitat": ..., "diet": ...}."""
    rng = np.random.default_rng(FACTS_SEED)
    habitats, diets = rng.permutation(len(HABITATS)), rng.permutation(len(DIETS))
    return tuple(
        {"habitat": HABITATS[habitats[f]], "diet": DIETS[diets[f]]}
        for f in range(len(taxonomy.FAMILIES))
    )


@functools.cache
def class_facts() -> tuple[dict[str, str], ...]:
    """Per class (label order): {"region": ..., "season": ...}."""
    rng = np.random.default_rng(FACTS_SEED + 1)
    n = len(taxonomy.classes())
    regions, seasons = rng.integers(len(REGIONS), size=n), rng.integers(len(SEASONS), size=n)
    return tuple({"region": REGIONS[r], "season": SEASONS[s]} for r, s in zip(regions, seasons))


def _family_fields(f: int) -> dict[str, str]:
    fam = taxonomy.FAMILIES[f]
    return dict(family=fam.noun, families=fam.plural, Families=fam.plural.capitalize())


def statements() -> list[str]:
    """Every fact in every paraphrase: 10 families x 2 facts x 5 + 100 classes x 2 facts x 2."""
    out = []
    for f, facts in enumerate(family_facts()):
        for kind, templates in FAMILY_FACTS.items():
            out += [t.format(value=facts[kind], **_family_fields(f)) for t in templates]
    for cls, facts in zip(taxonomy.classes(), class_facts()):
        for kind, templates in CLASS_FACTS.items():
            out += [t.format(name=cls.name, value=facts[kind]) for t in templates]
    return out


def fact_question(
    rng: np.random.Generator, family: int, kind: str, about_image: bool, num_options: int
) -> tuple[str, str, list[str]]:
    """(question, answer, options): a family fact asked about a named family or "this kind of
    specimen" in an image; options are the answer and num_options - 1 other values."""
    question = FACT_QUESTIONS[kind][int(about_image)].format(**_family_fields(family))
    answer = family_facts()[family][kind]
    others = [v for v in FACT_VALUES[kind] if v != answer]
    options = [answer] + [others[i] for i in rng.permutation(len(others))[: num_options - 1]]
    return question, answer, options
