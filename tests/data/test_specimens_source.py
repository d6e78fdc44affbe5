"""Training records built from the specimens dataset."""

import numpy as np
import pytest

from fgjax.data import specimens
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
        assert turns[0]["value"].startswith("<image>\n") and len(turns) in (4, 6, 8)
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
    assert 0.35 < caption_turns / len(instruct) < 0.65
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
    text = SpecimensSource("text", size=100)
    descriptions = set(specimens.descriptions().values())
    assert len(text) == 100 + 4 * len(descriptions)
    assert text[len(text) - 1]["text"] in descriptions
    classify = SpecimensSource("classify", size=100)
    assert classify.data["class_name"][5] in classify[5]["conversations"][1]["value"]
    assert set(specimens.class_names()) <= set(corpus(50))
    with pytest.raises(ValueError, match="unknown specimens record kind"):
        SpecimensSource("video")


def test_caption_filter_keeps_only_the_chosen_kinds_in_order():
    full = SpecimensSource("captions", size=300)
    named = SpecimensSource("captions", size=300, caption_kinds=("name",))
    expected = [i for i, kind in enumerate(full.data["caption_kind"]) if kind == "name"]
    assert 60 < len(named) == len(expected) < 200
    assert [named[j]["id"] for j in range(len(named))] == [full[i]["id"] for i in expected]
    for j in range(len(named)):  # every kept caption names its class
        class_name = named.data["class_name"][expected[j]]
        assert class_name.rsplit(" ", 1)[0] in named[j]["caption"].lower()
    everything = SpecimensSource("captions", size=300, caption_kinds=specimens.CAPTION_KINDS)
    assert len(everything) == len(full)
    with pytest.raises(ValueError, match="kind 'captions' only"):
        SpecimensSource("instruct", size=300, caption_kinds=("name",))
    with pytest.raises(ValueError, match="non-empty subset"):
        SpecimensSource("captions", size=300, caption_kinds=("names",))
