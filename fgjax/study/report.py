"""The study's report: a table of variants by metric, the paper's three findings decided from
the numbers, and a plot of fine-grained against general accuracy with an arrow per ablation.

A variant is (encoder, llm, pretrain_llm) with encoder and llm each "base" or "upgraded" and
pretrain_llm "frozen" or "trained". Each finding is judged from the main effect of one factor:
the mean over all variants with the factor at its second level minus the mean at its first,
in accuracy points, with the other factors averaged out.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import math
from collections.abc import Sequence
from pathlib import Path

FACTORS = {
    "encoder": ("base", "upgraded"),
    "llm": ("base", "upgraded"),
    "pretrain_llm": ("frozen", "trained"),
}
FINE, GENERAL = "fine_mc5", "general"
METRICS = {  # name -> (label, chance level in %); the "letters" columns are optional
    "fine_mc5": ("fine-grained 5-way MC", 20.0),
    "fine_mc5_letters": ("fine-grained 5-way MC, by letter", 20.0),
    "fine_rank_top1": ("fine-grained likelihood top-1", 1.0),
    "fine_rank_top5": ("fine-grained likelihood top-5", 5.0),
    "general": ("general questions", None),
    "general_letters": ("general questions, by letter", None),
}
# An effect counts only when it exceeds this many accuracy points (and twice its standard
# error when several seeds were run).
MIN_EFFECT = 2.0


@dataclasses.dataclass(frozen=True)
class Finding:
    claim: str
    reproduced: bool
    evidence: str


def variant_name(row: dict) -> str:
    return f"enc={row['encoder']} llm={row['llm']} pretrain-LLM={row['pretrain_llm']}"


def _mean_std(values: Sequence[float]) -> tuple[float, float]:
    mean = sum(values) / len(values)
    var = sum((v - mean) ** 2 for v in values) / (len(values) - 1) if len(values) > 1 else 0.0
    return mean, math.sqrt(var)


def effect(rows: list[dict], factor: str, metric: str) -> tuple[float, float]:
    """(main effect in points, its standard error over seeds; 0 with one seed)."""
    low, high = FACTORS[factor]
    per_seed = {}
    for row in rows:
        sign = 1 if row[factor] == high else -1 if row[factor] == low else 0
        per_seed.setdefault(row.get("seed", 0), []).append(sign * row[metric])
    # each seed holds the full grid: half the variants at each level
    effects = [2 * sum(v) / len(v) for v in per_seed.values()]
    mean, std = _mean_std(effects)
    return mean, std / math.sqrt(len(effects)) if len(effects) > 1 else 0.0


def _clear(value: float, stderr: float) -> bool:
    return value > max(MIN_EFFECT, 2 * stderr)


def findings(rows: list[dict]) -> list[Finding]:
    """The paper's three findings, each judged from the table's numbers."""
    llm_fine, llm_fine_se = effect(rows, "llm", FINE)
    llm_gen, llm_gen_se = effect(rows, "llm", GENERAL)
    enc_fine, enc_fine_se = effect(rows, "encoder", FINE)
    enc_gen, _ = effect(rows, "encoder", GENERAL)
    unfreeze_fine, unfreeze_se = effect(rows, "pretrain_llm", FINE)
    both_up = _clear(llm_fine, llm_fine_se) and _clear(llm_gen, llm_gen_se)
    ratio = llm_fine / llm_gen if both_up else float("nan")
    return [
        Finding(
            "A better LLM raises all benchmark scores about equally.",
            both_up and 0.5 <= ratio <= 2.0,
            f"LLM upgrade: fine {llm_fine:+.1f} pts, general {llm_gen:+.1f} pts"
            + (
                f" (ratio {ratio:.2f}; 'about equally' means within 2x)"
                if both_up
                else " (needs both > 0, clearly)"
            ),
        ),
        Finding(
            "A better vision encoder raises fine-grained classification disproportionately.",
            _clear(enc_fine, enc_fine_se) and enc_fine >= 2 * max(enc_gen, 0.0),
            f"encoder upgrade: fine {enc_fine:+.1f} pts, general {enc_gen:+.1f} pts "
            "(reproduced when the fine gain is clear and at least twice the general one)",
        ),
        Finding(
            "Pretraining matters for fine-grained knowledge when the LLM is not frozen during it.",
            _clear(unfreeze_fine, unfreeze_se),
            f"LLM trained vs frozen in pretraining: fine {unfreeze_fine:+.1f} pts "
            f"(reproduced when clearly positive, > {MIN_EFFECT:.0f} pts and 2 standard errors)",
        ),
    ]


def metrics_of(rows: list[dict]) -> list[str]:
    """The METRICS every row has, in table order."""
    return [m for m in METRICS if rows and all(m in r for r in rows)]


def summarize(rows: list[dict]) -> list[dict]:
    """One row per variant with each metric's mean and standard deviation over seeds."""
    groups: dict[tuple, list[dict]] = {}
    for row in rows:
        groups.setdefault(tuple(row[f] for f in FACTORS), []).append(row)
    out = []
    for key, members in sorted(groups.items()):
        summary = dict(zip(FACTORS, key))
        summary["seeds"] = len(members)
        for metric in metrics_of(rows):
            summary[metric], summary[f"{metric}_std"] = _mean_std([m[metric] for m in members])
        out.append(summary)
    return out


def write_csv(path: Path, rows: list[dict]) -> None:
    columns = ["seed", *FACTORS, *metrics_of(rows)]
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)


def markdown(rows: list[dict], probes: list[dict], found: list[Finding]) -> str:
    """The results table (mean +- std over seeds), chance levels, the linear-probe reference
    and the findings."""
    summary = summarize(rows)
    metrics = metrics_of(rows)
    seeds = summary[0]["seeds"] if summary else 0
    header = ["encoder", "LLM", "LLM in pretraining", *(METRICS[m][0] for m in metrics)]
    out = io.StringIO()
    out.write(
        f"# Miniature study: fine-grained knowledge of VLMs ({seeds} seed{'s' * (seeds > 1)})\n\n"
    )
    out.write(
        "Accuracies in %"
        + (", mean +- standard deviation over seeds" if seeds > 1 else "")
        + ".\n\n"
    )
    out.write("| " + " | ".join(header) + " |\n|" + "---|" * len(header) + "\n")
    for s in summary:
        cells = [s["encoder"], s["llm"], s["pretrain_llm"]]
        cells += [
            f"{s[m]:.1f}" + (f" +- {s[f'{m}_std']:.1f}" if seeds > 1 else "") for m in metrics
        ]
        out.write("| " + " | ".join(cells) + " |\n")
    chance = [f"{METRICS[m][1]:.1f}" if METRICS[m][1] is not None else "see note" for m in metrics]
    out.write("| chance | | | " + " | ".join(chance) + " |\n\n")
    out.write(
        "Multiple-choice questions (fine-grained with mined hard negatives, and general) are "
        "answered by likelihood: the likeliest option as the answer, options not shown (the "
        "cloze formulation). The 'by letter' columns use the paper's read-out, the option letter "
        "the model names; language models this small have not learned to answer by letter, so "
        "those stay near chance. The findings use the likelihood columns. General questions mix "
        "yes/no, three-way and eight-way questions (chance about 30%).\n\n"
    )
    if probes:
        out.write(
            "Specialized classifier (linear probe on frozen encoder features, fine classes):\n\n"
        )
        out.write("| encoder | probe accuracy | chance |\n|---|---|---|\n")
        for p in probes:
            out.write(f"| {p['encoder']} | {p['accuracy']:.1f} | 1.0 |\n")
        out.write("\n")
    out.write("## The paper's findings, judged from this table\n\n")
    for f in found:
        out.write(
            f"- **{'REPRODUCED' if f.reproduced else 'NOT reproduced'}**: {f.claim} {f.evidence}.\n"
        )
    return out.getvalue()


def plot(path: Path, rows: list[dict], probes: list[dict]) -> None:
    """Fine-grained vs general accuracy per variant; arrows for each ablation (encoder upgrade,
    LLM upgrade, LLM trained in pretraining), one panel per ablation."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    summary = {tuple(s[f] for f in FACTORS): s for s in summarize(rows)}
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.8), sharex=True, sharey=True)
    colors = {"frozen": "tab:blue", "trained": "tab:orange"}
    markers = {
        ("base", "base"): "o",
        ("base", "upgraded"): "s",
        ("upgraded", "base"): "^",
        ("upgraded", "upgraded"): "D",
    }
    for ax, (factor, title) in zip(
        axes,
        [
            ("encoder", "upgrade the encoder"),
            ("llm", "upgrade the LLM"),
            ("pretrain_llm", "train the LLM in pretraining"),
        ],
    ):
        for key, s in summary.items():
            enc, llm, pre = key
            ax.errorbar(
                s[GENERAL], s[FINE], xerr=s[f"{GENERAL}_std"] or None, yerr=s[f"{FINE}_std"] or None,
                marker=markers[(enc, llm)], color=colors[pre], markersize=8, linestyle="none", alpha=0.9,
            )  # fmt: skip
            low, high = FACTORS[factor]
            if dict(zip(FACTORS, key))[factor] == low:
                other = tuple(high if f == factor else v for f, v in zip(FACTORS, key))
                if other in summary:
                    t = summary[other]
                    ax.annotate(
                        "", xy=(t[GENERAL], t[FINE]), xytext=(s[GENERAL], s[FINE]),
                        arrowprops=dict(arrowstyle="->", color="0.3", lw=1.4),
                    )  # fmt: skip
        ax.axhline(METRICS[FINE][1], color="0.6", linestyle=":", lw=1)
        for p in probes:
            ax.axhline(p["accuracy"], color="tab:green", linestyle="--", lw=1, alpha=0.6)
        ax.set_title(title)
        ax.set_xlabel("general questions accuracy (%)")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("fine-grained 5-way multiple choice (%)")
    handles = [plt.Line2D([], [], marker=m, color="0.3", linestyle="none", label=f"encoder {e}, LLM {l}")
               for (e, l), m in markers.items()]  # fmt: skip
    handles += [plt.Line2D([], [], marker="o", color=c, linestyle="none", label=f"LLM {k} in pretraining")
                for k, c in colors.items()]  # fmt: skip
    handles += [plt.Line2D([], [], color="tab:green", linestyle="--", label="linear probes, 100-way (per encoder)"),
                plt.Line2D([], [], color="0.6", linestyle=":", label="chance")]  # fmt: skip
    fig.legend(handles=handles, loc="lower center", ncol=4, fontsize=8, frameon=False)
    fig.suptitle(
        "Fine-grained vs general accuracy; arrows point from the base to the ablated variant"
    )
    fig.tight_layout(rect=(0, 0.1, 1, 0.95))
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_all(workdir: Path, rows: list[dict], probes: list[dict]) -> tuple[str, list[Finding]]:
    """results.csv, results.md and results.png in `workdir`; returns (markdown, findings)."""
    found = findings(rows)
    write_csv(workdir / "results.csv", rows)
    text = markdown(rows, probes, found)
    (workdir / "results.md").write_text(text)
    plot(workdir / "results.png", rows, probes)
    return text, found
