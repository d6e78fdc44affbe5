"""Packed training rows (config.data.packing): grain's packer places every example once, keeps
each one's first token out of the loss and fills rows as first-fit guarantees; each process
packs its own share and a resumed stream repeats its rows; a packed batch gives every example
the loss and the gradients it gets unpacked (a VLM with images, and a decoder alone); and a
packed run of fgjax.main trains, logs its packing efficiency and resumes bit-identically."""

from __future__ import annotations

import json
import subprocess

import grain
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from fgjax import trees
from fgjax.data import pipeline
from fgjax.data.packing import Packing
from fgjax.data.tokenizer import tokenizer_for
from fgjax.train import experiment, init, optim, schema
from fgjax.train import inputs as train_inputs
from fgjax.train.tasks import decoder_inputs
from tests.train import helpers

LENGTH = 64


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return helpers.write_dataset(tmp_path_factory.mktemp("data"))


def synthetic(count: int, low: int, high: int, seed: int = 0, image_every: int = 0) -> list:
    """Examples of random lengths in [low, high] whose tokens all hold their index + 1 and
    whose first token is a loss target (as plain text without BOS); every `image_every`-th
    has an image f32[1, 2, 2, 3] filled with its index + 1, the others none."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(count):
        size = int(rng.integers(low, high + 1))
        example = {"tokens": np.full(size, i + 1, np.int32), "loss_mask": np.ones(size, bool)}
        if image_every:
            n = int(i % image_every == 0)
            example["images"] = np.full((n, 2, 2, 3), i + 1, np.float32)
        out.append(example)
    return out


def packed_rows(examples: list, packing: Packing, bins: int) -> list[dict]:
    ds = grain.MapDataset.source(examples).to_iter_dataset()
    return list(packing.rows(ds, bins=bins, seed=0))


def samples_of(row: dict) -> list[int]:
    """The example indices of a packed row, in row order."""
    starts = (row["positions"] == 0) & row["input_mask"]
    return [int(t) - 1 for t in row["tokens"][starts]]


# ---------------------------------------------------------------------- the packer


def test_rows_hold_every_example_once_with_its_image_and_no_first_token_target():
    examples = synthetic(60, 3, 20, image_every=3)
    rows = packed_rows(examples, Packing(LENGTH, max_images=2, pad_id=7), bins=4)
    placed = [i for row in rows for i in samples_of(row)]
    assert sorted(placed) == list(range(len(examples)))
    assert len(rows) < len(examples) / 2  # several examples share a row
    for row in rows:
        seg = row["segment_ids"]
        assert np.array_equal(row["input_mask"], seg > 0)
        assert not row["loss_mask"][row["positions"] == 0].any()  # never predicted across
        assert (row["tokens"][seg == 0] == 7).all() and not row["loss_mask"][seg == 0].any()
        with_images = []
        for s, index in enumerate(samples_of(row), start=1):
            span = seg == s
            assert span.sum() == len(examples[index]["tokens"])
            assert np.array_equal(row["positions"][span], np.arange(span.sum()))
            assert (row["tokens"][span] == index + 1).all() and row["loss_mask"][span][1:].all()
            with_images += [index] * len(examples[index]["images"])
        # the k-th image of a row is its k-th sample with an image, zeros after (VLM.embed)
        assert row["images"].shape == (2, 2, 2, 3) and len(with_images) <= 2
        for k in range(2):
            expected = with_images[k] + 1 if k < len(with_images) else 0
            assert (row["images"][k] == expected).all()


@pytest.mark.parametrize("strategy", ["first_fit", "best_fit"])
def test_packing_fills_rows_as_first_fit_guarantees(strategy):
    """A batch is emitted when an example fits none of its rows, so every row then holds more
    than LENGTH - the longest example: examples of LENGTH / 8 to LENGTH / 4 tokens fill rows
    beyond 3/4, while one per padded row fills under 1/4."""
    low, high, bins = LENGTH // 8, LENGTH // 4, 8
    examples = synthetic(400, low, high)
    rows = packed_rows(examples, Packing(LENGTH, strategy=strategy), bins=bins)
    full = rows[: len(rows) // bins * bins][:-bins]  # the stream's last rows may be partial
    used = np.array([row["input_mask"].sum() for row in full])
    assert (used > LENGTH - high).all(), used.min()
    packed = used.mean() / LENGTH
    padded = np.mean([len(e["tokens"]) for e in examples]) / LENGTH
    print(f"{strategy}: packed {packed:.3f}, padded {padded:.3f}")
    assert packed > 1 - high / LENGTH > 0.5 > 0.25 >= padded


def test_each_process_packs_its_own_share_and_resumes_with_the_same_rows():
    """P = 1 and 2: process p's rows hold exactly the first examples of its share (stream
    elements p, p + P, ...), none twice and none of another process; a stream restored from
    its state after 3 batches yields the batches the uninterrupted one does."""
    examples = synthetic(400, 3, 30)
    # 8 batches are 4 rounds of 8 rows; the state after 3 is in the middle of the second
    packing, seed, batch = Packing(LENGTH, bins=8), 5, 4
    for count in (1, 2):
        shares = []
        for index in range(count):
            shard = pipeline.HostShard(index, count)

            def stream(shard=shard):
                return pipeline.training_dataset(
                    [examples], lambda e: e, global_batch_size=batch * shard.count, seed=seed,
                    shard=shard, num_threads=1, packing=packing,
                )  # fmt: skip

            it = iter(stream())
            batches = [next(it) for _ in range(8)]
            got = [i for b in batches for r in range(batch) for i in samples_of(_row(b, r))]
            order = grain.MapDataset.source(range(len(examples))).shuffle(seed=seed).repeat()
            mine = order[index::count]
            assert sorted(got) == sorted(int(mine[k]) for k in range(len(got)))
            shares.append(set(got))
            resumed = iter(stream())
            first = iter(stream())
            for _ in range(3):
                next(first)
            resumed.set_state(first.get_state())
            for expected in batches[3:]:
                step = next(resumed)
                for key in expected:
                    np.testing.assert_array_equal(step[key], expected[key], err_msg=key)
        if count == 2:  # 8 batches hold fewer than an epoch: the shares are disjoint
            assert not shares[0] & shares[1]


def _row(batch: dict, r: int) -> dict:
    return {k: v[r] for k, v in batch.items()}


# ---------------------------------------------------------------------- losses and gradients


def float64_config(data, task: str):
    config = helpers.tiny_config(data, stage="full", batch=4, template="plain")
    if task == "lm":
        config.task, config.stage, config.trainable = "lm", None, {"decoder": True}
        config.model = dict(decoder="tiny_llama", decoder_overrides={"vocab_size": data["vocab"]})
        config.data.sources = [{"name": "specimens", "kind": "text", "size": 64}]
    else:
        tokenizer = tokenizer_for(config.data.tokenizer, image_token=True)
        config.model.image_token_id = tokenizer.token_to_id("<image>")
    if task == "fused":  # two towers: a tuple of images per row
        config.model.encoder = "tiny_dinov2_siglip"
    config.model.dtype = "float64"
    parts = ("decoder_overrides",) if task == "lm" else ("encoder_overrides", "decoder_overrides")
    for part in parts:
        config.model[part] = {**config.model.get(part, {}), "param_dtype": "float64"}
    return config


def per_sample_losses(model, batch: dict, is_vlm: bool) -> dict[bytes, list[float]]:
    """{a sample's tokens: [its summed next-token loss, one per occurrence]}, packed or not."""
    images = (batch["images"],) if is_vlm else ()
    out = model(batch["tokens"], *images, **decoder_inputs(batch))
    nll = optax.softmax_cross_entropy_with_integer_labels(
        out.logits[:, :-1], batch["tokens"][:, 1:]
    )
    nll = np.asarray(nll) * batch["loss_mask"][:, 1:]
    segments = batch.get("segment_ids", batch["input_mask"].astype(np.int32))
    losses: dict[bytes, list[float]] = {}
    for r in range(len(segments)):
        for s in range(1, int(segments[r].max()) + 1):
            key = batch["tokens"][r][segments[r] == s].tobytes()
            losses.setdefault(key, []).append(float(nll[r][segments[r][1:] == s].sum()))
    return losses


@pytest.mark.parametrize("task", ["vlm", "fused", "lm"])
def test_a_packed_batch_gives_each_example_its_unpacked_loss_and_gradients(data, task):
    """In float64, for a VLM, a VLM with a fused two-tower encoder and a decoder alone: a
    packed batch of 4 rows and the same examples one per padded row (the unpacked stream's
    first K, K the packed batch's sample count) give every example the same summed loss and
    the step the same loss sum, token count and gradients. Sums in another order differ by
    ~1e-16 relative; attention across samples or a misplaced image changes them by 1e-3 to 1
    (planted, measured), far beyond the 1e-10 allowed."""
    with jax.enable_x64(True):
        config = float64_config(data, task)
        config.data.packing = {"enabled": True}
        exp = experiment.build(config)
        is_vlm = task != "lm"
        tokenizer = tokenizer_for(config.data.tokenizer, image_token=is_vlm)
        ds, _, _ = train_inputs.train_dataset(
            exp.config, exp.model_cfg, tokenizer, pipeline.HostShard()
        )
        packed = next(iter(ds))
        count = int(packed["segment_ids"].max(axis=1).sum())
        assert count > 2 * len(packed["tokens"]), count
        plain_config = schema.resolve(config)
        plain_config.data.packing.enabled, plain_config.batch_size = False, count
        ds, _, _ = train_inputs.train_dataset(
            plain_config, exp.model_cfg, tokenizer, pipeline.HostShard()
        )
        plain = next(iter(ds))
        if is_vlm:
            first = packed["images"][0] if task == "fused" else packed["images"]
            assert first.ndim == 5 and (packed["tokens"] == config.model.image_token_id).any()

        params = init.random_params(exp.model_cfg, exp.param_shardings, 0)
        model = nnx.merge(exp.graphdef, params)
        got, expected = (per_sample_losses(model, b, is_vlm) for b in (packed, plain))
        assert got.keys() == expected.keys()  # the same examples, none dropped or repeated
        worst = max(
            abs(a - b) / max(abs(b), 1e-3)
            for key in expected
            for a, b in zip(sorted(got[key]), sorted(expected[key]), strict=True)
        )

        trainable, frozen = optim.split(params, exp.path_groups, exp.flags)
        loss_fn = exp.task.loss_fn(exp.flags)

        @jax.jit
        def summed(t, batch):
            def total(t):
                value, tokens, _ = loss_fn(nnx.merge(exp.graphdef, trees.merge(t, frozen)), batch)
                return value, tokens

            return jax.value_and_grad(total, has_aux=True)(t)

        results = [summed(trainable, jax.tree.map(jnp.asarray, b)) for b in (packed, plain)]
        ((total_p, tokens_p), grads_p), ((total_u, tokens_u), grads_u) = jax.device_get(results)
        grads_p, grads_u = trees.flatten(grads_p), trees.flatten(grads_u)
        # a key bias's true gradient is zero (it adds one q.b to all logits of a query): its
        # float noise (~1e-16) is measured against a floor of 1e-3, far below the largest
        # gradient of every other tensor (> 0.1)
        worst_grad = max(
            np.abs(grads_p[n] - g).max() / max(np.abs(g).max(), 1e-3) for n, g in grads_u.items()
        )
        print(
            f"{task}: {count} samples in 4 rows; worst loss {worst:.1e}, gradient {worst_grad:.1e}"
        )
        assert tokens_p == tokens_u > 0
        assert abs(total_p / total_u - 1) < 1e-10
        assert worst < 1e-10 and worst_grad < 1e-10


def test_packing_that_cannot_work_fails_before_compiling(data):
    config = helpers.tiny_config(data)
    config.data.packing = {"enabled": True, "max_images_per_row": 0}
    with pytest.raises(ValueError, match="config.data.packing.max_images_per_row=0"):
        experiment.build(config)
    config.data.packing = {"enabled": True, "strategy": "worst_fit"}
    with pytest.raises(ValueError, match="config.data.packing.strategy='worst_fit'"):
        experiment.build(config)
    config.data.packing = {"enabled": True}
    config.task = "contrastive"
    config.model = dict(encoder="tiny_clip", text={"vocab_size": data["vocab"], "width": 32,
                        "depth": 1, "num_heads": 2, "mlp_dim": 64})  # fmt: skip
    config.stage, config.trainable = None, {"image": True, "text": True, "heads": True}
    with pytest.raises(ValueError, match="packs next-token rows .* task 'contrastive'"):
        experiment.build(config)


# ---------------------------------------------------------------------- runs of fgjax.main


@pytest.fixture(scope="module")
def packed_run(data, tmp_path_factory):
    """An uninterrupted packed run of fgjax.main (align_llm, 8 steps of 4 rows, LLaVA's
    pretraining template: short examples, several per row), packing 6 rows at a time: the
    checkpoint at step 2 holds a packer state in the middle of its second 6 rows."""
    tmp = tmp_path_factory.mktemp("packed")
    config = helpers.tiny_config(data, stage="align_llm", steps=8, batch=4, template="plain")
    config.data.packing = {"enabled": True, "bins": 6}
    arg = helpers.config_file(tmp, config)
    subprocess.run(
        helpers.main_command(arg, tmp / "work"), env=helpers.env(), check=True, timeout=600
    )
    return {"config": config, "arg": arg, "workdir": tmp / "work"}


def test_a_packed_run_trains_and_logs_its_packing_efficiency(packed_run):
    """The loss falls; every log holds the efficiency (real tokens / row slots) and samples
    per row, and it beats the same data one example per row."""
    lines = (packed_run["workdir"] / "metrics.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in lines]
    losses = [r["loss"] for r in records]
    print("losses", np.round(losses, 3))
    assert losses[-1] < 0.8 * losses[0]
    config = schema.resolve(packed_run["config"])
    config.data.packing.enabled = False
    tokenizer = tokenizer_for(config.data.tokenizer, image_token=True)
    config.model.image_token_id = tokenizer.token_to_id("<image>")
    model_cfg = experiment.build(config).model_cfg
    ds, _, _ = train_inputs.train_dataset(config, model_cfg, tokenizer, pipeline.HostShard())
    it = iter(ds)
    padded = np.mean([next(it)["input_mask"].mean() for _ in range(8)])
    efficiency = [r["packing_efficiency"] for r in records]
    per_row = [r["samples_per_row"] for r in records]
    print(f"efficiency packed {np.mean(efficiency):.3f} (padded {padded:.3f}), samples per row "
          f"{np.mean(per_row):.2f}")  # fmt: skip
    assert min(efficiency) > 2 * padded and min(per_row) > 2


@pytest.mark.slow
def test_a_killed_packed_run_reruns_bit_identically(packed_run, tmp_path):
    """SIGKILL after step 3 is logged, rerun the same command: the same loss at every step
    and the same final parameters, bit for bit (the packer's state is in the checkpoint)."""
    workdir = tmp_path / "work"
    helpers.kill_after_step_and_rerun(helpers.main_command(packed_run["arg"], workdir), workdir)
    assert helpers.losses(workdir) == helpers.losses(packed_run["workdir"])
    helpers.assert_same_export(packed_run["workdir"], workdir)
