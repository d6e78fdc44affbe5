"""Nested parameter dicts and their '/'-joined paths ("decoder/stack/blocks/attn/q/kernel"),
the one way fgjax addresses a parameter, on flax's `traverse_util`."""

from __future__ import annotations

from collections.abc import Mapping

from flax import traverse_util


def flatten(tree: Mapping) -> dict[str, object]:
    """Nested dicts -> {"a/b/c": leaf}; empty dicts have no leaves and vanish."""
    return {"/".join(map(str, key)): leaf for key, leaf in traverse_util.flatten_dict(tree).items()}


def unflatten(flat: Mapping[str, object]) -> dict:
    """{"a/b/c": leaf} -> nested dicts."""
    return traverse_util.unflatten_dict({tuple(path.split("/")): v for path, v in flat.items()})


class ParameterMismatchError(ValueError):
    """Parameters that are not the model's: missing, unexpected or of another shape."""


def mismatches(want: Mapping[str, tuple], have: Mapping[str, tuple]) -> list[str]:
    """What keeps parameters of shapes `have` {path: shape} from being the model's `want`, one
    line each: missing, unexpected, then mis-shaped paths; empty when they match."""
    problems = [f"missing {p}" for p in sorted(want.keys() - have.keys())]
    problems += [f"unexpected {p}" for p in sorted(have.keys() - want.keys())]
    problems += [
        f"{p}: stored {tuple(have[p])}, the model needs {tuple(want[p])}"
        for p in sorted(want.keys() & have.keys())
        if tuple(have[p]) != tuple(want[p])
    ]
    return problems


def merge(a: Mapping, b: Mapping) -> dict:
    """One nested dict of two whose leaves are disjoint (e.g. trainable and frozen parameters)."""
    flat_a, flat_b = flatten(a), flatten(b)
    if both := flat_a.keys() & flat_b.keys():
        raise ValueError(f"both trees hold {sorted(both)[:5]}")
    return unflatten({**flat_a, **flat_b})
