"""Pilots: which runs a pilot selects, the seeds it refuses, and the image control it reports
from its arms' answers (no training here: the answers are written by hand)."""

import json

import numpy as np
import pytest

from configs.study import mini
from fgjax.data.specimens import benchmark
from fgjax.evaluate import datasets
from fgjax.study import pilot, report, stages
from fgjax.study import run as study_run


def setup(tmp_path, arg="steps_scale=0.02,eval_size=12"):
    config = mini.get_config(arg)
    paths = stages.Paths(tmp_path, tmp_path / "tokenizer", 128, 3)
    return config, paths


def test_a_pilot_runs_the_named_arms_with_the_alignment_they_start_from(tmp_path):
    config, paths = setup(tmp_path)
    units = pilot.select(config, paths, 50, ["classify", "noalign"])
    seeded = [u for u in units if u.seed is not None]
    assert {u.seed for u in seeded} == {50}
    assert sorted(u.name for u in seeded) == sorted([
        "seed 50: align enc-upgraded_llm-upgraded_pretrain-trained",  # classify's twin
        "seed 50: instruct classify", "seed 50: evaluate classify",
        "seed 50: instruct noalign", "seed 50: evaluate noalign",
    ])  # fmt: skip
    names = {u.name for u in units}
    assert all(set(u.needs) <= names for u in units)  # every run it waits on is in the plan


def test_a_study_seed_or_an_unknown_arm_is_refused(tmp_path):
    config, paths = setup(tmp_path)  # study seeds 0, 1, 2
    with pytest.raises(ValueError, match="one of the study's seeds"):
        pilot.select(config, paths, 1, ["noalign"])
    with pytest.raises(ValueError, match="unknown arm.*'nope'"):
        pilot.select(config, paths, 50, ["nope"])


def test_a_study_without_stage_0_is_named_with_the_fix(tmp_path):
    (tmp_path / "study" / "tokenizer").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match="no components, options: run the study"):
        pilot.link_study(tmp_path / "study", tmp_path / "pilot")


def test_a_workdir_keeps_to_the_config_of_its_first_pilot(tmp_path):
    config, _ = setup(tmp_path)
    pilot.claim(config, tmp_path / "pilot")
    pilot.claim(config, tmp_path / "pilot")  # the same pilot, resumed
    config.finetune.steps = 7
    with pytest.raises(ValueError, match="another config.*new --workdir"):
        pilot.claim(config, tmp_path / "pilot")


def write_answers(directory, ids, correct):
    directory.mkdir(parents=True, exist_ok=True)
    rows = [{"id": i, "correct": bool(c), "options": ["a", "b", "c", "d"]} for i, c in zip(ids, correct)]
    (directory / "predictions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_the_control_passes_an_arm_that_sees_and_fails_one_that_is_image_blind(tmp_path):
    config, paths = setup(tmp_path)
    units = pilot.select(config, paths, 50, ["noalign", "classify"])
    ids = datasets.from_spec(stages.test_set(config)).ids()
    n = len(ids)
    perception = np.asarray([benchmark.part_of(i) == "perception" for i in range(n)])
    assert perception.sum() >= 3
    sees = {"benchmark": perception | (np.arange(n) % 2 == 0), "blank": ~perception}
    blind = {"benchmark": np.arange(n) % 2 == 0, "blank": np.arange(n) % 2 == 0}
    for arm, answers in (("noalign", sees), ("classify", blind)):
        root = paths.seed(50) / "eval" / arm
        for mode in stages.READOUTS.values():
            write_answers(root / f"specimens/multiple_choice_{mode}", ids, np.ones(n))
            for source, correct in answers.items():
                write_answers(root / f"general_qa/{source}/choice_{mode}",
                              [f"{i}/general" for i in ids], correct)  # fmt: skip
    (tmp_path / "components").mkdir()
    probes = {"probe5": [1] * n, "probe100": 0.5, "lambda": 1.0}
    (tmp_path / "components" / "ceiling.json").write_text(json.dumps({"base": probes, "upgraded": probes}))

    results = study_run.collect(config, units, tmp_path, {})
    assert list(results.arms) == ["noalign", "classify"]  # the study's order, only these
    a = report.settings(config.analysis)
    controls = report.controls(results, a, a["readout"])
    # real: every perception item right; blank: every one wrong; chance 1/4 -> 100 + 33.3
    assert controls["noalign"].passed and controls["noalign"].effect.point == pytest.approx(400 / 3)
    assert not controls["classify"].passed and controls["classify"].effect.point == 0.0
    text = pilot.table(50, {"noalign": {"cloze": {"point": 133.3, "interval": [120.0, 140.0],
                                                  "passed": True}}}, 10.0)  # fmt: skip
    assert "| noalign | +133.3 [+120.0, +140.0] pass |" in text
