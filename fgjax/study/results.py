"""The study's results: every arm's 0/1 answers, per seed and test image.

This is the contract between the study (which evaluates the arms) and the report (which only
reads this). Every seed trains every arm, and all seeds answer the same fixed test set of N
images, so answers line up by image across arms and seeds: the report compares arms on the same
questions. Per image there is one fine-grained five-way question and one general question (of
one part: perception, knowledge or reasoning); "blank" re-asks the general question with a
blank image. "letter" is the option letter the model names (the paper's read-out), "cloze" the
likeliest option text.

    directory/results.npz   the arrays (parts, correct, chance, probe5)
    directory/results.json  seeds, arms, probe100, info
"""

from __future__ import annotations

import dataclasses
import io
import itertools
import json
from pathlib import Path

import numpy as np

from fgjax.storage import write_atomic

LEVELS = {
    "encoder": ("base", "upgraded"),
    "llm": ("base", "upgraded"),
    "pretrain": ("frozen", "trained", "none"),  # "none": no alignment stage at all
    "instruct": ("general", "classify"),
}
FACTORS = tuple(LEVELS)
PARTS = ("perception", "knowledge", "reasoning")
READOUTS = ("letter", "cloze")
METRICS = tuple(f"{q}_{r}" for q in ("fine", "general", "blank") for r in READOUTS)

# The arms every study has, by factor levels (names come from the data): the 2x2x2 grid over
# encoder, LLM and pretraining, all instruction-tuned on general data; the upgraded pair without
# alignment; and the upgraded pair instruction-tuned with classification data too.
GRID = tuple(
    dict(encoder=e, llm=l, pretrain=p, instruct="general")
    for e, l, p in itertools.product(LEVELS["encoder"], LEVELS["llm"], ("frozen", "trained"))
)
NOALIGN = dict(encoder="upgraded", llm="upgraded", pretrain="none", instruct="general")
TWIN = dict(encoder="upgraded", llm="upgraded", pretrain="trained", instruct="general")
CLASSIFY = dict(encoder="upgraded", llm="upgraded", pretrain="trained", instruct="classify")
REQUIRED = (*GRID, NOALIGN, CLASSIFY)


@dataclasses.dataclass
class Results:
    seeds: list[int]  # S seeds
    arms: dict[str, dict[str, str]]  # A arms in order: name -> {encoder, llm, pretrain, instruct}
    parts: np.ndarray  # str[N]: the part of each image's general question
    correct: dict[str, np.ndarray]  # metric -> f32[S, A, N] of 0/1
    chance: dict[str, np.ndarray]  # metric -> f32[N]: 1 / number of options of each item
    probe5: dict[str, np.ndarray]  # encoder level -> f32[N] 0/1: ridge probe, same 5-way questions
    probe100: dict[str, float]  # encoder level -> 100-way linear-probe accuracy in %
    info: dict = dataclasses.field(default_factory=dict)  # machine, commit, date, seconds, ...

    def save(self, directory) -> None:
        """results.npz and results.json, each complete or absent (written to .tmp, renamed)."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        arrays = {"parts": np.asarray(self.parts, dtype=str)}
        for group in ("correct", "chance", "probe5"):
            for key, value in getattr(self, group).items():
                arrays[f"{group}/{key}"] = np.asarray(value, np.float32)
        buffer = io.BytesIO()
        np.savez_compressed(buffer, **arrays)
        write_atomic(directory / "results.npz", buffer.getvalue())
        meta = dict(
            seeds=[int(s) for s in self.seeds],
            arms=[[name, dict(levels)] for name, levels in self.arms.items()],  # keeps the order
            probe100={k: float(v) for k, v in self.probe100.items()},
            info=self.info,
        )
        write_atomic(directory / "results.json", json.dumps(meta, indent=2, default=str).encode())

    @classmethod
    def load(cls, directory) -> Results:
        directory = Path(directory)
        meta = json.loads((directory / "results.json").read_text())
        groups = {"correct": {}, "chance": {}, "probe5": {}}
        with np.load(directory / "results.npz", allow_pickle=False) as data:
            parts = data["parts"]
            for key in data.files:
                if "/" in key:
                    group, name = key.split("/", 1)
                    groups[group][name] = data[key]
        return cls(
            seeds=meta["seeds"],
            arms={name: levels for name, levels in meta["arms"]},
            parts=parts,
            probe100=meta["probe100"],
            info=meta.get("info", {}),
            **groups,
        )

    @property
    def names(self) -> list[str]:
        return list(self.arms)

    def validate(self) -> None:
        """Raises ValueError naming the first problem found."""
        S, A, N = len(self.seeds), len(self.arms), len(self.parts)
        if S == 0 or len(set(self.seeds)) != S:
            raise ValueError(f"seeds must be distinct and at least one: {self.seeds}")
        if N == 0:
            raise ValueError("no test images (parts is empty)")
        for name, levels in self.arms.items():
            if set(levels) != set(FACTORS):
                raise ValueError(f"arm {name!r} has factors {sorted(levels)}, wants {FACTORS}")
            for factor, level in levels.items():
                if level not in LEVELS[factor]:
                    raise ValueError(f"arm {name!r}: unknown {factor} level {level!r}")
        for levels in REQUIRED:
            find_arm(self, **levels)  # raises when missing or ambiguous
        unknown = sorted(set(np.asarray(self.parts).tolist()) - set(PARTS))
        if unknown:
            raise ValueError(f"parts: unknown part(s) {unknown}, wants {PARTS}")
        for group, shape in (("correct", (S, A, N)), ("chance", (N,))):
            table = getattr(self, group)
            if set(table) != set(METRICS):
                raise ValueError(f"{group}: metrics {sorted(table)}, wants {sorted(METRICS)}")
            for metric, values in table.items():
                if np.shape(values) != shape:
                    raise ValueError(
                        f"{group}[{metric!r}] has shape {np.shape(values)}, wants {shape}"
                    )
        for metric, values in self.correct.items():
            _check_binary(f"correct[{metric!r}]", values)
        for metric, values in self.chance.items():
            if not np.all((np.asarray(values) > 0) & (np.asarray(values) < 1)):
                raise ValueError(f"chance[{metric!r}] must lie strictly between 0 and 1")
        for group in ("probe5", "probe100"):
            if set(getattr(self, group)) != set(LEVELS["encoder"]):
                raise ValueError(
                    f"{group}: keys {sorted(getattr(self, group))}, wants {LEVELS['encoder']}"
                )
        for level, values in self.probe5.items():
            if np.shape(values) != (N,):
                raise ValueError(f"probe5[{level!r}] has shape {np.shape(values)}, wants {(N,)}")
            _check_binary(f"probe5[{level!r}]", values)
        for level, value in self.probe100.items():
            if not 0 <= value <= 100:
                raise ValueError(f"probe100[{level!r}] = {value} is not a percentage")


def find_arm(results: Results, **levels: str) -> str:
    """The name of the one arm with these factor levels."""
    names = [n for n, arm in results.arms.items() if all(arm[f] == v for f, v in levels.items())]
    if len(names) != 1:
        what = "no arm" if not names else f"{len(names)} arms ({', '.join(names)})"
        raise ValueError(f"{what} with {levels}")
    return names[0]


def rows(results: Results) -> list[dict]:
    """One row per (seed, arm) for results.csv: the factors and every metric's accuracy in %,
    also per part for the general and blank-image questions."""
    parts = np.asarray(results.parts)
    out = []
    for s, seed in enumerate(results.seeds):
        for a, (name, levels) in enumerate(results.arms.items()):
            row = dict(seed=seed, arm=name, **levels)
            for metric in METRICS:
                row[metric] = _percent(results.correct[metric][s, a])
            for metric in METRICS:
                if not metric.startswith("fine"):
                    for part in PARTS:
                        if np.any(parts == part):
                            values = results.correct[metric][s, a, parts == part]
                            row[f"{metric}_{part}"] = _percent(values)
            out.append(row)
    return out


def _percent(values: np.ndarray) -> float:
    return round(100 * float(np.mean(values, dtype=np.float64)), 4)  # f32 sums print as 57.99999


def _check_binary(what: str, values) -> None:
    values = np.asarray(values)
    if not np.all((values == 0) | (values == 1)):
        raise ValueError(f"{what} must hold only 0 and 1")


def chance_percent(results: Results, metric: str, part: str | None = None) -> float:
    """The mean chance of a metric's items (of one general part), in %."""
    chance = np.asarray(results.chance[metric])
    return 100 * float(chance[np.asarray(results.parts) == part].mean() if part else chance.mean())


def title(results: Results) -> str:
    S, N = len(results.seeds), len(results.parts)
    return (f"Miniature study: fine-grained knowledge of VLMs ({S} seed{'s' * (S > 1)}, "
            f"{N} test images)")  # fmt: skip
