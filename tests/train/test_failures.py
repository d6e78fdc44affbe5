"""Training under damage and bad input: damaged or silently corrupted checkpoints, data that
is all bad, non-finite updates, errors during an asynchronous save, a killed re-export, a
full disk and bad config values. Each ends either in a run that finishes exactly as an
uninterrupted one, or in one clear error -- never in lost progress or hidden damage."""

from __future__ import annotations

import copy
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import jax
import ml_collections
import numpy as np
import pytest

from fgjax import native, rundir
from fgjax.data import pipeline
from fgjax.data.skips import BadInputError
from fgjax.data.tokenizer import tokenizer_for
from fgjax.evaluate import loading
from fgjax.train import checkpoint, experiment, trainer
from fgjax.train import inputs as train_inputs
from tests.train import helpers

EXPORT_WORKER = str(Path(__file__).with_name("export_worker.py"))


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return helpers.write_dataset(tmp_path_factory.mktemp("data"))


def run_config(data, steps=8, **checkpointing):
    config = helpers.tiny_config(data, stage="align_llm", steps=steps)
    config.checkpoint = dict(every_steps=2, keep=3, asynchronous=True) | checkpointing
    return config


@pytest.fixture(scope="module")
def finished(data, tmp_path_factory):
    """An uninterrupted run: 8 steps, checkpoints kept at steps 4, 6 and 8."""
    workdir = tmp_path_factory.mktemp("finished") / "work"
    trainer.train(run_config(data), str(workdir))
    assert checkpoint.Checkpointer(workdir / "checkpoints", every_steps=2).steps() == [4, 6, 8]
    return workdir


def largest_file(directory: Path) -> Path:
    return max((p for p in directory.rglob("*") if p.is_file()), key=lambda p: p.stat().st_size)


def truncate(step_dir: Path) -> None:
    path = largest_file(step_dir)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def zero_fill(step_dir: Path) -> None:
    path = largest_file(step_dir)
    path.write_bytes(b"\0" * path.stat().st_size)


def flip_byte(step_dir: Path) -> None:
    """Silent corruption: one bit of one byte in the middle of the largest data file."""
    path = largest_file(step_dir)
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2] ^= 0x04
    path.write_bytes(bytes(raw))


def delete_data_files(step_dir: Path) -> None:
    for path in (step_dir / "state").rglob("d/*"):
        path.unlink()


def delete_manifests(step_dir: Path) -> None:
    for path in step_dir.rglob("manifest.ocdbt"):
        path.unlink()


def delete_metadata(step_dir: Path) -> None:
    (step_dir / "state" / "_METADATA").unlink()


def empty(step_dir: Path) -> None:
    shutil.rmtree(step_dir)
    step_dir.mkdir()


DAMAGE = [truncate, zero_fill, flip_byte, delete_data_files, delete_manifests, delete_metadata, empty]


def rerun_after(finished: Path, tmp_path: Path, data, steps_to_damage, damage) -> Path:
    """A copy of the finished run, its final export removed and `steps_to_damage` damaged,
    run again with the same config."""
    workdir = tmp_path / "work"
    shutil.copytree(finished, workdir)
    shutil.rmtree(workdir / rundir.PARAMS_EXPORT)
    for step in steps_to_damage:
        damage(workdir / "checkpoints" / str(step))
    trainer.train(run_config(data), str(workdir))
    return workdir


def assert_same_run(workdir: Path, reference: Path) -> None:
    expected, got = helpers.exported(reference), helpers.exported(workdir)
    assert expected.keys() == got.keys()
    for name in expected:
        np.testing.assert_array_equal(got[name], expected[name], err_msg=name)
    assert helpers.losses(workdir) == helpers.losses(reference)  # and no step logged twice


# ---------------------------------------------------------------------- damaged checkpoints


@pytest.mark.parametrize("damage", DAMAGE, ids=lambda d: d.__name__)
def test_an_unreadable_newest_checkpoint_is_moved_aside_and_the_run_ends_as_if_unharmed(
    finished, tmp_path, data, damage, caplog
):
    """Defects 1 and 7: the run resumes from step 6, writes step 8 again (it used to raise
    StepAlreadyExistsError there) and ends bit-identical to the uninterrupted run; a flipped
    byte, which used to restore silently, is caught by the checkpoint's fingerprints."""
    workdir = rerun_after(finished, tmp_path, data, [8], damage)
    assert_same_run(workdir, finished)
    assert "checkpoint at step 8" in caplog.text and "unreadable" in caplog.text
    assert (workdir / "checkpoints.unreadable" / "8").is_dir()
    assert checkpoint.Checkpointer(workdir / "checkpoints", every_steps=2).steps() == [4, 6, 8]


def test_with_no_readable_checkpoint_the_run_starts_afresh_with_a_fresh_iterator(
    finished, tmp_path, data
):
    """Defect 2: every kept checkpoint damaged -- all are moved aside and the run restarts
    from step 0 with the data iterator at the start (a failed restore used to leave it
    elsewhere), ending bit-identical to the uninterrupted run."""
    workdir = rerun_after(finished, tmp_path, data, [4, 6, 8], zero_fill)
    assert_same_run(workdir, finished)
    assert sorted(p.name for p in (workdir / "checkpoints.unreadable").iterdir()) == ["4", "6", "8"]


def test_checkpoints_of_another_config_stop_the_run_and_are_kept(finished, tmp_path, data):
    """Not damage but a changed config (align instead of align_llm: another optimizer
    state): one error, nothing moved aside, the run's config.json untouched."""
    workdir = tmp_path / "work"
    shutil.copytree(finished, workdir)
    before = (workdir / "config.json").read_text()
    config = run_config(data)
    config.stage = "align"
    with pytest.raises(checkpoint.IncompatibleCheckpointError, match="step 8.*another model"):
        trainer.train(config, str(workdir))
    assert not (workdir / "checkpoints.unreadable").exists()
    assert (workdir / "config.json").read_text() == before


def test_a_corrupted_export_fails_to_load_and_names_its_directory(finished, tmp_path):
    """Defect 7 for parameters exports: a flipped byte is reported, not loaded."""
    export = tmp_path / "export"
    shutil.copytree(finished / rundir.PARAMS_EXPORT, export)
    flip_byte(export / "params")
    with pytest.raises(native.CorruptExportError, match=f"{export}.*other values"):
        native.load_params(export)


# ---------------------------------------------------------------------- failing runs


def run_main(config, tmp_path: Path) -> subprocess.CompletedProcess:
    """`python -m fgjax.main` on `config` in tmp_path/work, in a process of its own."""
    return subprocess.run(
        helpers.main_command(helpers.config_file(tmp_path, config), tmp_path / "work"),
        env=helpers.env(),
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_non_finite_parameters_stop_the_run_before_anything_is_saved(data, tmp_path):
    """Defect 4: a learning rate that overflows float32 (1e-2 x 1e300) gives a finite loss
    and gradient but non-finite parameters; the step is rejected, nothing non-finite is
    checkpointed (synchronous saves every step) and nothing is exported."""
    config = run_config(data, steps=3, every_steps=1, asynchronous=False)
    config.optim.lr_mults = {"projector": 1e300}
    with pytest.raises(trainer.NonFiniteError, match="at step 1 .*updated parameters NOT finite"):
        trainer.train(config, str(tmp_path))
    ckpt = checkpoint.Checkpointer(tmp_path / "checkpoints", every_steps=1)
    exp = experiment.build(with_image_token(config))
    for step in ckpt.steps():
        tree = ckpt.restore(step, {"state": exp.abstract_state(), "frozen": exp.abstract_frozen()})
        assert all(np.isfinite(x).all() for x in jax.tree.leaves(jax.device_get(tree)))
    assert not native.is_native(rundir.export_dir(tmp_path))


def with_image_token(config):
    config = copy.deepcopy(config)
    tokenizer = tokenizer_for(config.data.tokenizer, image_token=True)
    config.model.image_token_id = tokenizer.token_to_id("<image>")
    return config


def test_an_error_during_an_asynchronous_save_lets_the_save_finish(data, tmp_path):
    """Defect 5: a NaN at step 9, while the asynchronous save of step 8 may still be in
    flight: the process ends with steps 4 and 8 complete and no temporary directory."""
    config = run_config(data, steps=12, every_steps=4)
    config.debug = {"nan_at_step": 8}
    result = run_main(config, tmp_path)
    assert result.returncode != 0 and "non-finite values at step 9" in result.stderr
    names = sorted(p.name for p in (tmp_path / "work" / "checkpoints").iterdir())
    assert names == ["4", "8"], names


def test_a_killed_reexport_is_not_taken_for_an_export(tmp_path):
    """Defect 6: SIGKILL while an export is being rewritten leaves a directory that is not
    an export (it used to keep the old fgjax_model.json over half-written parameters)."""
    export = tmp_path / "params_export"
    proc = subprocess.Popen(
        [sys.executable, EXPORT_WORKER, str(export)],
        env=helpers.env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    assert proc.stdout.readline().strip() == "first export written"
    deadline = time.monotonic() + 120
    while not any(".orbax-checkpoint-tmp" in p.name for p in export.iterdir()):
        assert proc.poll() is None and time.monotonic() < deadline, "the re-export never started"
        time.sleep(0.002)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not native.is_native(export)
    with pytest.raises(FileNotFoundError, match="no parameters export"):
        rundir.run_export(str(tmp_path))


def test_a_full_disk_ends_in_one_message_and_keeps_the_last_checkpoint(data, tmp_path):
    """Defect 10: a 2.5 MB file system (a tmpfs in a private mount namespace) holds one
    checkpoint of this run (1.5 MB) but not two: the run stops before writing step 8 with
    one message, no tracebacks of Orbax's threads, and step 4 resumes."""
    if shutil.which("unshare") is None:
        pytest.skip("needs util-linux unshare for a private tmpfs")
    mount = tmp_path / "small"
    mount.mkdir()
    config = run_config(data, steps=12, every_steps=4, keep=2)
    arg = helpers.config_file(tmp_path, config)
    command = " ".join(helpers.main_command(arg, mount / "work"))
    flags = "-m" if os.geteuid() == 0 else "-rm"
    script = (
        f"mount -t tmpfs -o size=2500k tmpfs {mount} || exit 77; {command}; status=$?; "
        f"cp -r {mount}/work {tmp_path}/saved; exit $status"
    )
    result = subprocess.run(
        ["unshare", flags, "sh", "-c", script],
        env=helpers.env(),
        capture_output=True,
        text=True,
        timeout=600,
    )
    if result.returncode == 77 or "unshare failed" in result.stderr:
        pytest.skip(f"cannot mount a tmpfs here: {result.stderr[-300:]}")
    assert result.returncode == 1, result.stderr[-3000:]
    assert "no space left on device for the checkpoint of step 8" in result.stderr
    assert "step 4 is the newest complete checkpoint" in result.stderr
    assert result.stderr.count("Traceback") == 1, result.stderr[-3000:]
    for noise in ("Event loop is closed", "sys.meta_path is None", "Exception ignored"):
        assert noise not in result.stderr
    saved = tmp_path / "saved"
    assert sorted(p.name for p in (saved / "checkpoints").iterdir()) == ["4"]
    trainer.train(config, str(saved))  # with room again, the run resumes and finishes
    assert sorted(helpers.losses(saved)) == list(range(1, 13))


# ---------------------------------------------------------------------- bad data


def corrupt_images(data: dict, root: Path, rows: list[int] | None = None) -> dict:
    """A copy of the dataset whose image rows (or only `rows`) have undecodable files; all
    rows have images."""
    shutil.copytree(Path(data["json"]).parent, root)
    table = json.loads((root / "data.json").read_text())
    table = [r for r in table if "image" in r]
    for i, row in enumerate(table):
        if rows is None or i in rows:
            (root / "images" / row["image"]).write_bytes(b"not an image")
    (root / "data.json").write_text(json.dumps(table))
    return {**data, "json": str(root / "data.json"), "images": str(root / "images")}


def test_every_image_corrupt_stops_with_the_reason(data, tmp_path):
    """Defect 3: training used to wait forever for a batch, logging every skip again; now it
    stops, naming the reason, and logs each bad row once."""
    bad = corrupt_images(data, tmp_path / "bad")
    result = run_main(run_config(bad), tmp_path)
    assert result.returncode != 0
    assert "training records in a row were skipped" in result.stderr
    assert "corrupt image" in result.stderr
    lines = result.stderr.splitlines()
    logged = [line.split("skipping: ")[1] for line in lines if "skipping: data.json" in line]
    rows = len(json.loads(Path(bad["json"]).read_text()))
    assert 0 < len(logged) <= rows and len(set(logged)) == len(logged)  # each bad row once


def test_skips_are_counted_per_row_however_often_rows_are_read(data, tmp_path):
    """Defect 11: 4 corrupt images and 5 conversations too long for max_length, read over
    three epochs by several threads, are 4 and 5 in the data report."""
    bad = corrupt_images(data, tmp_path / "bad", rows=[0, 1, 2, 3])
    table = json.loads(Path(bad["json"]).read_text())
    for row in table[4:9]:
        row["conversations"][0]["value"] = "<image>\n" + "Describe it in detail. " * 60
    Path(bad["json"]).write_text(json.dumps(table))
    config = with_image_token(run_config(bad))
    exp = experiment.build(config)
    tokenizer = tokenizer_for(config.data.tokenizer, image_token=True)
    ds, transform, sources = train_inputs.train_dataset(
        config, exp.model_cfg, tokenizer, pipeline.HostShard()
    )
    it = iter(ds)
    for _ in range(3 * len(table) // config.batch_size):
        next(it)
    report = train_inputs.data_report(transform, config.data.sources, sources)
    assert report["skipped_samples"] == {"cannot be encoded": 5}
    assert report["llava_json"]["corrupt image"] == 4


@pytest.mark.parametrize(
    "content, message",
    [
        ("", "is empty"),
        ("[]", "has no usable rows"),
        ('[{"id": "a"}, {"id": "b", "conversations": []}]', "has no usable rows.*malformed row 2"),
        ('{\n  "id": "a",\n  "conversations": []\n}\n', "holds one JSON object over several lines"),
    ],
    ids=["empty_file", "empty_list", "every_row_bad", "pretty_printed_object"],
)
def test_an_empty_dataset_fails_at_once_naming_the_file(data, tmp_path, content, message):
    """Defect 8: it used to fail 30 s in with a bare StopIteration."""
    path = tmp_path / "rows.json"
    path.write_text(content)
    config = run_config({**data, "json": str(path)})
    with pytest.raises(BadInputError, match=f"{path}.*{message}|{message}"):
        trainer.train(config, str(tmp_path / "work"))


# ---------------------------------------------------------------------- bad values


@pytest.mark.parametrize(
    "change, message",
    [
        ({"checkpoint": {"keep": 0}}, r"checkpoint.keep=0 must be an integer >= 1"),
        ({"num_steps": 2.7}, r"num_steps=2.7 must be an integer"),
        ({"optim": {"lr": -1e-3}}, r"optim.lr=-0.001 must be a finite number > 0"),
        ({"optim": {"lr": float("nan")}}, r"optim.lr=nan must be a finite number"),
        (
            {"optim": {"lr_mults": {"decodr": 0.0}}},
            r"lr_mults names \['decodr'\], which are not parameter groups",
        ),
        ({"grad_accum": 0}, r"grad_accum=0 must be an integer >= 1"),
        ({"checkpoint": {"every_steps": 0}}, r"checkpoint.every_steps=0 must be an integer >= 1"),
        ({"log_every": 0}, r"log_every=0 must be an integer >= 1"),
        ({"export_steps": [8]}, r"export_steps holds 8"),
    ],
    ids=[
        "keep_0",
        "fractional_steps",
        "negative_lr",
        "nan_lr",
        "unknown_lr_mult",
        "grad_accum_0",
        "every_steps_0",
        "log_every_0",
        "export_at_the_end",
    ],
)
def test_bad_values_fail_before_compiling(data, tmp_path, change, message):
    """Defect 9: each used to train, train differently, or fail after initialization. The
    values come as a JSON config file would give them."""
    values = run_config(data).to_dict()
    for key, value in change.items():
        values[key] = {**values[key], **value} if isinstance(value, dict) else value
    config = ml_collections.ConfigDict(values)
    with pytest.raises(ValueError, match=message):
        experiment.build(with_image_token(config))
    with pytest.raises(ValueError, match=message):  # and the trainer stops there, writing nothing
        trainer.train(config, str(tmp_path / "work"))
    assert not (tmp_path / "work" / "checkpoints").exists()


@pytest.mark.slow
def test_two_processes_agree_on_the_checkpoint_they_resume_from(data, tmp_path):
    """A damaged newest checkpoint of a 2-process run: both processes move it aside (one
    does, the other waits), resume from the same step and end bit-identical to the
    uninterrupted 2-process run. A 1-process rerun is refused: the data positions were
    written by 2 processes."""
    from fgjax.launch import local

    command = helpers.main_command(helpers.config_file(tmp_path, run_config(data)), tmp_path / "a")
    assert local.run(command, 2, devices=2, timeout=600) == 0
    shutil.copytree(tmp_path / "a", tmp_path / "b")
    shutil.rmtree(tmp_path / "b" / rundir.PARAMS_EXPORT)
    zero_fill(tmp_path / "b" / "checkpoints" / "8")
    with pytest.raises(checkpoint.IncompatibleCheckpointError, match="written by 2 processes"):
        trainer.train(run_config(data), str(tmp_path / "b"))
    command[-1] = f"--workdir={tmp_path / 'b'}"
    assert local.run(command, 2, devices=2, timeout=600) == 0
    assert_same_run(tmp_path / "b", tmp_path / "a")
    assert (tmp_path / "b" / "checkpoints.unreadable" / "8").is_dir()


def test_a_tokenizer_without_its_roles_says_how_to_declare_them_and_the_config_can(data, tmp_path):
    """A tokenizer.json alone (no tokenizer_config.json) has no EOS: the error says where the
    roles go; config.data.tokenizer_roles gives them, and the run records them for evaluation
    and export."""
    bare = tmp_path / "bare"
    bare.mkdir()
    shutil.copy(Path(data["tokenizer"]) / "tokenizer.json", bare / "tokenizer.json")
    config = helpers.tiny_config({**data, "tokenizer": str(bare)}, stage="align", steps=2)
    with pytest.raises(ValueError, match="tokenizer_config.json beside its file .* or in config.data.tokenizer_roles"):
        trainer.train(config, str(tmp_path / "no_roles"))
    config.data.tokenizer_roles = {"bos_token": "<s>", "eos_token": "</s>", "pad_token": "<pad>"}
    trainer.train(config, str(tmp_path / "roles"))
    recorded = json.loads((tmp_path / "roles" / "config.json").read_text())["data"]
    assert recorded["tokenizer_roles"]["eos_token"] == "</s>"
    loaded = loading.load_vlm(f"run:{tmp_path / 'roles'}")
    assert loaded.tokenizer.eos_id is not None
