"""The runner across processes: two jax.distributed processes (2 CPU devices each) over a
dataset whose size is not a multiple of the global batch evaluate every example exactly once
and agree with one process; and the config files of configs/eval. (The runner's outputs for
every protocol are checked by test_planted.py, which runs through it.)"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
from flax import nnx

from fgjax import models, native
from fgjax.evaluate import configs, protocols, runner
from fgjax.launch import local
from fgjax.rundir import PARAMS_EXPORT
from tests.evaluate import planted

ROOT = Path(__file__).parents[2]
NUM_EXAMPLES = 13  # global batch 8 (4 devices x 2): two batches, three padding rows


@pytest.mark.slow
def test_two_processes_evaluate_each_example_once_like_one_process(tmp_path):
    tok = planted.tokenizer()
    tok.save(str(tmp_path / "tokenizer"))
    cfg = planted.model_config(tok)
    params = nnx.to_pure_dict(nnx.state(models.build(cfg, seed=2), nnx.Param))
    native.save(tmp_path / "run" / PARAMS_EXPORT, cfg, params)
    (tmp_path / "data").mkdir()
    test = planted.write_split(tmp_path / "data", "test", planted.dataset(NUM_EXAMPLES, seed=1))
    config = configs.build(
        f"model=run:{tmp_path / 'run'},tokenizer={tmp_path / 'tokenizer'},template=vicuna_v1,"
        "system=none,batch_size=8",
        datasets=(),
        protocols={"likelihood": {"alphas": [], "no_image_prior": False}},
    )
    config.datasets = [{"name": "planted", "source": "jsonl", "path": test,
                        "class_names": list(planted.CLASSES)}]  # fmt: skip
    config_path = tmp_path / "config.json"
    config_path.write_text(config.to_json())
    status = local.run(
        [sys.executable, "-m", "fgjax.main",
         f"--config={ROOT / 'configs' / 'json_file.py'}:{config_path}", f"--workdir={tmp_path / 'two'}"],
        2, devices=2, timeout=600,
    )  # fmt: skip
    assert status == 0
    runner.evaluate(config, str(tmp_path / "one"))
    one, two = (
        [json.loads(x) for x in (tmp_path / d / "planted" / "likelihood" / "predictions.jsonl").read_text().splitlines()]
        for d in ("one", "two")
    )  # fmt: skip
    assert [x["id"] for x in two] == [f"test-{i}" for i in range(NUM_EXAMPLES)]
    assert [x["prediction"] for x in two] == [x["prediction"] for x in one]
    for a, b in zip(one, two):
        np.testing.assert_allclose(
            b["scores"]["label"]["sum"], a["scores"]["label"]["sum"], atol=1e-4
        )


@pytest.mark.parametrize(
    "name", ["fine_grained", "multiple_choice_2026", "likelihood_2024", "specimens"]
)
def test_config_files_build_valid_configs(name):
    module = {}
    exec((ROOT / "configs" / "eval" / f"{name}.py").read_text(), module)
    config = module["get_config"]("model=hf:/some/llava,template=vicuna_v1,max_examples=50")
    assert config.job == "eval" and config.model == "hf:/some/llava"
    assert all(spec["max_examples"] == 50 for spec in config.datasets)
    for protocol, options in config.protocols.items():
        protocols.options(protocol, options)  # every option is a field of its protocol
    with pytest.raises(ValueError, match="give the model"):
        module["get_config"]("")
    with pytest.raises(ValueError, match="unknown config argument"):
        module["get_config"]("model=hf:x,modle=y")
