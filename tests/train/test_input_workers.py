"""config.data.worker_processes on the real training inputs: LLaVA rows decoded, preprocessed
and tokenized in grain worker processes give the in-process batches, and their skips reach the
training process's data report and skip guard."""

import json
import shutil
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fgjax.data import pipeline
from fgjax.data.skips import UnusableDataError
from fgjax.data.tokenizer import tokenizer_for
from fgjax.train import checkpoint, schema, tasks
from fgjax.train import inputs as train_inputs
from tests.train import helpers


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """The tiny LLaVA dataset with 4 corrupt images and 5 conversations too long for its
    max_length (160 tokens), every row with an image."""
    root = tmp_path_factory.mktemp("data")
    info = helpers.write_dataset(root / "source")
    table = [row for row in json.loads(Path(info["json"]).read_text()) if "image" in row]
    for row in table[:4]:
        (Path(info["images"]) / row["image"]).write_bytes(b"not an image")
    for row in table[4:9]:
        row["conversations"][0]["value"] = "<image>\n" + "Describe it in detail. " * 60
    Path(info["json"]).write_text(json.dumps(table))
    return {**info, "rows": len(table)}


def inputs(data, workers, json_path=None):
    config = helpers.tiny_config({**data, "json": json_path or data["json"]}, batch=4)
    config.data.worker_processes = workers
    tokenizer = tokenizer_for(config.data.tokenizer, image_token=True)
    config.model.image_token_id = tokenizer.token_to_id("<image>")
    config = schema.resolve(config)
    model_cfg = tasks.get("vlm").model_config(config)
    ds, transform, sources = train_inputs.train_dataset(
        config, model_cfg, tokenizer, pipeline.HostShard()
    )
    return config, ds, transform, sources


def test_workers_give_the_in_process_batches_and_data_report(data):
    """Three epochs (the bad rows read three times each): the batches of 2 workers equal the
    in-process ones array for array, and the data report counts 5 unencodable rows and 4
    corrupt images, as without workers."""
    steps = 3 * data["rows"] // 4
    reports, batches = [], []
    for workers in (0, 2):
        config, ds, transform, sources = inputs(data, workers)
        it = iter(ds)
        batches.append([next(it) for _ in range(steps)])
        it.close()
        reports.append(train_inputs.data_report(transform, config.data.sources, sources))
    for ours, reference in zip(batches[1], batches[0]):
        assert ours.keys() == reference.keys()
        for key in reference:
            np.testing.assert_array_equal(ours[key], reference[key])
    assert reports[1] == reports[0]
    assert reports[1]["skipped_samples"] == {"cannot be encoded": 5}
    assert reports[1]["llava_json"]["corrupt image"] == 4


def test_every_image_corrupt_stops_in_the_training_process(data, tmp_path):
    """The guard's run of skips is counted in stream order in the training process, whose
    data report names the reason."""
    bad = tmp_path / "bad"
    shutil.copytree(Path(data["images"]), bad)
    table = json.loads(Path(data["json"]).read_text())
    for row in table:
        (bad / row["image"]).write_bytes(b"not an image")
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(table))
    _, ds, _, _ = inputs({**data, "images": str(bad)}, 2, str(path))
    it = iter(ds)
    with pytest.raises(UnusableDataError, match="50 training records in a row.*corrupt image"):
        next(it)
    it.close()


def test_a_checkpoint_resumes_with_another_worker_count(tmp_path):
    """The data iterator of 2 workers saved in a training checkpoint restores into a pipeline
    of 1 worker and one of threads (its position checksum verified), which continue with the
    batches the saving run would have seen."""

    def make(workers):
        return pipeline.training_dataset(
            pipeline.IndexSource(30),
            lambda i: None if i % 7 == 3 else {"id": np.int32(i)},
            global_batch_size=4,
            seed=5,
            worker_processes=workers,
        )

    state = {"x": jnp.zeros((2,))}
    abstract = jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), state
    )
    ckpt = checkpoint.Checkpointer(tmp_path / "checkpoints", every_steps=1, asynchronous=False)
    saving = iter(make(2))
    for _ in range(10):
        next(saving)
    ckpt.save(10, state, saving, force=True)
    expected = [next(saving)["id"].tolist() for _ in range(4)]
    saving.close()
    for workers in (1, 0):
        resumed = iter(make(workers))
        ckpt.restore(10, abstract, resumed)
        assert [next(resumed)["id"].tolist() for _ in range(4)] == expected, workers
        resumed.close()
    ckpt.close()
