"""A corrupted or incomplete workdir stops the export with a message naming what is wrong and
what the workdir holds; models transformers cannot represent are refused by name and exported
in fgjax's native format instead, which fgjax.native.load reads back."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import jax
import numpy as np
import pytest
from flax import nnx

from fgjax import export as cli
from fgjax import native, trees
from fgjax.hf.configs import UnsupportedModelError
from fgjax.hf.export import export_run, unsupported_reason
from fgjax.models import presets
from fgjax.rundir import RunError
from tests.export import runs


def remove(path: Path) -> None:
    shutil.rmtree(path) if path.is_dir() else path.unlink()


def test_not_a_workdir(tmp_path):
    with pytest.raises(RunError, match="is not a directory"):
        export_run(tmp_path / "nowhere", tmp_path / "out")
    (tmp_path / "stray.txt").write_text("x")
    with pytest.raises(RunError, match=r"no config.json in .* \(it holds \[stray.txt\]\)"):
        export_run(tmp_path, tmp_path / "out")


def test_missing_model_config(workdir_copy, tmp_path):
    workdir = workdir_copy("clip")
    remove(workdir / "model_config.json")
    remove(workdir / "params_export")
    with pytest.raises(RunError, match=r"no model_config.json .*holds \[checkpoints, config.json"):
        export_run(workdir, tmp_path / "out")


def test_no_checkpoint(workdir_copy, tmp_path):
    workdir = workdir_copy("clip")
    remove(workdir / "params_export")
    remove(workdir / "params_export_step1")
    for step in os.listdir(workdir / "checkpoints"):
        remove(workdir / "checkpoints" / step)
    with pytest.raises(RunError, match=r"no complete checkpoint .* checkpoints/ holds \(empty\)"):
        export_run(workdir, tmp_path / "out")
    remove(workdir / "checkpoints")
    with pytest.raises(RunError, match="there is no checkpoints/ directory"):
        export_run(workdir, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_unknown_and_unfinished_steps(workdir_copy, tmp_path):
    """Orbax writes a step into `<step>.orbax-checkpoint-tmp-*` and renames it when complete;
    an interrupted save stays there. A step whose checkpoint is gone but that has a parameters
    export (config.export_steps) is read from the export."""
    workdir = workdir_copy("clip")
    remove(workdir / "params_export")
    remove(workdir / "checkpoints" / "1")
    os.rename(workdir / "checkpoints" / "3", workdir / "checkpoints" / "3.orbax-checkpoint-tmp-9")
    with pytest.raises(
        RunError,
        match=r"no checkpoint at step 7 .* steps \[2\], unfinished \(partial\) steps \[3\], "
        r"parameters exports at steps \[1\], params_export/ absent",
    ):
        export_run(workdir, tmp_path / "out", step=7)
    with pytest.raises(RunError, match=r"step 3 \(its checkpoint was never finished writing\)"):
        export_run(workdir, tmp_path / "out", step=3)
    assert export_run(workdir, tmp_path / "out").source == "checkpoint step 2"  # newest complete
    result = export_run(workdir, tmp_path / "out", step=1, overwrite=True)
    assert result.source == "the parameters export params_export_step1"


def test_partial_and_corrupt_checkpoints(workdir_copy, tmp_path):
    workdir = workdir_copy("clip")
    remove(workdir / "checkpoints" / "2" / "state")
    with pytest.raises(RunError, match="step 2 .* incomplete: no 'state' item"):
        export_run(workdir, tmp_path / "out", step=2)
    item = workdir / "checkpoints" / "3" / "state"
    for data in (item / "ocdbt.process_0" / "d").iterdir():  # the arrays, not the metadata
        data.unlink()
    with pytest.raises(RunError, match="cannot read '.*' .*incomplete or corrupt"):
        export_run(workdir, tmp_path / "out", step=3)
    (item / "_METADATA").write_text("{not json")
    with pytest.raises(RunError, match="checkpoint step 3 .* is unreadable"):
        export_run(workdir, tmp_path / "out", step=3)
    assert os.listdir(tmp_path) == ["copy_clip"]  # no half-written export left behind


def test_checkpoint_of_another_model(workdir_copy, tmp_path):
    workdir = workdir_copy("clip")
    config = json.loads((workdir / "model_config.json").read_text())
    config["decoder"]["mlp_dim"] = 96
    (workdir / "model_config.json").write_text(json.dumps(config))
    with pytest.raises(
        RunError, match=r"(?s)does not match .*mlp/up/kernel: stored \(2, 64, 128\)"
    ):
        export_run(workdir, tmp_path / "out", step=2)


def test_moved_tokenizer_and_occupied_output(workdir_copy, trained, tmp_path):
    workdir = workdir_copy("clip")
    config = json.loads((workdir / "config.json").read_text())
    tokenizer, config["data"]["tokenizer"] = config["data"]["tokenizer"], "/moved/away"
    (workdir / "config.json").write_text(json.dumps(config))
    with pytest.raises(RunError, match="'/moved/away' is not there; pass tokenizer="):
        export_run(workdir, tmp_path / "out")
    export_run(workdir, tmp_path / "out", tokenizer=tokenizer)
    with pytest.raises(FileExistsError, match="pass overwrite=True"):
        export_run(workdir, tmp_path / "out", tokenizer=tokenizer)
    export_run(workdir, tmp_path / "out", tokenizer=tokenizer, overwrite=True)
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("precious")
    with pytest.raises(FileExistsError, match="does not look like an earlier export"):
        export_run(workdir, tmp_path / "mine", tokenizer=tokenizer, overwrite=True)
    assert (tmp_path / "mine" / "notes.txt").read_text() == "precious"


# ------------------------------------------------------------------ unrepresentable models

UNREPRESENTABLE = {
    "after_bos": (dict(image_layout="after_bos"), "right after BOS"),
    "fused": (dict(encoder_name="tiny_dinov2_siglip"), "fuses 2 vision towers"),
    "dinov2_registers": (dict(encoder_name="tiny_dinov2"), "drops exactly one token"),
    "projector": (dict(projector="linear"), "projector.kind='linear'"),
    "input_size": (dict(encoder_overrides={"input_size": 48}), "input_size=48"),
}


def unrepresentable_cfg(dataset, name: str):
    kwargs = {"encoder_name": "tiny_clip", **UNREPRESENTABLE[name][0]}
    return presets.vlm(
        kwargs.pop("encoder_name"), "tiny_llama", image_token_id=300,
        decoder_overrides={"vocab_size": dataset["vocab"]}, **kwargs,
    )  # fmt: skip


def unrepresentable_run(root: Path, dataset, name: str) -> tuple[Path, dict]:
    data = {"tokenizer": dataset["tokenizer"], "template": "vicuna_v1", "preprocess": None}
    params = runs.finished_run(
        root / name, unrepresentable_cfg(dataset, name), task="vlm", data=data
    )
    return root / name, params


@pytest.mark.parametrize("name", list(UNREPRESENTABLE))
def test_reasons(dataset, name):
    assert UNREPRESENTABLE[name][1] in unsupported_reason(unrepresentable_cfg(dataset, name))


@pytest.mark.parametrize("name", ["after_bos", "fused"])
def test_unrepresentable_models(dataset, tmp_path, name):
    workdir, params = unrepresentable_run(tmp_path, dataset, name)
    reason = UNREPRESENTABLE[name][1]
    with pytest.raises(
        UnsupportedModelError, match=f"cannot represent .*{reason}.*format='native'"
    ):
        export_run(workdir, tmp_path / "hf", format="hf")
    assert not (tmp_path / "hf").exists()
    result = export_run(workdir, tmp_path / "out")
    assert result.format == "native" and reason in result.reason
    model, cfg = native.load(tmp_path / "out")
    assert cfg == native.read_config(workdir / "params_export")
    back = trees.flatten(jax.device_get(nnx.to_pure_dict(nnx.state(model, nnx.Param))))
    want = trees.flatten(params)
    assert sorted(back) == sorted(want)
    assert all(np.array_equal(back[p], want[p]) for p in want)
    assert (tmp_path / "out" / "tokenizer" / "tokenizer.json").is_file()


def test_command_line(dataset, trained, tmp_path, capsys):
    """The command line says why it wrote the native format; errors are one line."""
    workdir, _ = unrepresentable_run(tmp_path, dataset, "fused")
    cli.main([f"--workdir={workdir}", f"--out={tmp_path / 'out'}"])
    printed = capsys.readouterr().out
    assert "transformers cannot represent this model: the encoder fuses 2" in printed
    assert "fgjax.native.load(" in printed and native.is_native(tmp_path / "out")
    args = [f"--workdir={trained('clip')}", "--step=5", f"--out={tmp_path / 'out2'}"]
    with pytest.raises(SystemExit, match=r"error: no checkpoint at step 5 .*steps \[1, 2, 3\]"):
        cli.main(args)
    with pytest.raises(SystemExit, match="cannot read the size '5 parsecs'"):
        cli.main([*args, "--max_shard_size=5 parsecs"])
