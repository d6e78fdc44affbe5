"""Evaluation prepares images as the run was trained (and exported): a letterboxed run is
evaluated letterboxed unless the config says otherwise, which is warned about."""

from __future__ import annotations

import json
import logging

import ml_collections
import numpy as np
from PIL import Image

from fgjax.data import images
from fgjax.data.tokenizer import tokenizer_for
from fgjax.evaluate import runner
from fgjax.rundir import Run
from fgjax.train import inputs, trainer
from tests.train import helpers


def test_a_letterboxed_run_is_evaluated_letterboxed(tmp_path, caplog):
    data = helpers.write_dataset(tmp_path / "data", num_rows=8)
    config = helpers.tiny_config(data, stage="full", steps=2, batch=4)
    config.data.preprocess = "letterbox"
    trainer.train(config, str(tmp_path / "run"))

    evaluation = ml_collections.ConfigDict()
    evaluation.job, evaluation.model, evaluation.batch_size = "eval", f"run:{tmp_path / 'run'}", 4
    evaluation.datasets = [{"name": "specimens", "source": "specimens", "size": 4}]
    evaluation.protocols = {"likelihood": {"alphas": []}}
    with caplog.at_level(logging.INFO):
        runner.evaluate(evaluation, str(tmp_path / "eval"))
    assert json.loads((tmp_path / "eval" / "config.json").read_text())["preprocess"] == "letterbox"
    assert "image preprocessing: 'letterbox', the run's" in caplog.text
    # so a non-square photo gets exactly the pixels the training transform gave it
    photo = Image.fromarray((np.random.default_rng(0).random((45, 70, 3)) * 255).astype(np.uint8))
    run = Run.open(tmp_path / "run")
    recorded = ml_collections.ConfigDict(run.config)
    transform = inputs.make_transform(
        recorded, run.model_cfg, tokenizer_for(recorded.data.tokenizer, image_token=True)
    )
    evaluated = images.preprocess(
        photo, images.preprocess_config_for(run.model_cfg.encoder, mode="letterbox")
    )
    np.testing.assert_array_equal(transform._image(photo), evaluated)

    with caplog.at_level(logging.WARNING):
        evaluation.preprocess = None  # forced: the tower's default, warned about
        runner.evaluate(evaluation, str(tmp_path / "eval_forced"))
    assert "differs from the run's 'letterbox'" in caplog.text
