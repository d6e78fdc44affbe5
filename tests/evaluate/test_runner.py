"""The config-driven runner: a run directory evaluated from a config on JSONL data under every
protocol, its output files, skip-on-rerun; the config files; and two jax.distributed processes
(2 CPU devices each) over a dataset whose size is not a multiple of the global batch, which
must evaluate every example exactly once and agree with one process."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import ml_collections
import numpy as np
import pytest
from flax import nnx
from PIL import Image

from fgjax import models, native
from fgjax.evaluate import configs, runner
from fgjax.launch import local
from fgjax.train.init import PARAMS_EXPORT
from tests.evaluate import planted

ROOT = Path(__file__).parents[2]
NUM_EXAMPLES = 13  # global batch 8 (4 devices x 2): two batches, three padding rows


def write_split(directory: Path, name: str, size: int, seed: int) -> Path:
    labels = np.arange(size) % len(planted.CLASSES)
    images = planted.make_images(labels, np.zeros(size, int), seed)
    lines = []
    for i, (image, label) in enumerate(zip(images, labels)):
        Image.fromarray(image).save(directory / f"{name}{i}.png")
        lines.append(
            {"image": f"{name}{i}.png", "label": planted.CLASSES[label], "id": f"{name}-{i}"}
        )
    path = directory / f"{name}.jsonl"
    path.write_text("\n".join(json.dumps(line) for line in lines))
    return path


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A finished-run layout: params_export, config.json naming tokenizer and template; and a
    JSONL dataset (train and test) with general questions."""
    root = tmp_path_factory.mktemp("eval_run")
    tok = planted.tokenizer()
    tok.save(str(root / "tokenizer"))
    cfg = planted.model_config(tok)
    model = models.build(cfg, seed=2)
    native.save(root / "run" / PARAMS_EXPORT, cfg, nnx.to_pure_dict(nnx.state(model, nnx.Param)))
    data = {"tokenizer": str(root / "tokenizer"), "template": "vicuna_v1"}
    (root / "run" / "config.json").write_text(json.dumps({"data": data}))
    (root / "data").mkdir()
    test = write_split(root / "data", "test", NUM_EXAMPLES, seed=1)
    train = write_split(root / "data", "train", 16, seed=2)
    questions = [
        {"image": "test0.png", "question": "What is this?", "answers": ["rose"]},
        {"image": "test1.png", "question": "Which?", "options": ["rose", "tulip"], "answer": 1},
    ]
    (root / "data" / "qa.jsonl").write_text("\n".join(json.dumps(q) for q in questions))
    return root, test, train


def eval_config(root: Path, test: Path, train: Path, protocols: dict) -> ml_collections.ConfigDict:
    c = configs.build(
        f"model=run:{root / 'run'},system=none,batch_size=8",
        datasets=("planted",),
        protocols=protocols,
        dataset_fields={"source": "jsonl", "path": str(test), "train_path": str(train),
                        "class_names": list(planted.CLASSES)},
    )  # fmt: skip
    c.options_dir = str(root / "options")
    c.prompt_bucket = 64
    return c


# shapes as in test_planted.py (batch 8, prompts padded to 64, 8 new tokens), so that the
# persistent compilation cache serves the programs that module compiled, or the other way round
SMALL = {  # what the two-process run repeats
    "likelihood": {"alphas": [1.5]},
    "multiple_choice": {"answer_modes": ["letters"]},
}
RESULTS = {
    "likelihood", "multiple_choice_letters", "multiple_choice_generate", "open_world",
    "closed_world", "probe_vision_patch_mean", "probe_vlm_mean",
}  # fmt: skip


@pytest.fixture(scope="module")
def single_run(run_dir, tmp_path_factory):
    """One process, every protocol: (config, workdir, summary)."""
    root, test, train = run_dir
    qa = {"source": "jsonl", "name": "mine", "path": str(root / "data" / "qa.jsonl")}
    protocols = {
        "likelihood": {"alphas": [1.5]},
        "multiple_choice": {"answer_modes": ["letters", "generate"], "max_new_tokens": 8},
        "open_world": {"max_new_tokens": 8},
        "closed_world": {"max_new_tokens": 8},
        "probe": {"features": ["vision_patch_mean", "vlm_mean"], "steps": 20},
        "general_qa": {"sources": [qa], "max_new_tokens": 8},
    }
    config = eval_config(root, test, train, protocols)
    workdir = tmp_path_factory.mktemp("single")
    return config, workdir, runner.evaluate(config, str(workdir))


def read_predictions(workdir: Path, result: str) -> list[dict]:
    text = (workdir / "planted" / result / "predictions.jsonl").read_text()
    return [json.loads(line) for line in text.splitlines()]


def test_runner_writes_every_output_and_skips_finished_work(run_dir, single_run):
    root = run_dir[0]
    config, workdir, summary = single_run
    assert set(summary["planted"]) == RESULTS
    assert set(summary["general_qa/mine"]) == {"short_answer", "choice_letters", "choice_generate"}
    for result in RESULTS:
        folder = workdir / "planted" / result
        metrics = json.loads((folder / "metrics.json").read_text())
        assert metrics["num_examples"] == NUM_EXAMPLES and 0 <= metrics["metrics"]["accuracy"] <= 1
        ids = sorted(x["id"] for x in read_predictions(workdir, result))
        assert ids == sorted(f"test-{i}" for i in range(NUM_EXAMPLES))
        per_class = json.loads((folder / "per_class.json").read_text())
        assert [c["class"] for c in per_class] == list(planted.CLASSES)
        assert sum(c["count"] for c in per_class) == NUM_EXAMPLES
        assert isinstance(json.loads((folder / "confusion.json").read_text()), list)
    info = json.loads(
        (workdir / "planted" / "multiple_choice_letters" / "metrics.json").read_text()
    )
    assert info["info"]["negatives"] == "text:char-ngram-tfidf"
    assert list((root / "options").glob("planted-test-13-k5-seed0-text.json"))
    assert list(workdir.glob("events.out.tfevents.*"))  # TensorBoard scalars
    # a rerun skips every finished protocol and keeps the results
    stamp = (workdir / "planted" / "likelihood" / "metrics.json").stat().st_mtime_ns
    assert runner.evaluate(config, str(workdir)) == summary
    assert (workdir / "planted" / "likelihood" / "metrics.json").stat().st_mtime_ns == stamp


def test_two_processes_evaluate_each_example_once_like_one_process(run_dir, single_run, tmp_path):
    root, test, train = run_dir
    config = eval_config(root, test, train, SMALL)
    config_path = tmp_path / "config.json"
    config_path.write_text(config.to_json())
    status = local.run(
        [sys.executable, "-m", "fgjax.main",
         f"--config={ROOT / 'configs' / 'json_file.py'}:{config_path}", f"--workdir={tmp_path}"],
        2, devices=2, timeout=600,
    )  # fmt: skip
    assert status == 0
    single = single_run[1]
    for result in ("likelihood", "multiple_choice_letters"):
        one, two = read_predictions(single, result), read_predictions(tmp_path, result)
        assert [x["id"] for x in two] == [f"test-{i}" for i in range(NUM_EXAMPLES)]
        assert [x["prediction"] for x in two] == [x["prediction"] for x in one]
    one, two = read_predictions(single, "likelihood"), read_predictions(tmp_path, "likelihood")
    for a, b in zip(one, two):
        want = a["scores"]["label"]["sum"]
        np.testing.assert_allclose(b["scores"]["label"]["sum"], want, atol=1e-4)


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
        runner.protocol_config(protocol, options)  # every option is a field of its protocol
    with pytest.raises(ValueError, match="give the model"):
        module["get_config"]("")
    with pytest.raises(ValueError, match="unknown config argument"):
        module["get_config"]("model=hf:x,modle=y")
