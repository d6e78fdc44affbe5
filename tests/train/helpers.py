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
