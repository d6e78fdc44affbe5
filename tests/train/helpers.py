"""Tiny training setups shared by the training tests: a LLaVA-format JSON dataset of small
images written to a temporary directory, a tokenizer trained on the fly, and a config."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import jax
import ml_collections
import numpy as np
from PIL import Image

from fgjax import native, rundir, trees
from fgjax.data.tokenizer_train import tiny_tokenizer

ROOT = Path(__file__).parents[2]

WORDS = "red green blue small large round square striped dotted bird flower leaf shell".split()


def write_dataset(root: Path, num_rows: int = 48, seed: int = 0) -> dict:
    """Writes images and a LLaVA-558K-style caption file (plus a few multi-turn and text-only
    rows); returns paths."""
    rng = np.random.RandomState(seed)
    (root / "images").mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(num_rows):
        image = (rng.rand(24 + i % 9, 32, 3) * 255).astype(np.uint8)
        Image.fromarray(image).save(root / "images" / f"{i}.png")
        words = " ".join(rng.choice(WORDS, size=2 + i % 5))  # unequal numbers of trained tokens
        turns = [
            {"from": "human", "value": "<image>\nDescribe it."},
            {"from": "gpt", "value": words},
        ]
        if i % 7 == 3:
            turns += [
                {"from": "human", "value": "And the colour?"},
                {"from": "gpt", "value": rng.choice(WORDS)},
            ]
        row = {"id": str(i), "image": f"{i}.png", "conversations": turns}
        if i % 11 == 5:
            row.pop("image")
            turns[0]["value"] = "Say something."
        rows.append(row)
    path = root / "data.json"
    path.write_text(json.dumps(rows))
    tok = tiny_tokenizer("bpe", vocab_size=300)
    tok.save(str(root / "tokenizer"))
    info = {
        "json": str(path),
        "images": str(root / "images"),
        "tokenizer": str(root / "tokenizer"),
        "vocab": tok.vocab_size,
    }
    (root / "data_info.json").write_text(json.dumps(info))
    return info


def tiny_config(
    data: dict, *, stage="align", steps=3, batch=8, accum=1, mesh=None, template="vicuna_v1"
) -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.job = "train"
    c.task = "vlm"
    c.seed = 0
    c.model = dict(
        encoder="tiny_clip",
        decoder="tiny_llama",
        projector="mlp2x_gelu",
        decoder_overrides={"vocab_size": data["vocab"]},
    )
    c.stage = stage
    c.optim = dict(lr=1e-2, warmup_steps=1, schedule="cosine", weight_decay=0.01, clip_norm=1.0)
    c.data = dict(
        sources=[{"name": "llava_json", "path": data["json"], "image_root": data["images"]}],
        tokenizer=data["tokenizer"],
        template=template,
        max_length=160,
        preprocess=None,
    )
    c.batch_size = batch
    c.grad_accum = accum
    c.num_steps = steps
    c.mesh = mesh or {"data": -1}
    c.checkpoint = dict(every_steps=2, keep=3, asynchronous=False)
    c.log_every = 1
    return c


def config_file(tmp_path: Path, config) -> str:
    path = tmp_path / "config.json"
    path.write_text(config.to_json())
    return f"{ROOT / 'configs' / 'json_file.py'}:{path}"


def main_command(config_arg: str, workdir: Path) -> list[str]:
    return [sys.executable, "-m", "fgjax.main", f"--config={config_arg}", f"--workdir={workdir}"]


def env() -> dict:
    return {**os.environ, "PYTHONPATH": str(ROOT)}


def losses(workdir: Path) -> dict[int, float]:
    """Loss per step from metrics.jsonl; a step logged twice (a resumed run that did not drop
    the steps after its checkpoint) fails."""
    out = {}
    for line in (workdir / "metrics.jsonl").read_text().splitlines():
        record = json.loads(line)
        assert record["step"] not in out, f"step {record['step']} logged twice"
        out[record["step"]] = record["loss"]
    return out


def exported(workdir: Path) -> dict:
    return trees.flatten(jax.device_get(native.load_params(workdir / rundir.PARAMS_EXPORT)))


def wait_for_step(workdir: Path, procs, step: int, timeout: float = 300) -> None:
    """Returns once the run in `workdir` has logged `step`; its processes must still run."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and all(p.poll() is None for p in procs):
        if (workdir / "metrics.jsonl").exists() and max(losses(workdir), default=0) >= step:
            break
        time.sleep(0.05)
    assert all(p.poll() is None for p in procs), f"the run ended before step {step} was logged"


def kill_after_step_and_rerun(command: list[str], workdir: Path, step: int = 3) -> None:
    """Runs `command`, SIGKILLs it once `step` is logged (before it exported), reruns it to the
    end."""
    proc = subprocess.Popen(command, env=env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)  # fmt: skip
    wait_for_step(workdir, [proc], step)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (workdir / rundir.PARAMS_EXPORT).exists()
    subprocess.run(command, env=env(), check=True, timeout=600)


def assert_same_export(expected_workdir: Path, workdir: Path) -> None:
    """The two runs' final parameters, bit for bit."""
    expected, got = exported(expected_workdir), exported(workdir)
    assert expected.keys() == got.keys()
    for name in expected:
        np.testing.assert_array_equal(got[name], expected[name], err_msg=name)


def first_batches(config, image_token: bool, count: int = 2) -> list[dict]:
    """The trainer's first `count` batches (numpy), rebuilt by the same pipeline from `config`
    (with its tokenizer, `<image>` added or not as the run adds it)."""
    from fgjax.data import pipeline
    from fgjax.data.tokenizer import tokenizer_for
    from fgjax.train import inputs, schema, tasks

    config = schema.resolve(config)
    model_cfg = tasks.get("vlm").model_config(config)
    tokenizer = tokenizer_for(config.data.tokenizer, image_token=image_token)
    ds, _, _ = inputs.train_dataset(config, model_cfg, tokenizer, pipeline.HostShard.current())
    batches = iter(ds)
    return [jax.tree.map(np.asarray, next(batches)) for _ in range(count)]


def vlm_loss(model, batch: dict) -> float:
    """The VLM training task's loss (sum / count over the loss tokens) of `model` on a batch,
    the tower frozen."""
    from flax import nnx

    from fgjax.train import tasks

    total, count, _ = nnx.jit(tasks.get("vlm").loss_fn({"encoder": False}))(model, batch)
    return float(total / count)


def check_vlm_training(label: str, model, reference_loss, batches, workdir, steps: int):
    """The training checks of an imported VLM family against transformers: on each batch the
    task's loss of the imported `model` equals `reference_loss(batch)` (transformers' loss with
    labels) to 1e-5 relative; the run in `workdir` logged every step once, its step-1 loss
    equal to batch 1's reference; its exported weights lower batch 1's loss by >= 10%.
    Returns the reference losses."""
    references = []
    for i, batch in enumerate(batches):
        references.append(reference_loss(batch))
        ours = vlm_loss(model, batch)
        err = abs(ours - references[-1]) / references[-1]
        print(f"[{label} loss] batch {i}: {ours:.7f}, transformers {references[-1]:.7f}: {err:.1e}")
        assert err <= 1e-5
    logged = losses(workdir)
    err = abs(logged[1] - references[0]) / references[0]
    print(f"[{label} training] logged losses {logged}; step 1 vs transformers {err:.1e}")
    assert sorted(logged) == list(range(1, steps + 1)) and err <= 1e-5
    trained = vlm_loss(native.load(Path(workdir) / "params_export")[0], batches[0])
    print(f"[{label} training] batch 1 after {steps} steps: {trained:.4f}")
    assert trained < 0.9 * logged[1]
    return references
