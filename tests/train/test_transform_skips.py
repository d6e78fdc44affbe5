"""A training record that cannot be encoded is skipped and counted, never padded in; a config
that fits none of the data fails with a message instead of spinning forever."""

import pytest

from fgjax.data.conversation import ConversationEncoder
from fgjax.data.tokenizer_train import tiny_tokenizer
from fgjax.train.data import ConversationTransform


def conversation(question: str) -> dict:
    return {"conversations": [{"from": "human", "value": question}, {"from": "gpt", "value": "Yes."}]}


def test_too_long_records_are_skipped_counted_and_a_run_of_them_raises():
    tok = tiny_tokenizer("bpe")
    encoder = ConversationEncoder(tok, "chatml", num_image_tokens=1, max_length=64)
    transform = ConversationTransform(encoder, 64, pad_id=0)
    long_question = "Is the bird on the left side of the picture, near the border? " * 8
    assert transform(conversation("Red?"))["tokens"].shape == (64,)
    assert transform(conversation(long_question)) is None
    assert transform(conversation("Red?")) is not None
    assert transform.skipped == 1
    for _ in range(ConversationTransform.MAX_CONSECUTIVE_SKIPS - 1):
        assert transform(conversation(long_question)) is None
    with pytest.raises(ValueError, match="in a row could not be encoded"):
        transform(conversation(long_question))
