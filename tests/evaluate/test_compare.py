"""The comparison job: two VLMs of different decoder families and a contrastive zero-shot
reference in one table, each cell the model's own evaluation result with its Wilson interval;
a rerun resumes instead of recomputing."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from flax import nnx

from fgjax import models, native
from fgjax.data.tokenizer_train import tiny_tokenizer
from fgjax.evaluate import compare, datasets, loading, negatives
from fgjax.models import presets
from fgjax.models.contrastive import ContrastiveConfig, TextTowerConfig
from fgjax.rundir import PARAMS_EXPORT
from tests.evaluate import planted

PROTOCOLS = {"likelihood": {"alphas": [], "no_image_prior": False}}


def save_run(directory, cfg, seed):
    params = nnx.to_pure_dict(nnx.state(models.build(cfg, seed=seed), nnx.Param))
    native.save(directory / PARAMS_EXPORT, cfg, params)
    return f"run:{directory}"


@pytest.fixture(scope="module")
def compared(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("compare")
    tok = planted.tokenizer()
    tok.save(str(tmp / "tokenizer"))
    llama = planted.model_config(tok)
    gemma3 = presets.vlm(
        "tiny_clip", "tiny_gemma3", "mlp2x_gelu", image_token_id=llama.image_token_id,
        encoder_overrides={"image_size": planted.IMAGE_SIZE},
        decoder_overrides={"vocab_size": tok.vocab_size},
    )  # fmt: skip
    sources = [save_run(tmp / "llama_run", llama, 2), save_run(tmp / "gemma3_run", gemma3, 3)]
    text_tok = tiny_tokenizer("bpe", vocab_size=300)
    text_tok.save(str(tmp / "text_tokenizer"))
    clip = ContrastiveConfig(
        image=presets.encoder("tiny_siglip", image_size=16),
        text=TextTowerConfig(vocab_size=text_tok.vocab_size, width=32, depth=1, num_heads=2,
                             mlp_dim=64),
        embed_dim=16,
    )  # fmt: skip
    reference = save_run(tmp / "clip_run", clip, 4)
    (tmp / "data").mkdir()
    test = planted.write_split(tmp / "data", "test", planted.dataset(13, seed=1))
    config = compare.build(
        f"models={'+'.join(sources)},templates=vicuna_v1+vicuna_v1,references={reference},"
        f"reference_tokenizers={tmp / 'text_tokenizer'},tokenizer={tmp / 'tokenizer'},"
        "system=none,batch_size=4",
        datasets=(), protocols=PROTOCOLS,
    )  # fmt: skip
    spec = {
        "name": "planted",
        "source": "jsonl",
        "path": test,
        "class_names": list(planted.CLASSES),
    }
    config.eval.datasets = [spec]
    out = tmp / "out"
    compare.run(config, str(out))
    return config, out, spec


def test_table_holds_every_model_and_reference_with_their_own_results(compared):
    config, out, spec = compared
    rows = list(csv.DictReader((out / "comparison.csv").open()))
    assert {r["model"] for r in rows} == {"llama_run", "gemma3_run", "clip_run"}
    for name in ("llama_run", "gemma3_run"):
        own = json.loads((out / "models" / name / "planted" / "likelihood" / "metrics.json")
                         .read_text())  # fmt: skip
        (row,) = [r for r in rows if r["model"] == name and r["result"] == "likelihood"]
        assert float(row["value"]) == own["metrics"]["accuracy"] and int(row["n"]) == 13
        assert float(row["low"]) <= float(row["value"]) <= float(row["high"])
    # the two VLMs are two models, not one evaluated twice
    scores = [
        [json.loads(line)["scores"] for line in
         (out / "models" / n / "planted" / "likelihood" / "predictions.jsonl").open()]
        for n in ("llama_run", "gemma3_run")
    ]  # fmt: skip
    assert scores[0] != scores[1]
    # the reference row: argmax of the contrastive model's image-prompt cosines
    (reference,) = config.references
    loaded = loading.load_contrastive(reference["model"], tokenizer=reference["tokenizer"])
    dataset = datasets.from_spec(spec)
    miner = negatives.ContrastiveMiner(loaded.model, loaded.tokenizer, batch_size=4,
                                       progress=False)  # fmt: skip
    expected = float(np.mean(np.argmax(miner.scores(dataset), 1) == dataset.labels()))
    (row,) = [r for r in rows if r["model"] == "clip_run"]
    assert row["result"] == "zero_shot" and float(row["value"]) == pytest.approx(expected)
    table = (out / "comparison.md").read_text()
    assert table.splitlines()[0] == "| model | planted / likelihood | planted / zero_shot |"
    assert table.splitlines()[-3].startswith("| clip_run |")  # references last


def test_rerun_resumes_without_recomputing(compared):
    config, out, _ = compared
    predictions = out / "models" / "gemma3_run" / "planted" / "likelihood" / "predictions.jsonl"
    zero_shot = out / "references" / "clip_run" / "planted" / "zero_shot" / "metrics.json"
    before = predictions.stat().st_mtime_ns, zero_shot.stat().st_mtime_ns
    compare.run(config, str(out))
    assert (predictions.stat().st_mtime_ns, zero_shot.stat().st_mtime_ns) == before


def test_wilson_interval_and_argument_errors():
    lo, hi = compare.wilson(0.5, 100)
    assert lo == pytest.approx(0.4038, abs=1e-4) and hi == pytest.approx(0.5962, abs=1e-4)
    assert compare.wilson(1.0, 20)[1] == 1.0 and compare.wilson(0.0, 20)[0] == 0.0
    with pytest.raises(ValueError, match="give the models"):
        compare.build("", datasets=(), protocols=PROTOCOLS)
    with pytest.raises(ValueError, match="templates lists 1 values for 2"):
        compare.build("models=hf:/a+hf:/b,templates=chatml", datasets=(), protocols=PROTOCOLS)
    with pytest.raises(ValueError, match="share a directory name"):
        compare.build("models=hf:/x/m+run:/y/m", datasets=(), protocols=PROTOCOLS)


def test_config_file_builds_a_valid_compare_config():
    module = {}
    exec((Path(__file__).parents[2] / "configs" / "eval" / "compare.py").read_text(), module)
    config = module["get_config"](
        "models=hf:/m/llava-1.5-7b-hf+run:/r/qwen3@500,templates=vicuna_v1+auto,max_examples=50"
    )
    assert config.job == "compare" and [m["name"] for m in config.models] == [
        "llava-1.5-7b-hf", "qwen3"
    ]  # fmt: skip
    assert [m["template"] for m in config.models] == ["vicuna_v1", None]
    assert all(spec["max_examples"] == 50 for spec in config.eval.datasets)
    compare.schema.resolve(config.eval)
