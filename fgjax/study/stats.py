"""Contrasts between arms and their two-stage, paired bootstrap intervals.

Accuracies are chance-normalised: 100 * (acc - c) / (1 - c), with c the mean chance of the
same items, so 0 is chance and 100 is perfect, whatever the number of options.

A contrast is a tuple of Terms, a linear combination of normalised accuracies:

    Term(+1, "classify", "fine_letter") + Term(-1, "twin", "fine_letter")   (as a tuple)

`main_effect` builds the usual ones over the 2x2x2 grid: the mean over the grid cells at a
factor's second level minus the mean over those at its first.

The bootstrap resamples both sources of noise: seeds (training) and test images. Each replicate
draws S seeds with replacement, then for each drawn seed draws the N image indices with
replacement; those image draws are shared by every arm and metric of that seed draw, so arms
are compared on the same questions (paired), and a difference between two arms does not pick
up the noise of which images happened to be drawn. The draws depend only on (seed, S, N,
samples): separate calls with the same seed use the same draws.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

from fgjax.study.results import GRID, LEVELS, Results, find_arm

PROBE5 = "probe5"  # a Term's metric for the five-way ridge probe; its arm is the encoder level
FIVE_WAY_CHANCE = 0.2


@dataclasses.dataclass(frozen=True)
class Term:
    """weight * (chance-normalised accuracy of `arm` on `metric`, items of `part` only or all).

    With metric PROBE5 the arm is an encoder level: the ridge probe on that encoder's features,
    which has no seed (the same for every seed draw) and chance 0.2.
    """

    weight: float
    arm: str
    metric: str
    part: str | None = None


Contrast = tuple[Term, ...]


@dataclasses.dataclass(frozen=True)
class Estimate:
    point: float  # the contrast on all images, averaged over seeds
    per_seed: np.ndarray  # f64[S]: the contrast on all images of each seed
    interval: tuple[float, float]  # the percentile interval of the replicates
    replicates: np.ndarray  # f64[samples]: kept to combine estimates (see `ratio`)


def term(arm: str, metric: str, part: str | None = None, weight: float = 1.0) -> Contrast:
    """A contrast of one term (add contrasts with +)."""
    return (Term(weight, arm, metric, part),)


def scaled(contrast: Contrast, factor: float) -> Contrast:
    return tuple(dataclasses.replace(t, weight=factor * t.weight) for t in contrast)


def difference(changed: str, base: str, metric: str, part: str | None = None) -> Contrast:
    """changed - base."""
    return term(changed, metric, part) + term(base, metric, part, weight=-1.0)


def grid_arms(results: Results) -> dict[str, dict[str, str]]:
    """The 2x2x2 grid's arms: name -> levels."""
    return {find_arm(results, **levels): levels for levels in GRID}


def main_effect(
    results: Results, factor: str, metric: str, part: str | None = None, keep=None
) -> Contrast:
    """The factor's effect (pretrain: trained - frozen), the other factors averaged out: the
    mean, over pairs of grid arms that differ only in `factor`, of high-level minus low-level.
    keep: the arms allowed (e.g. those passing their image control); a pair with an arm not
    kept is left out, so a broken arm never enters an effect. Empty when no pair is left."""
    low, high = LEVELS[factor][:2]
    grid = grid_arms(results)
    pairs = []
    for name, levels in grid.items():
        if levels[factor] != low:
            continue
        partner = find_arm(results, **{**levels, factor: high})
        if keep is None or (name in keep and partner in keep):
            pairs.append((partner, name))
    contrast = ()
    for high_arm, low_arm in pairs:
        contrast += (Term(1 / len(pairs), high_arm, metric, part),
                     Term(-1 / len(pairs), low_arm, metric, part))  # fmt: skip
    return contrast


def arms_of(contrast: Contrast) -> set[str]:
    """The arms a contrast involves (the probe is no arm)."""
    return {t.arm for t in contrast if t.metric != PROBE5}


def draws(samples: int, seeds: int, images: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(seed_draws i32[samples, S], counts f64[samples, S, N]): the drawn seed indices, and how
    often each image was drawn for each seed draw (equivalent to resampling the indices)."""
    rng = np.random.default_rng(seed)
    seed_draws = rng.integers(0, seeds, size=(samples, seeds))
    indices = rng.integers(0, images, size=(samples * seeds, images))
    offsets = np.arange(samples * seeds)[:, None] * images
    counts = np.bincount((indices + offsets).ravel(), minlength=samples * seeds * images)
    return seed_draws, counts.reshape(samples, seeds, images).astype(np.float64)


def evaluate(
    results: Results,
    contrasts: Sequence[Contrast],
    seed_draws: np.ndarray,
    counts: np.ndarray,
    normalise: bool = True,
) -> np.ndarray:
    """f64[R, S, C]: each contrast for each (replicate, seed draw), on the images as weighted by
    `counts` (f[R, S, N]) of the seeds `seed_draws` (int[R, S]). normalise=False: raw accuracy
    in %, no chance normalisation."""
    columns = list(dict.fromkeys((t.arm, t.metric, t.part) for c in contrasts for t in c))
    index = {col: i for i, col in enumerate(columns)}
    parts = np.asarray(results.parts)
    arm_index = {name: a for a, name in enumerate(results.arms)}
    S, N = len(results.seeds), len(parts)
    # per column: values f[S, N, K] (0/1 answers, zero outside the part), mask f[N, K] (1 inside
    # the part) and chance f[N, K]; each column's sums over drawn images are then matrix products
    K = len(columns)
    values, mask, chance = np.zeros((S, N, K)), np.zeros((N, K)), np.zeros((N, K))
    for k, (arm, metric, part) in enumerate(columns):
        mask[:, k] = parts == part if part is not None else 1.0
        if not mask[:, k].any():
            raise ValueError(f"no items of part {part!r}")
        if metric == PROBE5:
            values[:, :, k] = results.probe5[arm][None, :]  # no seed dimension
            chance[:, k] = FIVE_WAY_CHANCE
        else:
            values[:, :, k] = results.correct[metric][:, arm_index[arm], :]
            chance[:, k] = results.chance[metric]
    values *= mask
    R = counts.shape[0]
    flat = counts.reshape(R * S, N)
    items = flat @ mask  # [R*S, K]: how many drawn items each column averages over
    with np.errstate(invalid="ignore", divide="ignore"):  # 0 items drawn of a part: nan
        c = (flat @ (chance * mask)) / items
        acc = np.zeros_like(items)
        for s in range(S):  # the answers of the seed each (replicate, seed draw) drew
            drawn = (seed_draws.reshape(R * S) == s)[:, None]
            acc = np.where(drawn, flat @ values[s], acc)
        acc = acc / items
        score = 100 * (acc - c) / (1 - c) if normalise else 100 * acc
    out = np.zeros((R * S, len(contrasts)))
    for j, contrast in enumerate(contrasts):
        for t in contrast:
            out[:, j] += t.weight * score[:, index[(t.arm, t.metric, t.part)]]
    return out.reshape(R, S, len(contrasts))


def bootstrap_many(
    results: Results,
    contrasts: Sequence[Contrast],
    samples: int = 2000,
    seed: int = 0,
    level: float = 0.95,
    normalise: bool = True,
) -> list[Estimate]:
    """Estimates of several contrasts on the same draws."""
    S, N = len(results.seeds), len(results.parts)
    # the point estimates: every seed once, every image once
    per_seed = evaluate(results, contrasts, np.arange(S)[None], np.ones((1, S, N)), normalise)[0]
    seed_draws, counts = draws(samples, S, N, seed)
    reps = evaluate(results, contrasts, seed_draws, counts, normalise).mean(axis=1)  # [R, C]
    return [
        Estimate(float(np.mean(p)), p, _percentiles(r, level), r)
        for p, r in zip(per_seed.T, reps.T)
    ]


def bootstrap(
    results: Results, contrast: Contrast, samples: int = 2000, seed: int = 0, level: float = 0.95
) -> Estimate:
    """The chance-normalised contrast: point estimate, per-seed estimates, percentile interval."""
    return bootstrap_many(results, [contrast], samples, seed, level)[0]


def ratio(numerator: Estimate, denominator: Estimate, level: float = 0.95) -> Estimate:
    """numerator / denominator, replicate by replicate: both must come from the same draws
    (one bootstrap_many call, or calls with the same seed and samples)."""
    with np.errstate(invalid="ignore", divide="ignore"):  # a zero denominator gives inf or nan
        point = float(np.float64(numerator.point) / denominator.point)
        reps = numerator.replicates / denominator.replicates
        per_seed = numerator.per_seed / denominator.per_seed
    low, high = denominator.interval
    if low <= 0 <= high or not np.all(np.isfinite(reps)):  # a ratio near 0/0 has no interval
        return Estimate(point, per_seed, (float("nan"), float("nan")), reps)
    return Estimate(point, per_seed, _percentiles(reps, level), reps)


def clear(estimate: Estimate, sign: float = 1.0) -> bool:
    """The interval excludes zero in the claimed direction and every seed agrees in sign."""
    low, high = estimate.interval
    bound = low if sign > 0 else -high
    return bool(bound > 0 and np.all(sign * estimate.per_seed > 0))


def _percentiles(replicates: np.ndarray, level: float) -> tuple[float, float]:
    low, high = np.nanpercentile(replicates, [50 * (1 - level), 50 * (1 + level)])
    return float(low), float(high)
