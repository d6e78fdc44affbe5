"""Pilots: some arms of one seed that is not a study seed, on a finished study's components,
judged by the image control alone -- how a recipe is chosen before the study seeds run it.

    python -m fgjax.study.pilot --workdir=pilot --study=study --seed=50 \
        --arms=noalign,enc-base_llm-base_pretrain-frozen [--config.finetune.steps=100 ...]

The pilot links the study's stage-0 outputs (tokenizer, components, option sets), so
overrides of stage-0 fields do not apply to it; it trains and evaluates the named arms of
`seed` under the config given (default: the study's own, configs/study/mini.py), and prints
each arm's image control on both read-outs: perception accuracy with the real image minus with
a blank one, chance-normalised, with its 95% interval over test images (one seed: no seed
noise), and whether it passes the declared margin. A study seed is refused: a recipe chosen on
the seeds that judge it would be tuned on its own test. Written to `pilot.json` as well.
A workdir belongs to the config of its first pilot (`pilot_config.json`): rerunning the same
pilot there resumes it, and another config is refused rather than given the old runs.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

from fgjax.storage import write_atomic
from fgjax.study import report, stages
from fgjax.study import workers as study_workers

SHARED = ("tokenizer", "components", "options")  # the study's stage-0 outputs a pilot reuses


def check(config, seed: int, names: list[str]) -> None:
    """Raises ValueError for an unknown arm or a study seed."""
    known = [a.name for a in stages.arms()]
    unknown = [n for n in names if n not in known]
    if unknown:
        raise ValueError(f"unknown arm(s) {unknown}; the study's arms are {known}")
    if seed in stages.seeds(config):
        raise ValueError(
            f"seed {seed} is one of the study's seeds {list(stages.seeds(config))}: pilot on "
            "another seed (--seed), so that no verdict is judged on the seeds a recipe was chosen on"
        )


def select(config, paths: stages.Paths, seed: int, names: list[str]) -> list[stages.Unit]:
    """The stage-0 units (done, for their names) and, of `seed`, the named arms' instruction
    tuning and evaluation with the alignment runs they start from."""
    check(config, seed, names)
    chosen = [a for a in stages.arms() if a.name in names]
    aligned = {a.aligned for a in chosen if a.pretrain != "none"}
    plan = stages.seed_plan(config, paths, seed)
    aligns = [u for u in plan if u.stage == "stage 1" and u.arm.name in aligned]
    rest = [u for u in plan if u.stage != "stage 1" and u.arm.name in names]
    return stages.components(config, paths) + aligns + rest


def claim(config, workdir: Path) -> None:
    """Records the pilot's config in its workdir, or raises ValueError when the workdir holds a
    pilot of another config (whose finished runs would otherwise be reused as they are)."""
    saved, text = workdir / "pilot_config.json", config.to_json_best_effort(indent=2)
    if saved.is_file() and saved.read_text() != text:
        raise ValueError(
            f"{workdir} holds a pilot of another config ({saved}); its finished runs would be "
            "reused: give this pilot a new --workdir"
        )
    workdir.mkdir(parents=True, exist_ok=True)
    write_atomic(saved, text)


def link_study(study: Path, workdir: Path) -> None:
    """Links the study's stage-0 outputs into the pilot's workdir (they must be complete)."""
    missing = [d for d in SHARED if not (study / d).exists()]
    if missing:
        raise FileNotFoundError(
            f"{study} has no {', '.join(missing)}: run the study (or its stage 0) there first, "
            "e.g. `python -m fgjax.study --workdir=" + str(study) + "`"
        )
    workdir.mkdir(parents=True, exist_ok=True)
    for d in SHARED:
        if not (workdir / d).exists():
            os.symlink((study / d).absolute(), workdir / d)


def run(config, workdir: str, study: str, seed: int, names: list[str]) -> dict:
    """Runs the pilot; returns {arm: {readout: {"point", "interval", "passed"}}}."""
    from fgjax.console import setup_python_logging
    from fgjax.study import run as study_run

    setup_python_logging()
    a = report.settings(config.get("analysis"))
    check(config, seed, names)  # before anything is written
    root, source = Path(workdir).absolute(), Path(study).absolute()
    link_study(source, root)
    claim(config, root)
    units = select(config, study_run.study_paths(config, root), seed, names)
    not_done = [u.name for u in units if u.stage == "stage 0" and not u.done()]
    if not_done:
        raise FileNotFoundError(f"{source}'s stage 0 is unfinished ({not_done[0]}): finish the study's "
                                "stage 0 first")  # fmt: skip
    study_workers.run_units(
        units, study_run.execute, config.get("workers") or study_workers.default_count(),
        config.get("xla_flags"), root / "xla_cache",
        lambda u, running: logging.info("[pilot] %s", u.name),
        lambda u, seconds: logging.info("[pilot] finished %s in %.0f s", u.name, seconds),
    )  # fmt: skip
    results = study_run.collect(config, units, root, {})
    out = {}
    for readout in (a["readout"], a["secondary"]):
        for name, ctl in report.controls(results, a, readout).items():
            out.setdefault(name, {})[readout] = {"point": round(ctl.effect.point, 2),
                                                 "interval": [round(v, 2) for v in ctl.effect.interval],
                                                 "passed": bool(ctl.passed)}  # fmt: skip
    write_atomic(root / "pilot.json", json.dumps({"seed": seed, "arms": out}, indent=1))
    return out


def table(seed: int, controls: dict, margin: float) -> str:
    """The pilot's controls as a markdown table."""
    readouts = list(next(iter(controls.values())))
    lines = [f"Image control of seed {seed} (perception, real minus blank image, chance-normalised "
             f"points; passes at {margin:g} with its interval above zero)", "",
             "| arm | " + " | ".join(readouts) + " |", "|---|" + "---|" * len(readouts)]  # fmt: skip
    for name, by in controls.items():
        cells = [f"{c['point']:+.1f} [{c['interval'][0]:+.1f}, {c['interval'][1]:+.1f}] "
                 + ("pass" if c["passed"] else "FAIL") for c in by.values()]  # fmt: skip
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _flags():
    from absl import flags
    from ml_collections import config_flags

    from fgjax.study import DEFAULT_CONFIG

    config_flags.DEFINE_config_file("config", DEFAULT_CONFIG, "Study config file.",
                                    lock_config=False)  # fmt: skip
    flags.DEFINE_string("workdir", None, "Where the pilot's runs go.", required=True)
    flags.DEFINE_string("study", None, "A study workdir whose stage 0 is finished.", required=True)
    flags.DEFINE_integer("seed", None, "The pilot's seed (not a study seed).", required=True)
    flags.DEFINE_string("arms", None, "Comma-separated arm names (fgjax.study.stages.arms()).",
                        required=True)  # fmt: skip
    flags.DEFINE_integer("workers", None, "Worker processes (default: one per usable core).")
    return flags.FLAGS


def main(argv) -> None:
    from absl import app

    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments {argv[1:]}")
    f = FLAGS
    config = f.config
    if f.workers is not None:
        config.workers = f.workers
    controls = run(config, f.workdir, f.study, f.seed, [n for n in f.arms.split(",") if n])
    print(table(f.seed, controls, report.settings(config.get("analysis"))["control_margin"]))
    print(f"written: {Path(f.workdir) / 'pilot.json'}")


if __name__ == "__main__":  # not in the spawned workers, which import this module by name
    from absl import app

    FLAGS = _flags()
    app.run(main)
