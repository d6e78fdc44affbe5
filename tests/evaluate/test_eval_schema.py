"""Evaluation config fields are declared once (fgjax/evaluate/schema.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from fgjax.evaluate import runner, schema

ROOT = Path(__file__).parents[2]


def config_file(name: str, arg: str = "model=hf:/some/llava,template=vicuna_v1"):
    module = {}
    exec((ROOT / "configs" / "eval" / f"{name}.py").read_text(), module)
    return module["get_config"](arg)


@pytest.mark.parametrize("name", ["fine_grained", "multiple_choice_2026", "likelihood_2024",
                                  "specimens"])  # fmt: skip
def test_the_shipped_eval_configs_resolve_and_keep_their_values(name):
    config = config_file(name)
    before = config.to_json()
    resolved = schema.resolve(config)
    assert config.to_json() == before
    assert resolved.model == "hf:/some/llava" and resolved.batch_size == config.batch_size
    assert resolved.overwrite is False


def test_an_unknown_key_fails_before_any_model_is_loaded(tmp_path):
    config = config_file("specimens")
    with config.unlocked():
        config.batch_sise = 4
    with pytest.raises(ValueError, match="'batch_sise' \\(did you mean 'batch_size'\\?\\)"):
        runner.evaluate(config, str(tmp_path))  # hf:/some/llava does not exist: never read
