"""Runs, data and weights in a bucket: everything below goes through a GCS emulator on
localhost (tests/gcs_emulator.py), with the clients real runs use (gcsfs through etils.epath,
TensorStore through Orbax).

- A training run whose workdir, LLaVA JSON, images and tokenizer are all gs:// is killed
  (SIGKILL) mid-run and rerun: it ends with the parameters of an uninterrupted local run, bit
  for bit; its metrics and TensorBoard events are in the bucket; it is exported to HF format in
  the bucket, the export loads back from the bucket, and it is evaluated from the bucket on a
  JSONL dataset in the bucket, with the local run's predictions.
- Two processes train into one bucket workdir and give the single-process loss curve.
- A checkpoint with a truncated object is never restored; an unfinished one is never listed.
- The local copy of a bucket directory (what safetensors memory-maps) follows every rewrite of
  an object, also one of the same size: a re-exported model never loads the old weights.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time

import jax
import ml_collections
import numpy as np
import pytest
from flax import nnx

from fgjax import hf, native, rundir, storage, trees
from fgjax.evaluate import runner
from fgjax.hf import export
from fgjax.launch import local
from fgjax.train import checkpoint
from tests import gcs_emulator
from tests.train import helpers


@pytest.fixture(scope="module")
def bucket(tmp_path_factory):
    """The emulator's bucket; local copies of its directories go to a fresh cache, never the
    user's ~/.cache/fgjax (runs started here inherit the variable)."""
    before = os.environ.get("FGJAX_CACHE")
    os.environ["FGJAX_CACHE"] = str(tmp_path_factory.mktemp("cache"))
    try:
        with gcs_emulator.start() as name:
            yield name
    finally:
        if before is None:
            os.environ.pop("FGJAX_CACHE")
        else:
            os.environ["FGJAX_CACHE"] = before


@pytest.fixture(scope="module")
def datasets(bucket, tmp_path_factory):
    """The training set written locally and uploaded unchanged: {"local": ..., "remote": ...}."""
    root = tmp_path_factory.mktemp("data")
    data = helpers.write_dataset(root)
    rows = [{"image": f"{i}.png", "label": ["even", "odd"][i % 2]} for i in range(6)]
    (root / "images" / "test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    storage.upload_tree(root, f"{bucket}/data")
    remote = {key: value.replace(str(root), f"{bucket}/data") if isinstance(value, str) else value
              for key, value in data.items()}  # fmt: skip
    return {"local": data, "remote": remote, "root": root}


def config_for(data: dict, steps: int = 6):
    config = helpers.tiny_config(data, stage="align_llm", steps=steps)
    config.checkpoint.asynchronous = True
    return config


@pytest.fixture(scope="module")
def reference(datasets, tmp_path_factory):
    """An uninterrupted local run on the local copy of the data."""
    tmp = tmp_path_factory.mktemp("reference")
    arg = helpers.config_file(tmp, config_for(datasets["local"]))
    subprocess.run(
        helpers.main_command(arg, tmp / "work"), env=helpers.env(), check=True, timeout=600
    )
    return tmp / "work"


def metrics_steps(workdir) -> list[int]:
    file = storage.path(workdir) / rundir.METRICS
    if not file.exists():
        return []
    return [json.loads(line)["step"] for line in file.read_text().splitlines() if line.strip()]


@pytest.mark.slow
def test_a_bucket_run_resumes_bit_identically_exports_and_is_evaluated(
    bucket, datasets, reference, tmp_path
):
    workdir = f"{bucket}/runs/killed"
    arg = helpers.config_file(tmp_path, config_for(datasets["remote"]))
    command = helpers.main_command(arg, workdir)
    proc = subprocess.Popen(command, env=helpers.env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)  # fmt: skip
    deadline = time.monotonic() + 300
    while max(metrics_steps(workdir), default=0) < 3 and proc.poll() is None:
        assert time.monotonic() < deadline, "step 3 was not logged to the bucket in time"
        time.sleep(0.1)
    assert proc.poll() is None, "the run ended before step 3 was logged"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not native.is_native(rundir.export_dir(workdir))
    subprocess.run(command, env=helpers.env(), check=True, timeout=600)

    expected = helpers.exported(reference)
    got = trees.flatten(jax.device_get(native.load_params(rundir.export_dir(workdir))))
    assert expected.keys() == got.keys()
    for name in expected:
        np.testing.assert_array_equal(got[name], expected[name], err_msg=name)
    assert sorted(metrics_steps(workdir)) == list(range(1, 7))  # each step once
    names = [p.name for p in storage.path(workdir).iterdir()]
    assert any(n.startswith("events.out.tfevents") for n in names), names
    assert json.loads((storage.path(workdir) / rundir.CONFIG).read_text())["data"]["sources"][0][
        "path"
    ].startswith("gs://")

    # HF export into the bucket, read back from it
    out = f"{bucket}/exports/killed"
    export.export_run(workdir, out)
    assert (storage.path(out) / "config.json").is_file()
    loaded = _params(hf.load(out)[0])
    for name, value in _params(hf.load(_local_export(reference, tmp_path / "hf"))[0]).items():
        np.testing.assert_array_equal(loaded[name], value, err_msg=name)

    # evaluated from the bucket, on a dataset in the bucket, into the bucket
    def evaluation(run, jsonl, out_dir):
        c = ml_collections.ConfigDict()
        c.job, c.model, c.batch_size = "eval", f"run:{run}", 4
        c.datasets = [{"name": "parity", "source": "jsonl", "path": jsonl}]
        c.protocols = {"likelihood": {"alphas": []}}
        runner.evaluate(c, str(out_dir))
        file = storage.path(out_dir) / "parity" / "likelihood" / "predictions.jsonl"
        return [json.loads(line) for line in file.read_text().splitlines()]

    remote = evaluation(workdir, f"{bucket}/data/images/test.jsonl", f"{bucket}/evals/killed")
    local_ = evaluation(reference, datasets["root"] / "images" / "test.jsonl", tmp_path / "eval")
    assert len(remote) == 6
    assert [(r["id"], r["prediction"], r["scores"]) for r in remote] == [
        (r["id"], r["prediction"], r["scores"]) for r in local_
    ]


def _params(model) -> dict:
    return trees.flatten(jax.device_get(nnx.to_pure_dict(nnx.state(model, nnx.Param))))


def _local_export(workdir, out) -> str:
    export.export_run(workdir, out)
    return str(out)


@pytest.mark.slow
def test_two_processes_train_into_one_bucket(bucket, datasets, reference, tmp_path):
    workdir = f"{bucket}/runs/two"
    arg = helpers.config_file(tmp_path, config_for(datasets["remote"]))
    assert local.run(helpers.main_command(arg, workdir), 2, devices=1, timeout=600) == 0
    single = helpers.losses(reference)
    multi = {json.loads(x)["step"]: json.loads(x)["loss"]
             for x in (storage.path(workdir) / rundir.METRICS).read_text().splitlines()}  # fmt: skip
    assert sorted(multi) == sorted(single) == list(range(1, 7))
    np.testing.assert_allclose([multi[s] for s in single], list(single.values()), rtol=1e-5)
    assert native.is_native(rundir.export_dir(workdir))


def test_a_truncated_object_is_never_read_as_a_checkpoint(bucket):
    directory = f"{bucket}/checkpoints/truncated"
    tree = {"w": jax.numpy.arange(4096, dtype=jax.numpy.float32), "b": jax.numpy.ones((8,))}
    abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype,
                                                           sharding=x.sharding), tree)  # fmt: skip
    with checkpoint.Checkpointer(directory, every_steps=1, keep=None, asynchronous=False) as ckpt:
        ckpt.save(1, tree)
        ckpt.save(2, jax.tree.map(lambda x: x + 1, tree))
    # the newest checkpoint loses the second half of its largest data object
    step_dir = storage.path(directory) / "2"
    objects = [step_dir / name for name in storage.relative_files(step_dir)]
    largest = max(objects, key=lambda p: p.stat().length)
    data = largest.read_bytes()
    largest.write_bytes(data[: len(data) // 2])
    # and a save of step 3 killed before its commit: Orbax writes a bucket's step directory in
    # place and marks it complete with commit_success.txt last; here every object but those
    unfinished = storage.path(directory) / "3"
    for name in storage.relative_files(step_dir):
        if not name.endswith("commit_success.txt"):
            (unfinished / name).write_bytes((step_dir / name).read_bytes())

    with checkpoint.Checkpointer(directory, every_steps=1, keep=None, asynchronous=False) as ckpt:
        assert ckpt.steps() == [1, 2]  # the unfinished save is not a checkpoint
        step, state = ckpt.restore_latest(abstract)
        assert step == 1
        np.testing.assert_array_equal(state["w"], tree["w"])
        assert ckpt.steps() == [1]
    assert (storage.path(f"{directory}.unreadable") / "2").is_dir()  # kept for inspection


def test_a_local_copy_follows_a_rewrite_of_the_same_size(bucket, tmp_path, monkeypatch):
    monkeypatch.setenv("FGJAX_CACHE", str(tmp_path / "cache"))
    where = f"{bucket}/rewritten"
    first, second = np.arange(64, dtype=np.float32), np.arange(64, dtype=np.float32) + 1e-3
    storage.path(where).mkdir(parents=True, exist_ok=True)
    (storage.path(where) / "weights.bin").write_bytes(first.tobytes())
    local = storage.local_copy(where)
    np.testing.assert_array_equal(np.fromfile(f"{local}/weights.bin", np.float32), first)
    (storage.path(where) / "weights.bin").write_bytes(second.tobytes())  # same size
    (storage.path(where) / "added.txt").write_text("new")
    assert storage.local_copy(where) == local
    np.testing.assert_array_equal(np.fromfile(f"{local}/weights.bin", np.float32), second)
    assert (tmp_path / "cache").exists() and open(f"{local}/added.txt").read() == "new"
    stamp = (storage.path(local) / "weights.bin").stat().mtime
    time.sleep(1.1)
    storage.local_copy(where)  # unchanged objects are not copied again
    assert (storage.path(local) / "weights.bin").stat().mtime == stamp
