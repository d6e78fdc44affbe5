"""Sequence packing: several encoded samples in one row, kept apart by segment ids.

How the model consumes a packed row: pass `positions` (restarting at 0 in every sample, so
each sample sees the RoPE positions it would see alone) and
`attn_mask=segment_attention_mask(segment_ids)` (causal within a sample, nothing across
samples or from padding) to `Decoder.__call__` / `VLM.__call__`, with
`input_mask=segment_ids > 0`. Images go in row order: the k-th image-token run of a row is
the k-th entry of `sample_index[row]` that has an image, which is how `VLM.embed` assigns
image features (the k-th placeholder run gets the k-th image of the row).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import jax.numpy as jnp
import numpy as np

from fgjax.data.conversation import EncodedSample


@dataclasses.dataclass(frozen=True)
class PackedRows:
    """tokens: i32[R, L] (pad_id where empty); loss_mask: bool[R, L]; segment_ids: i32[R, L]
    (1, 2, ... per sample in the row, 0 for padding); positions: i32[R, L] (0, 1, ... within
    each sample, 0 for padding); sample_index: for each row, the indices of its samples in
    the input, in order."""

    tokens: np.ndarray
    loss_mask: np.ndarray
    segment_ids: np.ndarray
    positions: np.ndarray
    sample_index: list[list[int]]


def pack(samples: Sequence[EncodedSample], length: int, pad_id: int) -> PackedRows:
    """Packs samples first-fit, in order, into rows of `length` tokens (each sample goes into
    the first row with room for it). Every sample must fit in one row (truncate first)."""
    rows: list[list[int]] = []
    free: list[int] = []
    for index, sample in enumerate(samples):
        size = len(sample.tokens)
        if size > length:
            raise ValueError(f"sample {index} has {size} tokens > row length {length}")
        if size and sample.loss_mask[0]:  # it would be predicted from the previous sample
            raise ValueError(f"sample {index} trains its first token; it cannot be packed")
        row = next((r for r, room in enumerate(free) if room >= size), None)
        if row is None:
            rows.append([])
            free.append(length)
            row = len(rows) - 1
        rows[row].append(index)
        free[row] -= size
    shape = (len(rows), length)
    tokens = np.full(shape, pad_id, np.int32)
    loss_mask = np.zeros(shape, bool)
    segment_ids = np.zeros(shape, np.int32)
    positions = np.zeros(shape, np.int32)
    for r, members in enumerate(rows):
        start = 0
        for segment, index in enumerate(members, start=1):
            sample = samples[index]
            end = start + len(sample.tokens)
            tokens[r, start:end] = sample.tokens
            loss_mask[r, start:end] = sample.loss_mask
            segment_ids[r, start:end] = segment
            positions[r, start:end] = np.arange(end - start)
            start = end
    return PackedRows(tokens, loss_mask, segment_ids, positions, rows)


def segment_attention_mask(segment_ids):
    """segment_ids: i32[B, T] (0 = padding) -> bool[B, T, T]: query t may attend to key s when
    s <= t and both belong to the same (non-padding) sample. Works on numpy or jax arrays."""
    length = segment_ids.shape[-1]
    causal = jnp.tril(jnp.ones((length, length), bool))
    same = segment_ids[:, :, None] == segment_ids[:, None, :]
    real = segment_ids[:, None, :] > 0
    return causal[None] & same & real
