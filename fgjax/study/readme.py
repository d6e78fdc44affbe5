"""The README's study figures, generated from a finished run, never typed:

    python -m fgjax.study.readme --workdir=study [--readme=README.md]

Replaces the text between BEGIN and END in the README with a section built from
workdir/results.{npz,json} and the analysis declared in workdir/study_config.json.
"""

from __future__ import annotations

import io
import json
import sys
from pathlib import Path

from fgjax.study import report
from fgjax.study.results import READOUTS, Results, title

BEGIN, END = "<!-- study-results:begin -->", "<!-- study-results:end -->"


def analysis_of(workdir) -> dict | None:
    """The "analysis" field of workdir/study_config.json, if there is one."""
    path = Path(workdir) / "study_config.json"
    if not path.is_file():
        return None
    return json.loads(path.read_text()).get("analysis")


def _provenance(workdir: Path, info: dict) -> str:
    machine, commit, date = (info.get(k, "unknown") for k in ("machine", "commit", "date"))
    text = f"Run `{workdir.name}`: commit `{commit}`, {date}, on {machine}."
    seconds = info.get("seconds") or {}
    if seconds:
        workers = f" on {info['workers']} worker processes" if "workers" in info else ""
        text += f" Worker time by stage (summed over its units{workers}): " + ", ".join(
            f"{stage} {s / 60:.1f} min" for stage, s in seconds.items()
        )
    if "wall_seconds" in info:
        text += f"{';' if seconds else ''} wall clock {info['wall_seconds'] / 60:.1f} min"
    return text + ("." if seconds or "wall_seconds" in info else "")


def section(workdir, results: Results, analysis=None) -> str:
    """The generated section (markdown, without the markers)."""
    workdir = Path(workdir)
    a = report.settings(analysis)
    ctl, found = report.judge(results, a)
    table = report.arm_table(results, a)
    out = io.StringIO()
    out.write(f"{title(results)}. {_provenance(workdir, results.info)}\n\n")
    out.write(f"Accuracy in %, mean over seeds [{a['level']:.0%} two-stage bootstrap interval]; "
              f"findings judged on the {a['readout']} read-out.\n\n")  # fmt: skip
    headers = [f"{q} {r}" for q in ("fine", "general") for r in READOUTS]
    headers.append(f"blank-image perception ({a['readout']})")
    out.write("| arm | " + " | ".join(headers) + " |\n|" + "---|" * (len(headers) + 1) + "\n")
    for name in results.arms:
        out.write(
            f"| {name} | " + " | ".join(report.cell(table[h][name]) for h in headers) + " |\n"
        )
    out.write("\nProbes on frozen encoder features: "
              + "; ".join(f"{level} encoder: 100-way linear probe {results.probe100[level]:.1f}%, "
                          f"ridge probe on the five-way questions {report.cell(e)}%"
                          for level, e in table["probe5"].items()) + ".\n\n")  # fmt: skip
    failed = [n for n, c in ctl[a["readout"]].items() if not c.passed]
    out.write("Image control (perception, real minus blank image): "
              + (f"failed by {', '.join(failed)}." if failed else "every arm passes.") + "\n\n")  # fmt: skip
    for f in found:
        out.write(f"{f.number}. {f.claim} **{f.verdict}** ({f.reason}).\n")
        out.write("".join(f"   - {line}\n" for line in f.lines))
        out.write(f"   - {a['secondary']} read-out (not judged): {f.secondary}\n")
    return out.getvalue()


def replace(readme, text: str) -> None:
    """Puts `text` between the markers of `readme`, leaving the rest as it was."""
    readme = Path(readme)
    old = readme.read_text()
    begin, end = old.find(BEGIN), old.find(END)
    if begin < 0 or end < 0 or end < begin:
        raise ValueError(f"{readme}: wants the markers {BEGIN} and then {END}")
    readme.write_text(old[: begin + len(BEGIN)] + "\n" + text.rstrip("\n") + "\n" + old[end:])


def update(workdir, readme="README.md") -> None:
    results = Results.load(workdir)
    results.validate()
    replace(readme, section(workdir, results, analysis_of(workdir)))


def main(argv) -> None:
    from absl import app, flags

    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments {argv[1:]}")
    update(flags.FLAGS.workdir, flags.FLAGS.readme)


if __name__ == "__main__":
    from absl import app, flags

    # defined here, not on import: fgjax.study's own entry point defines --workdir too
    flags.DEFINE_string("workdir", None, "A finished study's workdir.", required=True)
    flags.DEFINE_string("readme", "README.md", "The README to update.")
    app.run(main, argv=sys.argv)
