"""The study's report: the per-arm table, the image control, the paper's four findings judged
by rules declared before the run (the plot of fine-grained against general accuracy: plot.py).

The analysis (read-out, bootstrap, thresholds) comes from the study config's `analysis` field,
so it is fixed before any number exists; `rules` prints it as the report applies it. Findings
are judged on chance-normalised contrasts between arms (see fgjax/study/stats.py) with
two-stage bootstrap intervals over seeds and test images.

    write_all(workdir, results, analysis)   results.csv, results.md, results.png
    regenerate(workdir, analysis)           the same from workdir/results.{npz,json}
"""

from __future__ import annotations

import csv
import dataclasses
import io
from pathlib import Path

import numpy as np

from fgjax.study import plot, stats
from fgjax.study.results import (
    CLASSIFY,
    NOALIGN,
    PARTS,
    READOUTS,
    TWIN,
    Results,
    chance_percent,
    find_arm,
    rows,
    title,
)  # fmt: skip
from fgjax.study.stats import Estimate, main_effect, scaled

DEFAULTS = dict(
    readout="letter",  # the primary read-out (the paper's); the other one is shown, not judged
    bootstrap_samples=2000,
    bootstrap_seed=0,
    level=0.95,
    control_margin=10.0,  # chance-normalised points
    equal_ratio=2.0,
    gap_closed=0.5,
)
REPRODUCED, NOT_REPRODUCED, NOT_JUDGED = "REPRODUCED", "NOT reproduced", "NOT JUDGED"
CLAIMS = (
    "A better LLM raises all benchmark scores about equally.",
    "A better vision encoder raises fine-grained classification disproportionately.",
    "Pretraining matters for fine-grained knowledge, particularly when the LLM is not frozen "
    "during it.",
    "Instruction tuning with classification data closes much of the gap to the linear probe "
    "(Zhang et al. 2024).",
)


def settings(analysis=None) -> dict:
    """The declared analysis (ConfigDict, dict or None) with DEFAULTS for absent fields, plus
    "secondary": the other read-out."""
    a = dict(DEFAULTS)
    if analysis is not None:
        given = analysis.to_dict() if hasattr(analysis, "to_dict") else dict(analysis)
        unknown = sorted(set(given) - set(DEFAULTS) - {"secondary"})
        if unknown:  # a misspelt field would otherwise silently fall back to its default
            raise ValueError(f"analysis: unknown field(s) {unknown}, known: {sorted(DEFAULTS)}")
        a.update(given)
    if a["readout"] not in READOUTS:
        raise ValueError(f"analysis.readout {a['readout']!r} is not one of {READOUTS}")
    a["secondary"] = next(r for r in READOUTS if r != a["readout"])
    return a


def rules(a: dict) -> list[str]:
    """The declared rules, as applied (a: settings())."""
    eq = a["equal_ratio"]
    return [
        f"Findings are judged on the {a['readout']} read-out; the {a['secondary']} read-out's "
        "numbers are shown, not judged.",
        "Contrasts use chance-normalised accuracy, 100 * (acc - c) / (1 - c) with c the mean "
        "chance of the items: 0 is chance, 100 perfect.",
        "A main effect is the mean, over the pairs of grid arms (instruction-tuned on general "
        "data) that differ only in the factor, of the upgraded arm (pretraining: LLM trained) "
        "minus the base arm (LLM frozen); a pair is left out when either arm fails its image "
        "control, and the finding is NOT JUDGED when no pair is left.",
        f"Intervals: {a['level']:.0%} percentile intervals of a two-stage paired bootstrap, "
        f"{a['bootstrap_samples']} replicates (seed {a['bootstrap_seed']}): seeds resampled with "
        "replacement, then the test images of each drawn seed, the same images for every arm.",
        "A contrast is clear when its interval excludes zero in the claimed direction and every "
        "seed's estimate has that sign.",
        "Image control, per arm: perception accuracy with the real image minus with a blank "
        f"image is at least {a['control_margin']:g} points and its interval excludes zero; a "
        "finding whose contrasts involve an arm that fails it is NOT JUDGED.",
        "Finding 1: the LLM main effects on fine-grained (df) and general (dg) questions are "
        f"clear and positive, and df/dg lies within [{1 / eq:.2g}, {eq:g}].",
        "Finding 2: the encoder main effect on fine-grained questions (df) and df - dg (dg: on "
        "general questions) are clear and positive.",
        "Finding 3: fine-grained accuracy of the upgraded pair with the LLM trained in "
        "pretraining minus the same pair without pretraining, and the pretraining main effect "
        "on fine-grained questions, are clear and positive.",
        "Finding 4: fine-grained accuracy of the upgraded pair instruction-tuned with "
        "classification data minus its twin tuned on general data only is clear and positive, "
        f"and closes at least {a['gap_closed']:.0%} of the twin's gap to the ridge probe on the "
        "same five-way questions (upgraded encoder; point estimate).",
    ]


@dataclasses.dataclass(frozen=True)
class Control:
    arm: str
    effect: Estimate  # perception, real minus blank image, chance-normalised points
    passed: bool


@dataclasses.dataclass(frozen=True)
class Finding:
    number: int
    claim: str
    verdict: str  # REPRODUCED, NOT_REPRODUCED or NOT_JUDGED, on the primary read-out
    reason: str
    lines: list[str]  # the contrasts on the primary read-out
    secondary: str  # the verdict the same rules give on the secondary read-out (not judged)
    secondary_lines: list[str]
    arms: list[str]  # the arms its contrasts involve

    @property
    def reproduced(self) -> bool:
        return self.verdict == REPRODUCED


def _boot(results: Results, a: dict, contrasts, normalise: bool = True) -> list[Estimate]:
    return stats.bootstrap_many(
        results, contrasts, a["bootstrap_samples"], a["bootstrap_seed"], a["level"], normalise
    )


def _parts(results: Results) -> list[str]:
    return [p for p in PARTS if np.any(np.asarray(results.parts) == p)]


def controls(results: Results, a: dict, readout: str) -> dict[str, Control]:
    """arm -> the image control on one read-out."""
    names = list(results.arms)
    contrasts = [
        stats.term(n, f"general_{readout}", "perception")
        + stats.term(n, f"blank_{readout}", "perception", weight=-1.0)
        for n in names
    ]
    found = _boot(results, a, contrasts)
    return {
        n: Control(n, e, e.point >= a["control_margin"] and e.interval[0] > 0)
        for n, e in zip(names, found)
    }


def _signed(v: float) -> str:
    return f"{round(float(v), 1) + 0.0:+.1f}"  # + 0.0: no "-0.0"


def points(e: Estimate) -> str:
    """'+x.x [lo, hi] chance-normalised points, per seed a/b/c'."""
    low, high = e.interval
    seeds = "/".join(_signed(v) for v in e.per_seed)
    return (f"{_signed(e.point)} [{_signed(low)}, {_signed(high)}] chance-normalised points, "
            f"per seed {seeds}")  # fmt: skip


def _times(e: Estimate) -> str:
    low, high = e.interval
    seeds = "/".join(f"{v:.2f}" if np.isfinite(v) else "undefined" for v in e.per_seed)
    if not (np.isfinite(e.point) and np.isfinite(low) and np.isfinite(high)):
        return f"{e.point:.2f}, interval undefined (its denominator's includes zero), per seed {seeds}"
    return f"{e.point:.2f} [{low:.2f}, {high:.2f}], per seed {seeds}"


def _unclear(named: dict[str, Estimate]) -> str:
    bad = [name for name, e in named.items() if not stats.clear(e)]
    return f"{' and '.join(bad)} not clearly positive"


# Each finding's rule on one read-out: (passes, why, lines, contrasts it judges).


def _llm(results: Results, r: str, a: dict, keep):
    df = main_effect(results, "llm", f"fine_{r}", keep=keep)
    dg = main_effect(results, "llm", f"general_{r}", keep=keep)
    if not df:
        return None
    parts = _parts(results)
    per_part = [main_effect(results, "llm", f"general_{r}", p, keep) for p in parts]
    ef, eg, *ep = _boot(results, a, [df, dg, *per_part])
    q, eq = stats.ratio(ef, eg, a["level"]), a["equal_ratio"]
    both = stats.clear(ef) and stats.clear(eg)
    ok = both and 1 / eq <= q.point <= eq
    why = (
        f"both gains clear, ratio {q.point:.2f} within [{1 / eq:.2g}, {eq:g}]" if ok
        else _unclear({"df": ef, "dg": eg}) if not both
        else f"ratio {q.point:.2f} outside [{1 / eq:.2g}, {eq:g}]"
    )  # fmt: skip
    lines = [
        f"LLM effect on fine-grained questions (df): {points(ef)}",
        f"LLM effect on general questions (dg): {points(eg)}",
        f"df/dg: {_times(q)}",
        *(f"LLM effect on {p} questions (not judged): {points(e)}" for p, e in zip(parts, ep)),
    ]
    return ok, why, lines, [df, dg]


def _encoder(results: Results, r: str, a: dict, keep):
    df = main_effect(results, "encoder", f"fine_{r}", keep=keep)
    dg = main_effect(results, "encoder", f"general_{r}", keep=keep)
    if not df:
        return None
    ef, eg, ed = _boot(results, a, [df, dg, df + scaled(dg, -1.0)])
    ok = stats.clear(ef) and stats.clear(ed)
    why = "both clear" if ok else _unclear({"df": ef, "df - dg": ed})
    lines = [
        f"encoder effect on fine-grained questions (df): {points(ef)}",
        f"encoder effect on general questions (dg): {points(eg)}",
        f"df - dg: {points(ed)}",
    ]
    return ok, why, lines, [df, dg]


def _pretrain(results: Results, r: str, a: dict, keep):
    twin, noalign = find_arm(results, **TWIN), find_arm(results, **NOALIGN)
    aligned = stats.difference(twin, noalign, f"fine_{r}")
    trained = main_effect(results, "pretrain", f"fine_{r}", keep=keep)
    if not trained:
        return None
    ea, et = _boot(results, a, [aligned, trained])
    ok = stats.clear(ea) and stats.clear(et)
    why = "both clear" if ok else _unclear({"pretraining vs none": ea, "trained vs frozen": et})
    lines = [
        f"pretraining (LLM trained) vs no pretraining, fine-grained: {points(ea)}",
        f"LLM trained vs frozen in pretraining (main effect), fine-grained: {points(et)}",
    ]
    return ok, why, lines, [aligned, trained]


def _classify(results: Results, r: str, a: dict, keep):
    twin, classify = find_arm(results, **TWIN), find_arm(results, **CLASSIFY)
    gain = stats.difference(classify, twin, f"fine_{r}")
    gap = stats.term("upgraded", stats.PROBE5) + stats.term(twin, f"fine_{r}", weight=-1.0)
    eg, egap = _boot(results, a, [gain, gap])
    closed = stats.ratio(eg, egap, a["level"])
    if not stats.clear(eg):
        ok, why = False, _unclear({"the gain": eg})
    elif not egap.point > 0:
        ok, why = False, "no gap to close: the twin already matches the ridge probe"
    else:
        ok = closed.point >= a["gap_closed"]
        word = "at least" if ok else "less than"
        why = f"gain clear and closes {closed.point:.0%} of the gap, {word} {a['gap_closed']:.0%}"
    lines = [
        f"classification data vs general only, fine-grained: {points(eg)}",
        f"gap from the general-only twin to the ridge probe (upgraded encoder): {points(egap)}",
        f"fraction of the gap closed: {_times(closed)}",
    ]
    return ok, why, lines, [gain, gap]


RULES = (_llm, _encoder, _pretrain, _classify)


def judge(results: Results, analysis=None) -> tuple[dict[str, dict[str, Control]], list[Finding]]:
    """(read-out -> arm -> Control, the four findings)."""
    a = settings(analysis)
    ctl = {r: controls(results, a, r) for r in (a["readout"], a["secondary"])}
    found = []
    for number, (claim, rule) in enumerate(zip(CLAIMS, RULES), start=1):
        verdicts = {}
        for r in (a["readout"], a["secondary"]):
            keep = {n for n, c in ctl[r].items() if c.passed}
            judged = rule(results, r, a, keep)
            if judged is None:  # a main effect with no pair of arms passing the control
                why = "image control failed by every pair of arms the main effect compares"
                # shown for information: the same contrasts over every arm, broken ones included
                every = rule(results, r, a, None)[2]
                lines = [why] + [f"over every arm, not judged: {line}" for line in every]
                verdicts[r] = (NOT_JUDGED, why, lines, [])
                continue
            ok, why, lines, contrasts = judged
            arms = [n for n in results.arms if any(n in stats.arms_of(c) for c in contrasts)]
            failed = [n for n in arms if not ctl[r][n].passed]
            if failed:
                verdict, why = NOT_JUDGED, f"image control failed: {', '.join(failed)}"
            else:
                verdict = REPRODUCED if ok else NOT_REPRODUCED
            verdicts[r] = (verdict, why, lines, arms)
        (verdict, why, lines, arms), second = verdicts[a["readout"]], verdicts[a["secondary"]]
        found.append(Finding(number, claim, verdict, why, lines, second[0], second[2], arms))
    return ctl, found


def findings(results: Results, analysis=None) -> list[Finding]:
    return judge(results, analysis)[1]


def columns(results: Results, a: dict) -> list[tuple[str, str, str | None]]:
    """The table's (header, metric, part) columns: both read-outs, then per part and the
    blank-image control on the primary read-out."""
    r = a["readout"]
    out = [(f"{q} {ro}", f"{q}_{ro}", None) for q in ("fine", "general") for ro in READOUTS]
    out += [(f"{p} ({r})", f"general_{r}", p) for p in _parts(results)]
    return out + [(f"blank-image perception ({r})", f"blank_{r}", "perception")]


def arm_table(results: Results, a: dict) -> dict[str, dict[str, Estimate]]:
    """header -> arm -> accuracy in % with its interval; "probe5" -> encoder level -> the same
    for the ridge probe."""
    cols, names, levels = columns(results, a), list(results.arms), list(results.probe5)
    contrasts = [stats.term(n, m, p) for _, m, p in cols for n in names]
    contrasts += [stats.term(level, stats.PROBE5) for level in levels]
    found = iter(_boot(results, a, contrasts, normalise=False))
    table = {header: {n: next(found) for n in names} for header, _, _ in cols}
    table["probe5"] = {level: next(found) for level in levels}
    return table


def cell(e: Estimate) -> str:
    return f"{e.point:.1f} [{e.interval[0]:.1f}, {e.interval[1]:.1f}]"


def markdown(results: Results, a: dict, table: dict, ctl: dict, found: list[Finding]) -> str:
    cols = columns(results, a)
    out = io.StringIO()
    out.write(f"# {title(results)}\n\n")
    out.write(
        f"Accuracy in %, mean over seeds [{a['level']:.0%} interval, two-stage bootstrap over "
        "seeds and test images]. fine: the five-way fine-grained question (hard negatives); "
        "general: the general question; letter: the option letter the model names (the paper's "
        "read-out), cloze: the likeliest option text.\n\n"
    )
    header = ["arm", "encoder", "LLM", "pretraining", "instruction data", *(h for h, _, _ in cols)]
    out.write("| " + " | ".join(header) + " |\n|" + "---|" * len(header) + "\n")
    for name, levels in results.arms.items():
        cells = [name, *(levels[f] for f in ("encoder", "llm", "pretrain", "instruct"))]
        cells += [cell(table[h][name]) for h, _, _ in cols]
        out.write("| " + " | ".join(cells) + " |\n")
    chance = [f"{chance_percent(results, m, p):.1f}" for _, m, p in cols]
    out.write("| chance | | | | | " + " | ".join(chance) + " |\n\n")

    out.write("Probes on frozen encoder features (no language model):\n\n")
    out.write("| encoder | 100-way linear probe (chance 1.0) | ridge probe on the five-way "
              "questions (chance 20.0) |\n|---|---|---|\n")  # fmt: skip
    for level, e in table["probe5"].items():
        out.write(f"| {level} | {results.probe100[level]:.1f} | {cell(e)} |\n")

    out.write("\n## Declared analysis\n\n")
    out.write("".join(f"- {line}\n" for line in rules(a)))

    r, r2 = a["readout"], a["secondary"]
    out.write("\n## Image control\n\nPerception questions, real minus blank image, "
              "chance-normalised points.\n\n")  # fmt: skip
    out.write(f"| arm | {r} | {r2} (not judged) | passes |\n|---|---|---|---|\n")
    for name in results.arms:
        c, c2 = ctl[r][name], ctl[r2][name]
        out.write(f"| {name} | {cell(c.effect)} | {cell(c2.effect)} | "
                  f"{'yes' if c.passed else '**no**'} |\n")  # fmt: skip
    failed = [n for n, c in ctl[r].items() if not c.passed]
    out.write("\n" + (f"Failed the control: {', '.join(failed)}.\n" if failed else
                      "Every arm passes the control.\n"))  # fmt: skip

    out.write("\n## The paper's findings, judged by the declared rules\n\n")
    for f in found:
        out.write(f"### {f.number}. {f.claim}\n\n**{f.verdict}** ({f.reason}).\n\n")
        out.write("".join(f"- {line}\n" for line in f.lines))
        out.write(f"\n{r2.capitalize()} read-out, not judged (the same rules give: "
                  f"{f.secondary}):\n\n")  # fmt: skip
        out.write("".join(f"- {line}\n" for line in f.secondary_lines) + "\n")
    return out.getvalue()


def write_csv(path: Path, results: Results) -> None:
    table = rows(results)
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(table[0]))
        writer.writeheader()
        writer.writerows(table)


def write_all(workdir, results: Results, analysis=None) -> tuple[str, list[Finding]]:
    """results.csv, results.md and results.png in `workdir`; returns (markdown, findings)."""
    workdir = Path(workdir)
    results.validate()
    a = settings(analysis)
    ctl, found = judge(results, a)
    table = arm_table(results, a)
    write_csv(workdir / "results.csv", results)
    text = markdown(results, a, table, ctl, found)
    (workdir / "results.md").write_text(text)
    plot.plot(workdir / "results.png", results, a, table, found)
    return text, found


def regenerate(workdir, analysis=None) -> tuple[str, list[Finding]]:
    """Rewrites the three files from workdir/results.{npz,json}."""
    return write_all(workdir, Results.load(workdir), analysis)
