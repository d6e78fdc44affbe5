"""Sequence packing: rows, segment ids, restarting positions, and a block-diagonal mask with
which fgjax's Decoder computes for each packed sample what it computes for it alone."""

import numpy as np
import pytest
from flax import nnx

from fgjax.data.conversation import ConversationEncoder, EncodedSample
from fgjax.data.packing import pack, segment_attention_mask
from fgjax.data.tokenizer_train import tiny_tokenizer
from fgjax.models.config import DecoderConfig
from fgjax.models.decoder import Decoder

ROW = 96


@pytest.fixture(scope="module")
def samples():
    tok = tiny_tokenizer("bpe")
    encoder = ConversationEncoder(tok, "chatml", num_image_tokens=3, max_length=ROW)
    replies = ["Yes.", "A red bird with a long tail.", "3", "The left side, near a border."]
    return tok, [
        encoder.encode(
            [{"from": "human", "value": f"Question {i}?"}, {"from": "gpt", "value": reply}],
            has_image=i % 2 == 0,
        )
        for i, reply in enumerate(replies * 2)
    ]


def test_pack_places_every_sample_once_with_its_own_positions(samples):
    tok, samples = samples
    rows = pack(samples, ROW, tok.pad_id)
    assert rows.tokens.shape == (len(rows.sample_index), ROW) and rows.tokens.dtype == np.int32
    placed = sorted(i for members in rows.sample_index for i in members)
    assert placed == list(range(len(samples)))
    assert len(rows.sample_index) < len(samples)  # several samples share a row
    for r, members in enumerate(rows.sample_index):
        start = 0
        for segment, index in enumerate(members, start=1):
            size = len(samples[index].tokens)
            span = slice(start, start + size)
            assert np.array_equal(rows.tokens[r, span], samples[index].tokens)
            assert np.array_equal(rows.loss_mask[r, span], samples[index].loss_mask)
            assert (rows.segment_ids[r, span] == segment).all()
            assert np.array_equal(rows.positions[r, span], np.arange(size))
            start += size
        assert (rows.tokens[r, start:] == tok.pad_id).all() and not rows.loss_mask[r, start:].any()
        assert (rows.segment_ids[r, start:] == 0).all()


def test_segment_mask_is_block_diagonal_causal():
    segments = np.array([[1, 1, 2, 2, 2, 0]])
    mask = np.asarray(segment_attention_mask(segments))[0]
    expected = np.zeros((6, 6), bool)
    expected[:2, :2] = np.tril(np.ones((2, 2), bool))
    expected[2:5, 2:5] = np.tril(np.ones((3, 3), bool))
    assert np.array_equal(mask, expected)


def test_decoder_sees_packed_samples_as_if_alone(samples):
    tok, samples = samples
    samples = samples[:4]
    rows = pack(samples, ROW, tok.pad_id)
    cfg = DecoderConfig(vocab_size=tok.vocab_size, width=32, num_heads=4, mlp_dim=64, depth=2)
    decoder = Decoder(cfg, rngs=nnx.Rngs(0))

    @nnx.jit
    def logits(decoder, tokens, positions, segment_ids):
        return decoder(
            tokens,
            positions=positions,
            input_mask=segment_ids > 0,
            attn_mask=segment_attention_mask(segment_ids),
        ).logits

    # each sample alone in its own row (causal: the padding after it changes nothing), run in
    # the same batch as the packed rows
    singles = [pack([sample], ROW, tok.pad_id) for sample in samples]
    batch = {
        field: np.concatenate([getattr(one, field) for one in (rows, *singles)])
        for field in ("tokens", "positions", "segment_ids")
    }
    out = logits(decoder, batch["tokens"], batch["positions"], batch["segment_ids"])
    packed, alone = out[: len(rows.tokens)], out[len(rows.tokens) :]
    for r, members in enumerate(rows.sample_index):
        start = 0
        for index in members:
            size = len(samples[index].tokens)
            got = packed[r, start : start + size]
            np.testing.assert_allclose(got, alone[index, :size], atol=2e-5, rtol=2e-5)
            start += size


def test_pack_rejects_what_it_cannot_pack():
    long = EncodedSample(np.ones(10, np.int32), np.ones(10, bool), 0)
    with pytest.raises(ValueError, match="10 tokens > row length 8"):
        pack([long], 8, 0)
    with pytest.raises(ValueError, match="trains its first token"):
        pack([long], 16, 0)
