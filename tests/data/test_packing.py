"""The block-diagonal causal mask of packed rows (the packer itself: tests/train/
test_packed_training.py)."""

import numpy as np

from fgjax.data.packing import segment_attention_mask


def test_segment_mask_is_block_diagonal_causal():
    segments = np.array([[1, 1, 2, 2, 2, 0]])
    mask = np.asarray(segment_attention_mask(segments))[0]
    expected = np.zeros((6, 6), bool)
    expected[:2, :2] = np.tril(np.ones((2, 2), bool))
    expected[2:5, 2:5] = np.tril(np.ones((3, 3), bool))
    assert np.array_equal(mask, expected)
