"""The study's run plan: which data each stage trains on, what is shared, what every arm asks."""

import json
import re
from pathlib import Path

import pytest

from configs.study import mini
from fgjax.study import stages
from fgjax.train.inputs import make_source

ROOT = Path("/nonexistent/study")


def plan(arg="steps_scale=0.02", **fields):
    study = mini.get_config(arg)
    study.train_size = 300
    for key, value in fields.items():
        setattr(study, key, value)
    return study, stages.plan(study, stages.Paths(ROOT, ROOT / "tokenizer", 128, 3))


def test_components_are_trained_once_and_every_seed_runs_every_arm():
    study, units = plan("steps_scale=0.02,seeds=2,first_seed=100")
    stage0 = [u for u in units if u.stage == "stage 0"]
    assert all(u.workdir.is_relative_to(ROOT / "components") for u in stage0)
    assert len(stage0) == 7  # 2 LLMs, the filter and its selection, 2 encoders, the ceilings
    for seed in (100, 101):
        mine = [u for u in units if u.seed == seed]
        assert {u.arm.name for u in mine if u.kind == "eval"} == {a.name for a in stages.arms()}
        assert len([u for u in mine if u.stage == "stage 1"]) == 8  # no stage 1 for noalign
        assert all(u.workdir.is_relative_to(ROOT / f"seed{seed}") for u in mine)
        assert all(u.config.seed == seed for u in mine if u.kind == "train")
    assert {u.config.seed for u in stage0 if u.kind == "train"} == {study.component_seed}


def test_each_llm_level_is_its_own_run_and_the_upgrade_reads_more_text_for_longer():
    study, units = plan()
    base, upgraded = (next(u for u in units if u.workdir.name == f"llm-{lvl}") for lvl in ("base", "upgraded"))
    assert base.config.num_steps < upgraded.config.num_steps
    assert not hasattr(base.config, "export_steps") or not base.config.get("export_steps")
    assert len(make_source(base.config.data.sources[0])) < len(make_source(upgraded.config.data.sources[0]))


def test_the_encoders_share_architecture_and_budget_and_differ_in_their_data(tmp_path):
    study, units = plan()
    enc = {u.workdir.name: u for u in units if u.workdir.name.startswith("encoder-")}
    base, upgraded = enc["encoder-base"].config, enc["encoder-upgraded"].config
    assert base.model == upgraded.model and base.num_steps == upgraded.num_steps
    assert base.batch_size == upgraded.batch_size
    assert "keep" not in base.data.sources[0]
    assert upgraded.data.sources[0]["keep"] == str(ROOT / "components" / "kept.json")
    # the filter is trained on curated pairs of another split, never on the pool
    curated = next(u for u in units if u.workdir.name == "filter").config.data.sources[0]
    assert curated["kind"] == "curated" and curated["split"] == "validation"


def test_alignment_instruction_and_evaluation_of_each_arm():
    study, units = plan()
    by_name = {u.name: u for u in units}
    arm = next(a for a in stages.arms() if a.pretrain == "frozen")
    assert by_name[f"seed 0: align {arm.name}"].config.stage == "align"
    noalign = by_name["seed 0: instruct noalign"].config
    assert set(noalign.init) == {"encoder", "decoder"}  # straight from the components
    classify = by_name["seed 0: instruct classify"].config
    assert classify.init.vlm.endswith("stage1/enc-upgraded_llm-upgraded_pretrain-trained")
    assert [s["kind"] for s in classify.data.sources] == ["instruct", "classify"]
    evals = [u for u in units if u.kind == "eval"]
    for unit in evals:  # one miner, one test set, one options folder for every arm and seed
        assert unit.config.negatives.miner == "taxonomy"
        assert unit.config.options_dir == str(ROOT / "options")
        assert unit.config.datasets == evals[0].config.datasets
        blank = unit.config.protocols.general_qa.sources[1]
        assert blank["blank"] and blank["benchmark"]


def test_an_unknown_analysis_field_fails_before_anything_runs(tmp_path):
    from fgjax.study import report

    study = mini.get_config("steps_scale=0.02")
    study.analysis.control_margn = 5.0
    with pytest.raises(ValueError, match="control_margn"):
        report.settings(study.analysis)
    assert json.loads(study.to_json_best_effort())["analysis"]["readout"] == "cloze"


def test_every_training_record_fits_its_stage_loss_tokens_per_row(tmp_path):
    """The LM head runs at `loss_tokens_per_row` positions of a row: a longer answer anywhere in
    the world's records would stop the study minutes in, so all of them are measured here."""
    from fgjax.study import run
    from fgjax.train import inputs as train_inputs
    from fgjax.train import tasks

    study = mini.get_config()
    tok = run.make_tokenizer(study, tmp_path / "tokenizer.json")
    paths = stages.Paths(tmp_path, tmp_path / "tokenizer.json", 2048, tok.token_to_id("<image>"))
    by_name = {u.name: u for u in stages.seed_plan(study, paths, 0)}
    trained = stages.arms()[0].name
    for name in (f"seed 0: align {trained}", "seed 0: instruct classify"):
        config = by_name[name].config
        transform = train_inputs.make_transform(config, tasks.get("vlm").model_config(config), tok)
        for spec in config.data.sources:
            source = train_inputs.make_source(dict(spec))
            encode = transform.encoder.encode
            most = max(
                encode(source[i]["conversations"], has_image=True).loss_mask.sum()
                for i in range(len(source))
            )
            cap = config.loss_tokens_per_row
            print(f"{name}, {spec['kind']}: at most {most} loss tokens in a row, cap {cap}")
            assert len(source) == study.train_size and 0 < most <= cap


def test_each_unit_needs_exactly_the_units_whose_outputs_it_reads():
    """The workers start a unit once its `needs` are done: each must name the runs its config
    reads, and come later in the plan (the order units start in)."""
    study, units = plan("steps_scale=0.02,seeds=2")
    order = {u.name: i for i, u in enumerate(units)}
    trained = {u.name: u.workdir for u in units if u.kind == "train"}  # what "run:" names
    for u in units:
        assert all(order[n] < order[u.name] for n in u.needs), u.name
        # every run:<dir> the unit's config reads is the workdir of a unit it needs
        text = u.config.to_json_best_effort()
        read = {n for n, w in trained.items() if re.search(f'"run:{re.escape(str(w))}[#"]', text)}
        if u.kind == "train" and "keep" in u.config.data.sources[0]:
            read.add(stages.FILTER)  # the pairs the filter kept
        assert read <= set(u.needs), (u.name, read - set(u.needs))
    by_name = {u.name: u for u in units}
    assert by_name["stage 0: encoder (upgraded)"].needs == (stages.FILTER,)  # its kept pairs
    assert by_name["stage 0: encoder (base)"].needs == ()
    assert set(by_name["stage 0: probe ceilings"].needs) == {
        "stage 0: encoder (base)", "stage 0: encoder (upgraded)",
    }  # fmt: skip
    assert by_name["seed 1: instruct classify"].needs == (
        "seed 1: align enc-upgraded_llm-upgraded_pretrain-trained",
    )  # fmt: skip
    assert by_name["seed 1: evaluate noalign"].needs == ("seed 1: instruct noalign",)
