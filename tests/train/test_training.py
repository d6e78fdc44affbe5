"""Training acceptance tests: sharded runs equal single-device ones, multi-process runs equal
single-process ones, freeze semantics, exact resume after SIGKILL, NaN stops, gradient
accumulation, config errors before compiling."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest
from flax import nnx

from fgjax import native, rundir, trees
from fgjax.data import pipeline
from fgjax.data.tokenizer import tokenizer_for
from fgjax.launch import local
from fgjax.models.partitioning import activation_sharding
from fgjax.train import checkpoint, experiment, init, optim, trainer
from fgjax.train import inputs as train_inputs
from tests.train import helpers

WORKER = str(Path(__file__).with_name("steps_worker.py"))


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return helpers.write_dataset(tmp_path_factory.mktemp("data"))


def build(data, **kwargs):
    config = helpers.tiny_config(data, **kwargs)
    config.model.image_token_id = tokenizer_for(config.data.tokenizer, image_token=True).token_to_id("<image>")
    return experiment.build(config)


def batches(exp, count):
    tokenizer = tokenizer_for(exp.config.data.tokenizer, image_token=True)
    ds, _, _ = train_inputs.train_dataset(exp.config, exp.model_cfg, tokenizer, pipeline.HostShard())
    it = iter(ds)
    return [next(it) for _ in range(count)]


# ---------------------------------------------------------------------- sharding


MESHES = [
    '{"data": 1, "num_devices": 1}',
    '{"data": 8}',
    '{"fsdp": 8}',
    '{"data": 2, "fsdp": 2, "tensor": 2}',
]
# Float64 sums in another order differ by about 1e-16 relative; after three Adam steps the
# worst tensor differs by about 2e-14 of its scale (measured; float32 gave 1e-5, machine-
# dependent). A sharding bug moves float64 results far more: the planted one (gradients
# rounded to float32) by 2e-8, while it changes the loss by only 1e-11.
MESH_TOLERANCE = 1e-9


def mesh_errors(data, tmp_path, *plant: str) -> list[tuple[str, float, float, str]]:
    """(mesh, worst relative loss difference, worst tensor difference, its name) of each mesh
    against the single-device run, after 3 steps of full training in float64."""
    out = tmp_path / "out.npz"
    subprocess.run(
        [sys.executable, WORKER, str(Path(data["json"]).parent), str(out), "full", *plant, *MESHES],
        env={**helpers.env(), "FGJAX_LOCAL_DEVICE_COUNT": "8"},
        check=True,
        timeout=600,
    )
    result = np.load(out)
    # A key bias adds the same q.b to every attention logit of a query, so its true gradient is
    # zero; Adam turns the float noise left in its place into full-size steps of random sign.
    names = [
        k.split("/", 2)[2]
        for k in result.files
        if k.startswith("0/params/") and not k.endswith("/k/bias")
    ]
    errors = []
    for i in range(1, len(MESHES)):
        loss = np.max(np.abs(result[f"{i}/losses"] / result["0/losses"] - 1))
        worst, worst_name = max(
            (
                np.abs(result[f"{i}/params/{n}"] - result[f"0/params/{n}"]).max()
                / max(np.abs(result[f"0/params/{n}"]).max(), 0.02),
                n,
            )
            for n in names
        )
        errors.append((MESHES[i], float(loss), float(worst), worst_name))
        print(f"mesh {MESHES[i]}: loss {loss:.1e}, worst tensor {worst_name} {worst:.1e}")
    return errors


@pytest.mark.slow
def test_meshes_match_single_device(data, tmp_path):
    """8 fake CPU devices: 3 steps of full training (float64) on data=8, fsdp=8 and data=2 x
    fsdp=2 x tensor=2 give the single-device loss and parameters within MESH_TOLERANCE."""
    for mesh, loss, worst, name in mesh_errors(data, tmp_path):
        assert loss < MESH_TOLERANCE and worst < MESH_TOLERANCE, (mesh, loss, worst, name)


@pytest.mark.slow
def test_mesh_comparison_catches_a_planted_sharding_bug(data, tmp_path):
    """Gradients rounded to float32 on the sharded runs (a reduction in lower precision) move
    every mesh's parameters past the tolerance."""
    for mesh, loss, worst, name in mesh_errors(data, tmp_path, "--plant=f32_gradients"):
        assert worst > MESH_TOLERANCE, (mesh, loss, worst, name)


# ---------------------------------------------------------------------- runs of fgjax.main


@pytest.fixture(scope="module")
def reference_run(data, tmp_path_factory):
    """An uninterrupted single-process run of fgjax.main (align_llm, 6 steps)."""
    tmp = tmp_path_factory.mktemp("reference")
    config = helpers.tiny_config(data, stage="align_llm", steps=6)
    config.checkpoint.asynchronous = True
    arg = helpers.config_file(tmp, config)
    subprocess.run(helpers.main_command(arg, tmp / "work"), env=helpers.env(), check=True, timeout=600)
    return {"config": arg, "workdir": tmp / "work"}


@pytest.mark.slow
def test_two_processes_give_the_single_process_loss_curve(reference_run, tmp_path):
    workdir = tmp_path / "work"
    status = local.run(helpers.main_command(reference_run["config"], workdir), 2, devices=2, timeout=600)
    assert status == 0
    single, multi = helpers.losses(reference_run["workdir"]), helpers.losses(workdir)
    assert sorted(single) == sorted(multi) == list(range(1, 7))
    print("1 process:", single, "\n2 processes x 2 devices:", multi)
    np.testing.assert_allclose([multi[s] for s in single], list(single.values()), rtol=1e-5)


@pytest.mark.slow
def test_sigkill_and_rerun_is_bit_identical(reference_run, tmp_path):
    """Kill the run with SIGKILL after step 3 is logged, rerun the same command: the final
    parameters equal the uninterrupted run's bit for bit."""
    workdir = tmp_path / "work"
    helpers.kill_after_step_and_rerun(helpers.main_command(reference_run["config"], workdir), workdir)
    helpers.assert_same_export(reference_run["workdir"], workdir)


# ---------------------------------------------------------------------- in-process checks


def test_align_freezes_encoder_and_llm(data):
    align = build(data, stage="align")
    state, frozen = trainer.fresh_state(align)
    initial = trees.flatten(jax.device_get(trees.merge(state.trainable, frozen)))
    with activation_sharding(align.mesh, align.rules):
        for batch in batches(align, 2):
            state, _ = align.step(state, frozen, pipeline.to_global(batch, align.batch_sharding))
    final = trees.flatten(jax.device_get(trees.merge(state.trainable, frozen)))
    for name, value in initial.items():
        if not name.startswith("projector/"):
            np.testing.assert_array_equal(final[name], value, err_msg=name)
    assert any(
        not np.array_equal(final[n], initial[n]) for n in initial if n.startswith("projector/")
    )
    # the optimizer holds state for the projector only
    paths = [
        jax.tree_util.keystr(p) for p, _ in jax.tree_util.tree_flatten_with_path(state.opt_state)[0]
    ]
    assert not any("'encoder'" in p or "'decoder'" in p for p in paths)
    assert any("'projector'" in p for p in paths)
    # and the compiled step needs less memory than training the LLM too
    memory = {}
    for stage in ("align", "align_llm"):
        stats = build(data, stage=stage).compile().memory_analysis()
        memory[stage] = (
            stats.argument_size_in_bytes + stats.output_size_in_bytes + stats.temp_size_in_bytes
        )
    print("compiled step memory (bytes):", memory)
    assert memory["align"] < memory["align_llm"]


def test_frozen_encoder_gets_no_backward_pass(data):
    """The patch-embedding convolution appears once (forward) when the encoder is frozen, and
    again for its weight gradient when it trains."""
    counts = {}
    for stage in ("align", "full"):
        hlo = build(data, stage=stage).compile().as_text()
        counts[stage] = hlo.count(" convolution(")
    print("convolutions in the compiled step:", counts)
    assert counts["align"] == 1 and counts["full"] == 2


def test_gradient_accumulation_matches_one_big_batch(data):
    """4 micro-batches of 2 = one batch of 8, with unequal trained tokens per example: the
    loss is normalized by the token count of the whole batch."""
    big, accumulated = (
        build(data, stage="align_llm", accum=1),
        build(data, stage="align_llm", accum=4),
    )
    (batch,) = batches(big, 1)
    trained = batch["loss_mask"][:, 1:].sum(axis=1)
    assert len(set(trained.tolist())) > 1, trained
    params = jax.device_get(init.random_params(big.model_cfg, big.param_shardings, 0))
    results = []
    for exp in (big, accumulated):
        state, frozen = trainer.fresh_state(exp, params)
        state, metrics = exp.step(state, frozen, pipeline.to_global(batch, exp.batch_sharding))
        results.append((float(metrics["loss"]), trees.flatten(jax.device_get(state.trainable))))
    assert results[0][0] == pytest.approx(results[1][0], rel=1e-6)
    for name, value in results[0][1].items():
        np.testing.assert_allclose(results[1][1][name], value, rtol=1e-5, atol=1e-7, err_msg=name)


def test_lm_head_at_loss_positions_only_gives_the_full_loss_and_gradients(data):
    """loss_tokens_per_row: the same loss and gradients as the LM head at every position, with
    a cap that holds each row's loss tokens exactly (and one with room to spare)."""
    full = build(data, stage="full")
    (batch,) = batches(full, 1)
    per_row = batch["loss_mask"][:, 1:].sum(axis=1)
    assert per_row.max() < batch["loss_mask"].shape[1] // 2, per_row  # the head does less work
    params = init.random_params(full.model_cfg, full.param_shardings, 0)
    trainable, frozen = optim.split(params, full.path_groups, full.flags)
    batch = pipeline.to_global(batch, full.batch_sharding)

    def loss_and_grads(cap):
        loss_fn = full.task.loss_fn(full.flags, cap)

        def summed(t):
            total, count, extra = loss_fn(nnx.merge(full.graphdef, trees.merge(t, frozen)), batch)
            return total / count, extra

        (loss, extra), grads = jax.jit(jax.value_and_grad(summed, has_aux=True))(trainable)
        return float(loss), extra, trees.flatten(jax.device_get(grads))

    reference, _, reference_grads = loss_and_grads(None)
    for cap in (int(per_row.max()), int(per_row.max()) + 5):
        loss, extra, grads = loss_and_grads(cap)
        assert float(extra["loss_tokens_over_cap"]) == 0
        # float32 sums of a few hundred terms in another order: ~1e-7 relative
        assert loss == pytest.approx(reference, rel=1e-5)
        worst = max(
            np.abs(grads[n] - g).max() / max(np.abs(g).max(), 1e-6)
            for n, g in reference_grads.items()
        )
        print(f"cap {cap}: loss {abs(loss / reference - 1):.1e}, worst gradient {worst:.1e}")
        assert worst < 1e-4
    _, extra, _ = loss_and_grads(int(per_row.max()) - 1)
    assert float(extra["loss_tokens_over_cap"]) == (per_row - per_row.max() + 1).clip(0).sum()


def test_a_row_beyond_loss_tokens_per_row_stops_the_run_before_a_save(data, tmp_path):
    config = helpers.tiny_config(data, stage="align", steps=4)
    config.loss_tokens_per_row = 1
    with pytest.raises(ValueError, match="config.loss_tokens_per_row"):
        trainer.train(config, str(tmp_path))
    assert checkpoint.Checkpointer(tmp_path / "checkpoints", every_steps=2).steps() == []


def test_planted_nan_stops_with_the_step_and_keeps_the_last_checkpoint(data, tmp_path):
    config = helpers.tiny_config(data, stage="align", steps=6)
    config.debug = {"nan_at_step": 3}  # the 4th step
    with pytest.raises(trainer.NonFiniteError, match="at step 4"):
        trainer.train(config, str(tmp_path))
    ckpt = checkpoint.Checkpointer(tmp_path / "checkpoints", every_steps=2)
    assert ckpt.steps() == [2]
    config.debug = {}
    exp = build(data, stage="align", steps=6)
    step, tree = ckpt.restore_latest(
        {"state": exp.abstract_state(), "frozen": exp.abstract_frozen()}
    )
    assert step == 2 and int(tree["state"][0]) == 2
    assert all(np.isfinite(x).all() for x in jax.tree.leaves(jax.device_get(tree)))


def test_unreadable_latest_checkpoint_falls_back_to_the_previous(tmp_path, caplog):
    ckpt = checkpoint.Checkpointer(tmp_path, every_steps=1, keep=3, asynchronous=False)
    for step in (1, 2):
        ckpt.save(step, {"w": np.full((4,), float(step), np.float32)}, force=True)
    ckpt.close()
    for path in (tmp_path / "2").rglob("*"):  # damage every file of the newest checkpoint
        if path.is_file() and path.stat().st_size > 0:
            path.write_bytes(b"\0" * 3)
    (tmp_path / "3.orbax-checkpoint-tmp-123").mkdir()  # an interrupted save
    ckpt = checkpoint.Checkpointer(tmp_path, every_steps=1)
    assert ckpt.steps() == [1, 2]
    step, tree = ckpt.restore_latest({"w": jax.ShapeDtypeStruct((4,), np.float32)})
    assert step == 1 and float(tree["w"][0]) == 1.0
    assert "step 2" in caplog.text and "unreadable" in caplog.text


def test_config_errors_come_before_compiling(data):
    cases = [
        (dict(mesh={"data": 3}), "needs 3 devices but 1 are available"),
        (dict(batch=6, accum=4), "batch_size=6 must be divisible"),
        (dict(stage="warmup"), "unknown stage 'warmup'"),
    ]
    for kwargs, message in cases:
        with pytest.raises(ValueError, match=message):
            build(data, **kwargs)
    config = helpers.tiny_config(data)
    config.model.decoder = "llama9"
    with pytest.raises(ValueError, match="unknown decoder 'llama9'"):
        experiment.build(config)


# long enough that a fast machine is still training when the notice comes, steps after step 3
STEPS = 100


@pytest.mark.slow
def test_sigterm_saves_the_step_stops_cleanly_and_the_rerun_is_bit_identical(data, tmp_path):
    """A preemption notice (SIGTERM) mid-run: the checkpoint of the step reached is written
    whole (not a periodic one), the process ends with status 143 naming that step, and the
    rerun ends with the uninterrupted run's parameters, bit for bit."""
    config = helpers.tiny_config(data, stage="align", steps=STEPS)
    config.checkpoint.every_steps = 1000  # no periodic save: only the preemption's
    arg = helpers.config_file(tmp_path, config)
    reference = tmp_path / "reference"
    subprocess.run(helpers.main_command(arg, reference), env=helpers.env(), check=True, timeout=600)
    workdir = tmp_path / "work"
    command = helpers.main_command(arg, workdir)
    proc = subprocess.Popen(
        command, env=helpers.env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    helpers.wait_for_step(workdir, [proc], 3)
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 143, stderr[-2000:]
    saved = checkpoint.Checkpointer(workdir / "checkpoints", every_steps=1000).steps()
    assert len(saved) == 1 and 3 <= saved[0] < STEPS, saved
    assert f"preempted at step {saved[0]} of {STEPS}: checkpoint saved" in stderr
    assert not (workdir / rundir.PARAMS_EXPORT).exists()
    subprocess.run(command, env=helpers.env(), check=True, timeout=600)
    helpers.assert_same_export(reference, workdir)


@pytest.mark.slow
def test_sigterm_to_one_of_two_processes_stops_both_at_one_saved_step(data, tmp_path):
    """Two processes, the notice to one: JAX's preemption sync service picks one step, both save
    it and stop; the rerun ends with the parameters of an uninterrupted two-process run, bit for
    bit."""
    config = helpers.tiny_config(data, stage="align", steps=STEPS)
    config.checkpoint.every_steps = 1000
    arg = helpers.config_file(tmp_path, config)
    reference = tmp_path / "reference"
    assert local.run(helpers.main_command(arg, reference), 2, devices=1, timeout=600) == 0
    workdir = tmp_path / "work"
    command = helpers.main_command(arg, workdir)
    port = local.free_port()
    procs = [
        subprocess.Popen(command, env=local.process_env(i, 2, port, 1, helpers.env()),
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        for i in range(2)
    ]  # fmt: skip
    helpers.wait_for_step(workdir, procs, 3)
    procs[1].send_signal(signal.SIGTERM)
    errors = [p.communicate(timeout=300)[1] for p in procs]
    assert [p.returncode for p in procs] == [143, 143], [e[-1500:] for e in errors]
    saved = checkpoint.Checkpointer(workdir / "checkpoints", every_steps=1000).steps()
    assert len(saved) == 1 and 3 <= saved[0] < STEPS, saved
    assert all(f"preempted at step {saved[0]} of {STEPS}" in e for e in errors)
    assert local.run(command, 2, devices=1, timeout=600) == 0
    helpers.assert_same_export(reference, workdir)


def test_several_steps_per_call_train_as_one_step_per_call(data, tmp_path):
    """steps_per_call=4 scans up to four steps per compiled call, surfacing at every log,
    checkpoint, export and the last step (calls of 3, 2, 1 and 1 steps here): the same losses,
    export and final parameters as one step per call. Float32 sums fused differently inside
    the scan may round differently (measured: bit-identical on this machine); a gradient entry
    near zero can then change sign, which Adam turns into an update of up to
    lr * |g| / (|g| + eps), so parameters are compared to 1e-5 absolute, far below the
    1e-2 steps a wrong batch or step count would make."""
    results = {}
    for per_call in (1, 4):
        config = helpers.tiny_config(data, stage="align_llm", steps=7)
        config.log_every, config.checkpoint.every_steps = 5, 6
        config.export_steps, config.steps_per_call = (3,), per_call
        workdir = tmp_path / f"per_call_{per_call}"
        trainer.train(config, str(workdir))
        results[per_call] = (
            helpers.losses(workdir),
            helpers.exported(workdir),
            trees.flatten(jax.device_get(native.load_params(rundir.export_dir(workdir, 3)))),
        )
    (losses_1, final_1, early_1), (losses_4, final_4, early_4) = results[1], results[4]
    assert sorted(losses_1) == sorted(losses_4) == [3, 5, 6, 7]  # logs and saves
    np.testing.assert_allclose([losses_4[s] for s in losses_1], list(losses_1.values()), rtol=1e-5)
    for expected, got in ((final_1, final_4), (early_1, early_4)):
        assert expected.keys() == got.keys()
        print("max |difference|:", max(float(np.abs(got[k] - expected[k]).max()) for k in got))
        for name in expected:
            np.testing.assert_allclose(got[name], expected[name], rtol=1e-4, atol=1e-5, err_msg=name)
