"""The study's plot: one panel per finding, fine-grained against general accuracy (primary
read-out) of the arms the finding compares, with interval bars both ways, arrows from the base
to the changed arm, chance lines, and the ridge probes on the same five-way axis (they answer
the same questions; a 100-way accuracy is never drawn there)."""

from __future__ import annotations

from pathlib import Path

from fgjax.study import stats
from fgjax.study.results import CLASSIFY, NOALIGN, TWIN, Results, chance_percent, find_arm, title

SHORT = ("a better LLM", "a better encoder", "pretraining", "classification data")


def _arrows(results: Results) -> list[tuple[list[str], list[tuple[str, str]]]]:
    """Per finding: (the arms to draw, arrows from base to changed arm)."""
    grid = stats.grid_arms(results)

    def changed(name, factor):
        high = {"pretrain": "trained"}.get(factor, "upgraded")
        return find_arm(results, **{**grid[name], factor: high})

    def steps(factor):
        low = {"pretrain": "frozen"}.get(factor, "base")
        return [(n, changed(n, factor)) for n, levels in grid.items() if levels[factor] == low]

    twin, noalign = find_arm(results, **TWIN), find_arm(results, **NOALIGN)
    classify = find_arm(results, **CLASSIFY)
    return [
        (list(grid), steps("llm")),
        (list(grid), steps("encoder")),
        ([*grid, noalign], [(noalign, twin), *steps("pretrain")]),
        ([twin, classify], [(twin, classify)]),
    ]


def plot(path: Path, results: Results, a: dict, table: dict, found: list) -> None:
    """One panel per finding: fine-grained against general accuracy (primary read-out) of the
    arms it compares, with intervals both ways and arrows from base to changed arm."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    r = a["readout"]
    fine, general = table[f"fine {r}"], table[f"general {r}"]
    markers = {("base", "base"): "o", ("base", "upgraded"): "s",
               ("upgraded", "base"): "^", ("upgraded", "upgraded"): "D"}  # fmt: skip
    colors = {"frozen": "tab:blue", "trained": "tab:orange", "none": "0.5", "classify": "tab:green"}
    probe_colors = {"base": "tab:purple", "upgraded": "tab:red"}

    def color(levels):
        return colors["classify" if levels["instruct"] == "classify" else levels["pretrain"]]

    fig, axes = plt.subplots(1, 4, figsize=(20, 5.2), sharex=True, sharey=True)
    for ax, f, short, (arms, arrows) in zip(axes, found, SHORT, _arrows(results)):
        for name in arms:
            levels, x, y = results.arms[name], general[name], fine[name]
            ax.errorbar(
                x.point, y.point,
                xerr=[[x.point - x.interval[0]], [x.interval[1] - x.point]],
                yerr=[[y.point - y.interval[0]], [y.interval[1] - y.point]],
                marker=markers[(levels["encoder"], levels["llm"])], color=color(levels),
                markersize=8, linestyle="none", capsize=2, alpha=0.9,
            )  # fmt: skip
        for base, changed in arrows:
            ax.annotate(
                "", xy=(general[changed].point, fine[changed].point),
                xytext=(general[base].point, fine[base].point),
                arrowprops=dict(arrowstyle="->", color="0.3", lw=1.4),
            )  # fmt: skip
        # the probes answer the same five-way questions, so they share the fine-grained axis
        for level, e in table["probe5"].items():
            ax.axhline(e.point, color=probe_colors[level], linestyle="--", lw=1)
        ax.axhline(chance_percent(results, f"fine_{r}", None), color="0.6", linestyle=":", lw=1)
        ax.axvline(chance_percent(results, f"general_{r}", None), color="0.6", linestyle=":", lw=1)
        ax.set_title(f"{f.number}. {short}: {f.verdict}", fontsize=10)
        ax.set_xlabel(f"general questions accuracy (%, {r})")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel(f"fine-grained five-way accuracy (%, {r})")
    line = plt.Line2D
    handles = [line([], [], marker=m, color="0.3", linestyle="none", label=f"encoder {e}, LLM {l}")
               for (e, l), m in markers.items()]  # fmt: skip
    handles += [line([], [], marker="o", color=c, linestyle="none",
                     label="instruction-tuned with classification data" if k == "classify"
                     else "no pretraining" if k == "none" else f"LLM {k} in pretraining")
                for k, c in colors.items()]  # fmt: skip
    handles += [line([], [], color=c, linestyle="--",
                     label=f"ridge probe on the five-way questions ({k} encoder)")
                for k, c in probe_colors.items()]  # fmt: skip
    handles += [line([], [], color="0.6", linestyle=":", label="chance")]
    fig.legend(handles=handles, loc="lower center", ncol=4, fontsize=8, frameon=False)
    fig.suptitle(f"{title(results)}: arrows point from the base to the changed arm; "
                 f"bars: {a['level']:.0%} intervals")  # fmt: skip
    fig.tight_layout(rect=(0, 0.12, 1, 0.95))
    fig.savefig(path, dpi=110)
    plt.close(fig)
