"""Paths: a run trained with relative paths records absolute ones, and is exported and
evaluated from another working directory, with a relative workdir."""

from __future__ import annotations

import json
import os
from pathlib import Path

import ml_collections

from fgjax.evaluate import runner
from fgjax.hf.export import export_run
from fgjax.train import trainer
from tests.train import helpers


def test_a_run_with_relative_paths_works_from_any_directory(tmp_path, monkeypatch):
    first, second = tmp_path / "first", tmp_path / "second"
    second.mkdir()
    data = helpers.write_dataset(first / "data", num_rows=16)
    monkeypatch.chdir(first)
    relative = {k: os.path.relpath(v) if isinstance(v, str) else v for k, v in data.items()}
    config = helpers.tiny_config(relative, stage="full", steps=2, batch=4)
    trainer.train(config, "runs/a")
    recorded = json.loads(Path("runs/a/config.json").read_text())
    assert recorded["data"]["tokenizer"] == data["tokenizer"]  # absolute
    assert recorded["data"]["sources"][0]["path"] == data["json"]
    assert config.data.tokenizer == relative["tokenizer"]  # the caller's config is kept

    monkeypatch.chdir(second)  # where the relative paths the config gave point nowhere
    export_run("../first/runs/a", "hf")  # a relative workdir
    assert json.loads((second / "hf" / "config.json").read_text())["architectures"]
    evaluation = ml_collections.ConfigDict()
    evaluation.job, evaluation.model, evaluation.batch_size = "eval", "run:../first/runs/a", 4
    evaluation.datasets = [{"name": "specimens", "source": "specimens", "size": 8}]
    evaluation.protocols = {"likelihood": {"alphas": []}}
    summary = runner.evaluate(evaluation, "eval")
    assert summary["specimens"]["likelihood"]["num_examples"] == 8
