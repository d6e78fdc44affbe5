"""Sequence packing: several encoded samples in one row, kept apart by segment ids.

How the model consumes a packed row: pass `positions` (restarting at 0 in every sample, so
each sample sees the RoPE positions it would see alone) and
`attn_mask=segment_attention_mask(segment_ids)` (causal within a sample, nothing across
samples or from padding) to `Decoder.__call__` / `VLM.__call__`, with
`input_mask=segment_ids > 0`. Images go in row order: the k-th image-token run of a row is
the row's k-th sample with an image, which is how `VLM.embed` assigns
image features (the k-th placeholder run gets the k-th image of the row).

`Packing` packs a grain training stream with grain's own first-fit / best-fit packers (the
training input pipeline, config.data.packing).
"""

from __future__ import annotations

import dataclasses

import grain
import numpy as np

from fgjax.models.attention import segment_mask

segment_attention_mask = segment_mask  # bool[B, T, T] of packed rows (models/attention.py)


STRATEGIES = {
    "first_fit": grain.experimental.FirstFitPackIterDataset,
    "best_fit": grain.experimental.BestFitPackIterDataset,
}


@dataclasses.dataclass(frozen=True)
class Packing:
    """How a training stream packs its examples into rows, with grain's packers.

    Input examples (unpadded): tokens i32[T], loss_mask bool[T] with T <= length, and with
    `max_images` > 0 images f32[n, S, S, 3] with n in {0, 1} (a tuple of those, one per tower,
    for a fused encoder of `fused_towers` towers). Output rows of L = `length`: tokens i32[L]
    (pad_id where empty), loss_mask bool[L], input_mask bool[L], segment_ids i32[L] (1, 2, ...
    per sample, 0 for padding), positions i32[L] (restarting at 0 in every sample) and images
    f32[max_images, S, S, 3] (zeros in the unused slots, never read: a row's k-th image-token
    run is its k-th sample with an image, as `VLM.embed` expects).

    grain fills `bins` rows at once, each example going into the first row (first_fit) or
    the fullest row (best_fit) with room for its tokens and its image, and emits all of them
    when an example fits none; no example is dropped, split or repeated. Its iterator state
    (the parent's position before the rows in the making, and the rows of them already
    emitted) goes into checkpoints, so a resumed stream repeats the same rows.
    """

    length: int
    max_images: int = 0
    fused_towers: int = 0  # 0: images is one array
    bins: int | None = None  # None: the caller's batch
    strategy: str = "first_fit"
    pad_id: int = 0

    def rows(self, examples: grain.IterDataset, *, bins: int, seed: int) -> grain.IterDataset:
        """Packed rows of `examples` (see the class docstring); `bins` where self.bins is None."""
        lengths = {"tokens": self.length, "loss_mask": self.length}
        padding = {"tokens": self.pad_id, "loss_mask": False}
        for key in self._image_keys():
            lengths[key], padding[key] = self.max_images, 0.0
        packer = STRATEGIES[self.strategy]
        return packer(
            examples.map(self._flatten),
            length_struct=lengths,
            padding_struct=padding,
            num_packing_bins=self.bins or bins,
            seed=seed,
        ).map(self._row)

    def _image_keys(self) -> list[str]:
        if not self.max_images:
            return []
        if self.fused_towers:
            return [f"images_{i}" for i in range(self.fused_towers)]
        return ["images"]

    def _flatten(self, example: dict) -> dict:
        """grain packs arrays, not tuples: a fused encoder's images become one key per tower."""
        loss_mask = np.array(example["loss_mask"], bool)
        # The first token of a sample is never a target: alone in a row nothing precedes it
        # (the loss reads loss_mask[1:]), and packed it would be predicted from the sample
        # before it. Clearing it changes no loss.
        loss_mask[:1] = False
        out = {"tokens": example["tokens"], "loss_mask": loss_mask}
        if self.max_images:
            images = example["images"]
            if self.fused_towers:
                out.update({f"images_{i}": im for i, im in enumerate(images)})
            else:
                out["images"] = images
        return out

    def _row(self, packed: dict) -> dict:
        segment_ids = packed["tokens_segment_ids"]
        row = {
            "tokens": packed["tokens"],
            "loss_mask": packed["loss_mask"],
            "input_mask": segment_ids > 0,
            "segment_ids": segment_ids,
            "positions": packed["tokens_positions"],
        }
        if self.max_images:
            images = tuple(packed[k] for k in self._image_keys())
            row["images"] = images if self.fused_towers else images[0]
        return row
