"""Evaluation during training (config.eval): a tiny VLM run through fgjax.main.run that
evaluates every 2 of its 5 steps -- the held-out loss on 13 LLaVA-format rows (two batches of
8, three padding rows) and five-way multiple choice on 6 specimens images -- logs both at steps
2, 4 and 5 to metrics.jsonl and TensorBoard; its held-out loss is the loss of the exported
parameters on those rows; it trains exactly as the same run without evaluation; a resumed run
evaluates each step once; and bad evaluation configs raise before training starts."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import jax
import ml_collections
import numpy as np
import pytest
from flax import nnx
from tensorboard.backend.event_processing import event_accumulator
from tensorboard.util import tensor_util

from fgjax import main, models, native, rundir
from fgjax.data.tokenizer import tokenizer_for
from fgjax.train import inputs as train_inputs
from fgjax.train import trainer
from tests.train import helpers

HELD_OUT_ROWS = 13
STEPS, EVERY = 5, 2
EVAL_STEPS = [2, 4, 5]  # every 2 steps and the last
MC = "eval/mc/specimens/multiple_choice_letters"


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    info = helpers.write_dataset(root)
    rows = json.loads(Path(info["json"]).read_text())[:HELD_OUT_ROWS]
    info["held_out"] = str(root / "held_out.json")
    Path(info["held_out"]).write_text(json.dumps(rows))
    return info


def run_config(data, evaluate: bool = True) -> ml_collections.ConfigDict:
    config = helpers.tiny_config(data, stage="align_llm", steps=STEPS)
    config.checkpoint.keep = None
    if evaluate:
        config.eval = {
            "every_steps": EVERY,
            "held_out": [
                {"name": "llava_json", "path": data["held_out"], "image_root": data["images"]}
            ],
            "evaluators": [
                {
                    "name": "mc",
                    "datasets": [{"name": "specimens", "source": "specimens", "size": 6}],
                    "protocols": {"multiple_choice": {"k": 5, "answer_modes": ["letters"]}},
                    "batch_size": 4,
                }
            ],
        }
    return config


@pytest.fixture(scope="module")
def eval_run(data, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("eval_run")
    returned = main.run(run_config(data), str(workdir))
    return workdir, returned


def records(workdir: Path) -> list[dict]:
    return [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]


def logged(workdir: Path, key: str) -> dict[int, float]:
    """{step: value} of one key in metrics.jsonl; a step logged twice fails."""
    out = {}
    for record in records(workdir):
        if key in record:
            assert record["step"] not in out, f"{key} at step {record['step']} logged twice"
            out[record["step"]] = record[key]
    return out


def tensorboard_scalars(workdir: Path, key: str) -> dict[int, float]:
    events = event_accumulator.EventAccumulator(str(workdir), size_guidance={"tensors": 0})
    events.Reload()
    return {e.step: float(tensor_util.make_ndarray(e.tensor_proto)) for e in events.Tensors(key)}


def test_evaluations_reach_metrics_jsonl_and_tensorboard_at_their_steps(eval_run):
    workdir, returned = eval_run
    for key in ("eval/held_out_loss", "eval/held_out_tokens", f"{MC}/accuracy"):
        jsonl = logged(workdir, key)
        assert sorted(jsonl) == EVAL_STEPS, key
        board = tensorboard_scalars(workdir, key)
        assert sorted(board) == EVAL_STEPS, key
        for step in EVAL_STEPS:  # TensorBoard holds float32 values
            np.testing.assert_allclose(board[step], jsonl[step], rtol=1e-7)
    assert set(logged(workdir, f"{MC}/num_examples").values()) == {6.0}
    for step, accuracy in logged(workdir, f"{MC}/accuracy").items():
        assert accuracy * 6 == pytest.approx(round(accuracy * 6)), (step, accuracy)
    assert returned["eval/held_out_loss"] == logged(workdir, "eval/held_out_loss")[STEPS]
    losses = logged(workdir, "eval/held_out_loss")
    assert losses[5] < losses[2]  # the held-out captions are training rows: they are learnt
    assert sorted(logged(workdir, "loss")) == list(range(1, STEPS + 1))
    option_files = list((workdir / "evaluations" / "mc" / "options").glob("*.json"))
    assert len(option_files) == 1  # mined once, the same questions at every evaluation


def independent_held_out_loss(workdir: Path, data) -> tuple[float, int]:
    """(loss, loss tokens) of the exported parameters on the held-out rows, one forward of all
    13 rows and a float64 log-softmax in numpy."""
    config = ml_collections.ConfigDict(json.loads((workdir / rundir.CONFIG).read_text()))
    export = workdir / rundir.PARAMS_EXPORT
    cfg = native.read_config(export)
    graphdef, _ = nnx.split(models.abstract(cfg))
    model = nnx.merge(graphdef, native.load_params(export, cfg))
    tokenizer = tokenizer_for(config.data.tokenizer, image_token=True)
    transform = train_inputs.make_transform(config, cfg, tokenizer)
    source = train_inputs.make_source(dict(config.eval.held_out[0]))
    examples = [transform(source[i]) for i in range(len(source))]
    batch = {k: np.stack([e[k] for e in examples]) for k in examples[0]}
    logits = model(batch["tokens"], batch["images"], input_mask=batch["input_mask"]).logits
    logits = np.asarray(jax.device_get(logits), np.float64)[:, :-1]
    top = logits.max(-1, keepdims=True)
    logp = logits - top - np.log(np.exp(logits - top).sum(-1, keepdims=True))
    picked = np.take_along_axis(logp, batch["tokens"][:, 1:, None], axis=-1)[..., 0]
    mask = batch["loss_mask"][:, 1:]
    return float(-(picked * mask).sum() / mask.sum()), int(mask.sum())


def test_held_out_loss_is_the_loss_of_the_exported_parameters(eval_run, data):
    """The last evaluation ran on the final parameters, which the run exported. Float32
    forwards of batches of other compositions differ by about 1e-7 of each logit; counting the
    three padding rows would move the loss by percents."""
    workdir, _ = eval_run
    loss, tokens = independent_held_out_loss(workdir, data)
    assert logged(workdir, "eval/held_out_tokens")[STEPS] == tokens
    np.testing.assert_allclose(logged(workdir, "eval/held_out_loss")[STEPS], loss, rtol=1e-5)


def test_evaluation_does_not_change_the_training_result(eval_run, data, tmp_path):
    workdir, _ = eval_run
    plain = tmp_path / "plain"
    main.run(run_config(data, evaluate=False), str(plain))
    assert logged(plain, "loss") == logged(workdir, "loss")
    with_eval, without = helpers.exported(workdir), helpers.exported(plain)
    assert with_eval.keys() == without.keys()
    for name in with_eval:
        np.testing.assert_array_equal(with_eval[name], without[name], err_msg=name)


def test_a_resumed_run_evaluates_each_step_once(eval_run, data, tmp_path, caplog):
    """Resumed from step 4's checkpoint: the records after it are dropped, step 5 trains and
    evaluates again (to the same values: resuming is exact) and step 4 is not evaluated twice."""
    workdir, _ = eval_run
    resumed = tmp_path / "resumed"
    shutil.copytree(workdir, resumed)
    shutil.rmtree(resumed / "checkpoints" / str(STEPS))
    with caplog.at_level(logging.INFO):
        main.run(run_config(data), str(resumed))
    assert "resumed from the checkpoint at step 4" in caplog.text
    for key in ("loss", "eval/held_out_loss", f"{MC}/accuracy"):
        assert logged(resumed, key) == logged(workdir, key), key


BAD = [
    ({"evaluators": [{"name": "mc", "protocls": {}}]}, r"evaluators\[0\].*'protocls'.*'protocols'"),
    ({"evaluators": [{"name": "mc", "protocols": {"multiple_choise": {}}}]},
     r"evaluators\[0\]\.protocols.*'multiple_choise'.*'multiple_choice'"),
    ({"evaluators": [{"name": "mc", "protocols": {"multiple_choice": {"kk": 4}}}]},
     r"evaluators\[0\]\.protocols.*'kk'.*'k'"),
    ({"evaluators": [{"name": "mc", "protocols": {"multiple_choice": {"answer_modes": ["leters"]}}}]},
     r"evaluators\[0\]\.protocols\.multiple_choice\.answer_modes holds 'leters'"),
    ({"evaluators": [{"protocols": {"multiple_choice": {}}}]}, r"evaluators\[0\]\.name=None"),
    ({"evaluators": [{"name": "mc", "protocols": {"multiple_choice": {}},
                      "datasets": [{"name": "specimens", "source": "specimen"}]}]},
     r"evaluators\[0\]\.datasets\[0\].*unknown source 'specimen'"),
    ({"evaluators": [{"name": "mc", "protocols": {"multiple_choice": {}}, "model": "run:x"}]},
     r"evaluators\[0\].*'model'"),
    ({"every_steps": None}, r"config\.eval\.every_steps is None"),
    ({"every_steps": 0}, r"config\.eval\.every_steps=0 must be an integer >= 1"),
    ({"held_out": [{"name": "llava_jsn"}]}, r"config\.eval\.held_out\[0\]: unknown .*'llava_jsn'"),
    ({"held_out": [], "evaluators": []}, r"every_steps=2 but there is nothing to evaluate"),
]  # fmt: skip


@pytest.mark.parametrize("change, message", BAD)
def test_a_bad_evaluation_config_raises_before_training(data, tmp_path, change, message):
    config = run_config(data)
    config.eval.update(change)
    with pytest.raises(ValueError, match=message):
        main.run(config, str(tmp_path / "run"))
    assert not (tmp_path / "run" / "checkpoints").exists()
    assert not (tmp_path / "run" / "metrics.jsonl").exists()


def test_configured_evaluators_need_fgjax_main(data, tmp_path):
    with pytest.raises(ValueError, match="python -m fgjax.main"):
        trainer.train(run_config(data), str(tmp_path / "run"))
    assert not (tmp_path / "run" / "checkpoints").exists()
