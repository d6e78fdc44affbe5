"""Training records built from the specimens dataset."""

import json

import numpy as np
import pytest

from fgjax.data import specimens
from fgjax.data.specimens import facts
from fgjax.data.specimens_source import (
    CAPTION_QUESTION,
    LETTERS,
    MULTIPLE_CHOICE,
    SHORT_ANSWER,
    SpecimensSource,
    corpus,
)


@pytest.fixture(scope="module")
def instruct():
    return SpecimensSource("instruct", size=300, resolution=32, seed=0)


def test_instruct_records_ask_general_questions_with_correct_answers(instruct):
    letters, caption_turns = [], 0
    for i in range(len(instruct)):
        turns = instruct[i]["conversations"]
        assert turns[0]["value"].startswith("<image>\n") and len(turns) in (2, 4, 6)
        questions = instruct.data["questions"][i]
        answers = dict(zip(questions, instruct.data["answers"][i]))
        for human, gpt in zip(turns[::2], turns[1::2]):
            text = human["value"].removeprefix("<image>\n")
            question = text.split("\n")[0]
            if text == CAPTION_QUESTION:  # the alt-text, as LLaVA-665K's short-caption rows
                assert gpt["value"] == instruct.data["caption"][i]
                caption_turns += 1
                continue
            assert question in answers
            if "Answer with the option's letter" in text:
                options = dict(line.split(". ", 1) for line in text.split("\n")[1:-1])
                assert 2 <= len(options) <= 5 and options[gpt["value"]] == answers[question]
                letters.append((len(options), gpt["value"]))
            else:
                assert (
                    text == SHORT_ANSWER.format(question=question)
                    and gpt["value"] == answers[question]
                )
        # no class name is taught by the instruction data beyond what the captions say
        name = specimens.class_names()[instruct.data["label"][i]]
        assert not any(name in t["value"] for t in turns if t["value"] != instruct.data["caption"][i])
    assert 0.12 < caption_turns / len(instruct) < 0.28  # half the short-answer records
    # among 5-option questions, the correct letter is spread over A..E
    counts = np.asarray([letters.count((5, x)) for x in LETTERS[:5]])
    assert counts.min() > 0.5 * counts.mean(), counts


def test_formats_match_the_evaluation_prompts():
    from fgjax.evaluate import prompts

    assert MULTIPLE_CHOICE == prompts.MULTIPLE_CHOICE
    assert SHORT_ANSWER == prompts.SHORT_ANSWER


def test_captions_text_and_classify_records():
    captions = SpecimensSource("captions", size=100)
    assert (
        captions[0]["image"].shape == (32, 32, 3)
        and captions[0]["caption"] == captions.data["caption"][0]
    )
    assert captions[0]["conversations"][1]["value"] == captions[0]["caption"]
    curated = SpecimensSource("curated", split="validation", size=50)
    assert curated[3]["caption"] == curated.data["class_name"][3]
    text = SpecimensSource("text", size=100)
    texts = set(specimens.descriptions().values()) | set(facts.statements())
    assert len(text) == 100 + 4 * len(texts) + 100
    assert text[100]["text"] in texts and text[len(text) - 101]["text"] in texts
    classify = SpecimensSource("classify", size=100)
    for i in range(20):
        name, turns = classify.data["class_name"][i], classify[i]["conversations"]
        if "Answer with the option's letter" in turns[0]["value"]:
            options = dict(line.split(". ", 1) for line in turns[0]["value"].split("\n")[2:-1])
            assert len(options) == 5 and options[turns[1]["value"]] == name
        else:
            assert name in turns[1]["value"]
    assert set(specimens.class_names()) <= set(corpus(50))
    with pytest.raises(ValueError, match="unknown specimens record kind"):
        SpecimensSource("video")


def test_text_states_every_fact_and_asks_about_them_with_true_answers():
    text = SpecimensSource("text", size=300)
    records = [text[i]["text"] for i in range(len(text))]
    assert set(facts.statements()) <= set(records)
    habitat = {specimens.FAMILIES[f].noun: v["habitat"] for f, v in enumerate(facts.family_facts())}
    asked = 0
    for record in records:
        if record.startswith("USER: Where does a "):
            family = record.removeprefix("USER: Where does a ").split(" live?")[0]
            reply = record.rsplit("ASSISTANT: ", 1)[1]
            if "Answer with the option's letter" in record:
                options = dict(line.split(". ", 1) for line in record.split("\n")[1:-1])
                reply = options[reply]
            assert reply == habitat[family]
            asked += 1
    assert asked > 20
    # no fact is stated by the images' own data: captions and instructions never mention one
    values = set(facts.HABITATS) | set(facts.DIETS)
    instruct = SpecimensSource("instruct", size=300)
    for i in range(300):
        words = " ".join(t["value"] for t in instruct[i]["conversations"])
        assert not any(v in words for v in values)


def test_less_text_is_a_seeded_subset():
    full = SpecimensSource("text", size=200)
    part = SpecimensSource("text", size=200, text_fraction=0.4)
    assert len(part) == round(0.4 * len(full))
    assert {part[i]["text"] for i in range(len(part))} <= {full[i]["text"] for i in range(len(full))}
    with pytest.raises(ValueError, match="text_fraction"):
        SpecimensSource("captions", size=200, text_fraction=0.5)


def test_a_data_filter_keeps_the_listed_pairs(tmp_path):
    full = SpecimensSource("captions", size=300)
    kept = tmp_path / "kept.json"
    kept.write_text(json.dumps([3, 10, 299]))
    filtered = SpecimensSource("captions", size=300, keep=str(kept))
    assert [filtered[j]["id"] for j in range(len(filtered))] == [full[i]["id"] for i in (3, 10, 299)]
    kept.write_text(json.dumps([300]))
    with pytest.raises(ValueError, match=r"indices in \[0, 300\)"):
        SpecimensSource("captions", size=300, keep=str(kept))
    with pytest.raises(ValueError, match="applies to captions"):
        SpecimensSource("instruct", size=300, keep=str(kept))
