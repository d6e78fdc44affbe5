"""One tensor between the Hugging Face layout and fgjax's: the transforms of keymaps' rules
(`to_fg` reads an HF tensor into fgjax's layout, `to_hf` writes it back), and `Rule`."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable


@dataclasses.dataclass(frozen=True)
class Same:
    """Identical layout."""

    def hf_shape(self, fg_shape):
        return tuple(fg_shape)

    def to_fg(self, x, fg_shape):
        return x

    def to_hf(self, x):
        return x


@dataclasses.dataclass(frozen=True)
class Reshape:
    """Same values, another shape: HF `[1, 1, D]` cls token, `[N*H]` head biases..."""

    hf_shape_of: Callable[[tuple], tuple]

    def hf_shape(self, fg_shape):
        return tuple(self.hf_shape_of(tuple(fg_shape)))

    def to_fg(self, x, fg_shape):
        return x.reshape(fg_shape)

    def to_hf(self, x):
        return x.reshape(self.hf_shape(x.shape))


@dataclasses.dataclass(frozen=True)
class Linear:
    """torch Linear weight [out, in] <-> kernel [*in_dims, *out_dims] whose first `in_dims`
    axes are the inputs (q: [D] -> [N, H], in_dims 1; o: [N, H] -> [D], in_dims 2)."""

    in_dims: int = 1

    def hf_shape(self, fg_shape):
        return (math.prod(fg_shape[self.in_dims :]), math.prod(fg_shape[: self.in_dims]))

    def to_fg(self, x, fg_shape):
        return x.T.reshape(fg_shape)

    def to_hf(self, x):
        return x.reshape(math.prod(x.shape[: self.in_dims]), -1).T


@dataclasses.dataclass(frozen=True)
class Conv:
    """torch Conv2d weight [O, I, kh, kw] <-> flax kernel [kh, kw, I, O]."""

    def hf_shape(self, fg_shape):
        kh, kw, i, o = fg_shape
        return (o, i, kh, kw)

    def to_fg(self, x, fg_shape):
        return x.transpose(2, 3, 1, 0)

    def to_hf(self, x):
        return x.transpose(3, 2, 0, 1)


@dataclasses.dataclass(frozen=True)
class Part:
    """Part `index` of `count` equal slices along HF axis 0 of a packed tensor (SigLIP's
    MAP head stores q, k, v in one `in_proj`); `inner` converts the slice. Export
    concatenates the parts in index order."""

    index: int
    count: int
    inner: object

    def hf_shape(self, fg_shape):
        first, *rest = self.inner.hf_shape(fg_shape)
        return (first * self.count, *rest)

    def to_fg(self, x, fg_shape):
        size = x.shape[0] // self.count
        return self.inner.to_fg(x[self.index * size : (self.index + 1) * size], fg_shape)

    def to_hf(self, x):
        return self.inner.to_hf(x)


@dataclasses.dataclass(frozen=True)
class Conv3d:
    """torch Conv3d weight [O, I, kt, kh, kw] <-> fgjax kernel [I, kt, kh, kw, O]."""

    def hf_shape(self, fg_shape):
        *kernel, out = fg_shape
        return (out, *kernel)

    def to_fg(self, x, fg_shape):
        return x.transpose(1, 2, 3, 4, 0)

    def to_hf(self, x):
        return x.transpose(4, 0, 1, 2, 3)


SAME, LINEAR, LINEAR_OUT, CONV = Same(), Linear(1), Linear(2), Conv()
FLAT = Reshape(lambda s: (math.prod(s),))  # head biases [N, H] <- [N*H]


def lead_ones(n: int) -> Reshape:
    """fgjax [...] <- HF [1]*n + [...] (DINOv2 cls/mask/register tokens, position table)."""
    return Reshape(lambda s: (1,) * n + s)


@dataclasses.dataclass(frozen=True)
class Rule:
    fg: str  # fgjax parameter path, "/"-joined; "{i}" marks the layer index
    hf: str  # HF key; "{i}" marks the layer index
    transform: object = SAME
