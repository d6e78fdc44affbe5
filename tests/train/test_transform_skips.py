"""A training record that cannot be encoded is skipped and counted once per row, never padded
in; a stream that keeps skipping stops with the reason instead of spinning forever."""

import pytest

from fgjax.data.conversation import ConversationEncoder
from fgjax.data.skips import SkipGuard, UnusableDataError
from fgjax.data.tokenizer_train import tiny_tokenizer
from fgjax.train.inputs import ConversationTransform

LONG = "Is the bird on the left side of the picture, near the border? " * 8


def conversation(question: str, row_id: str | None = None) -> dict:
    turns = [{"from": "human", "value": question}, {"from": "gpt", "value": "Yes."}]
    return {"conversations": turns} | ({"id": row_id} if row_id else {})


@pytest.fixture
def transform():
    tok = tiny_tokenizer("bpe")
    encoder = ConversationEncoder(tok, "chatml", num_image_tokens=1, max_length=64)
    return ConversationTransform(encoder, 64, pad_id=0)


def test_too_long_records_are_skipped_counted_and_a_run_of_them_raises(transform):
    assert transform(conversation("Red?"))["tokens"].shape == (64,)
    assert transform(conversation(LONG)) is None
    assert transform(conversation("Red?")) is not None
    assert transform.skipped == 1
    for _ in range(SkipGuard.MAX_IN_A_ROW - 1):
        assert transform(conversation(LONG)) is None
    with pytest.raises(UnusableDataError, match="50 training records in a row were skipped"):
        transform(conversation(LONG))


def test_a_row_read_again_counts_once(transform):
    """Epochs and resumed runs read a bad row again: 5 bad rows read 3 times each are 5."""
    for _ in range(3):
        for i in range(5):
            assert transform(conversation(LONG, f"row{i}")) is None
            assert transform(conversation("Red?", f"good{i}")) is not None
    assert transform.skipped == 5
    assert transform.skips.counts == {"cannot be encoded": 5}


def test_rows_the_source_skipped_count_toward_the_guard(transform):
    """Records the source dropped (corrupt images) arrive as None: a stream of nothing but
    them stops, naming the reason, rather than waiting forever for a batch."""
    transform.guard.describe = lambda: "data.json: 48 rows, 48 kept; skipped: corrupt image 48"
    for _ in range(SkipGuard.MAX_IN_A_ROW - 1):
        assert transform(None) is None
    with pytest.raises(UnusableDataError, match="skipped by its source.*corrupt image 48"):
        transform(None)
