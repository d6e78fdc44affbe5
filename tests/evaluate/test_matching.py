"""Answer reading: class-name containment with synonyms, option parsing, VQA normalization and
accuracy, prompt layouts and tokens."""

from __future__ import annotations

import numpy as np
import pytest

from fgjax.data.conversation import ConversationEncoder
from fgjax.data.tokenizer_train import tiny_tokenizer
from fgjax.evaluate import prompts
from fgjax.evaluate.matching import (
    ClassMatcher,
    exact_match,
    normalize_answer,
    parse_option,
    vqa_accuracy,
)
from fgjax.models import presets


def test_class_matching_is_case_insensitive_containment_with_synonyms():
    matcher = ClassMatcher(["rose", "desert rose", "tulip"], {"tulip": ["Tulipa"]})
    assert matcher.match("It is a Desert\n Rose.", 0) == {
        "correct": True,
        "prediction": 1,
        "named": 2,
    }
    assert matcher.match("a TULIPA flower", 2) == {"correct": True, "prediction": 2, "named": 1}
    assert matcher.match("no idea", 1) == {"correct": False, "prediction": None, "named": 0}
    assert matcher.match("a tulip", 0)["correct"] is False
    with pytest.raises(ValueError, match="not classes"):
        ClassMatcher(["rose"], {"lily": ["lilium"]})


@pytest.mark.parametrize(
    "answer, expected",
    [
        ("B", 1), ("(B)", 1), ("B. tulip", 1), ("C)", 2), ("The answer is D.", 3),
        ("answer: E", 4), ("tulip", 1), ("I think it is a daisy", 3),
        ("A tulip tree", 2),  # "A" followed by a word is an article; the longer option wins
        ("F", None), ("xyz", None), ("rose or tulip", None),
    ],
)  # fmt: skip
def test_parse_option(answer, expected):
    assert parse_option(answer, ["rose", "tulip", "tulip tree", "daisy", "lily"]) == expected


def test_vqa_normalization_and_accuracy():
    assert normalize_answer("The Two dogs, 1,000.5!") == "2 dogs 1000.5"
    assert normalize_answer("Dont  know") == "don't know"
    assert exact_match("Two.", ["2"]) and not exact_match("two dogs", ["2"])
    # VQA v2: min(1, matches / 3) averaged over the 10 leave-one-out subsets
    assert vqa_accuracy("two", ["2"] * 3 + ["3"] * 7) == pytest.approx(0.9)
    assert vqa_accuracy("2", ["2"] * 2 + ["3"] * 8) == pytest.approx(0.6)
    assert vqa_accuracy("3", ["3"] * 4 + ["2"] * 6) == 1.0
    assert vqa_accuracy("cat", ["dog"]) == 0.0 and vqa_accuracy("a cat", ["cat"]) == 1.0


def test_prompt_layouts_and_option_letters():
    tok = tiny_tokenizer("bpe", vocab_size=400)
    cfg = presets.vlm("tiny_clip", "tiny_llama", image_token_id=tok.token_to_id("<image>"),
                      decoder_overrides={"vocab_size": tok.vocab_size})  # fmt: skip
    prompter = prompts.Prompter(ConversationEncoder.for_model(tok, "vicuna_v1", cfg))
    question = prompts.multiple_choice_question("What is it?", ["rose", "tulip"])
    assert question == (
        "What is it?\nA. rose\nB. tulip\n"
        "Answer with the option's letter from the given choices directly."
    )
    text = tok.decode(prompter.prompt(question))
    assert text.endswith(
        "Answer with the option's letter from the given choices directly. ASSISTANT:"
    )
    assert text.count("<image>") == cfg.num_image_tokens
    lead = tok.decode(prompter.prompt("Q?", lead_in=prompts.LEAD_IN))
    assert lead.endswith("ASSISTANT: The photo features a")
    # class names continue the lead-in after a space, and the header after the reply prefix
    assert tok.decode(prompter.continuation("rose", prompts.LEAD_IN)) == " rose"
    assert tok.decode(prompter.continuation("rose", None)) == " rose"
    letters = prompter.letter_continuations(5)
    assert [tok.decode(t) for t in letters] == [" A", " B", " C", " D", " E"]
    assert (
        prompter.decode_reply([*tok.encode_continuation(" B. tulip"), tok.eos_id, 5]) == "B. tulip"
    )
    assert prompts.closed_world_question("Q?", ["a", "b"]) == 'Q? Choose one from "a, b".'
    tokens, mask = prompts.pad_prompts([np.arange(3), np.arange(40)], bucket=32)
    assert tokens.shape == (2, 64) and mask.sum(1).tolist() == [3, 40]
