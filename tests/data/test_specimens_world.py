"""The study's miniature world: text-only facts, the three-part benchmark, taxonomy negatives."""

import numpy as np

from fgjax.data import specimens
from fgjax.data.specimens import benchmark, facts, taxonomy
from fgjax.evaluate import datasets, negatives
from fgjax.evaluate.vqa import specimens_questions


def test_facts_are_fixed_distinct_per_family_and_stated_in_paraphrases():
    family = facts.family_facts()
    assert len({f["habitat"] for f in family}) == len(family) == len(specimens.FAMILIES)
    assert len({f["diet"] for f in family}) == len(family)
    assert family == facts.family_facts()  # a fixed shuffle, no study seed
    statements = facts.statements()
    noun = specimens.FAMILIES[0].noun
    assert sum(noun in t.lower() and family[0]["habitat"] in t for t in statements) == 5
    assert len(facts.class_facts()) == len(specimens.classes())


def test_benchmark_asks_one_question_per_image_in_three_parts_with_true_answers():
    qs = specimens_questions({"benchmark": True, "size": 60, "resolution": 32})
    data = specimens.generate("test", 60, resolution=32)
    assert [q["type"] for q in qs] == [benchmark.part_of(i) for i in range(60)]
    for i, q in enumerate(qs):
        assert 2 <= len(q["options"]) <= benchmark.MAX_OPTIONS
        answer = q["options"][q["answer"]]
        fam = int(data["family"][i])
        if q["question"] == benchmark.KIND_QUESTION:
            assert answer == specimens.FAMILIES[fam].noun
        elif q["question"] == "Where does this kind of specimen live?":
            assert answer == facts.family_facts()[fam]["habitat"]
        elif q["type"] == "reasoning":
            count = data["answers"][i][0]  # the count question's answer
            lives = facts.family_facts()[fam]["habitat"] in q["question"]
            eats = facts.family_facts()[fam]["diet"] in q["question"]
            assert answer == (count if lives or eats else "zero")
        elif q["type"] == "perception":
            assert answer in data["answers"][i]
    blank = specimens_questions({"benchmark": True, "size": 6, "resolution": 32, "blank": True})
    assert [b["question"] for b in blank] == [q["question"] for q in qs[:6]]
    assert all(np.all(np.asarray(b["image"]) == 128) for b in blank)


def test_taxonomy_negatives_are_look_alikes_from_no_model():
    sim = np.asarray(specimens.similarity())
    assert np.allclose(sim, sim.T)
    test = datasets.from_spec({"name": "specimens", "source": "specimens", "size": 100,
                               "resolution": 32})  # fmt: skip
    scores = negatives.TaxonomyMiner().scores(test)
    picked = negatives.hardest_negatives(scores, test.labels(), 4)
    family = np.asarray([c.family for c in taxonomy.classes()])
    same = (family[picked] == family[test.labels()][:, None]).mean()
    assert 0.5 < same < 0.8  # look-alikes from the family and from other families
    for row, label in zip(picked, test.labels()):
        cls = taxonomy.classes()[label]
        for other in row:  # every negative shares at least one fine cue or the family
            o = taxonomy.classes()[other]
            assert (o.shade, o.pattern, o.form, o.family) != (cls.shade, cls.pattern, cls.form, cls.family)
            assert o.family == cls.family or (o.shade, o.pattern, o.form) == (cls.shade, cls.pattern, cls.form)
