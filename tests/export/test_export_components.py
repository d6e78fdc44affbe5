"""Single components: a language model trained alone (task "lm") exports as its transformers
*ForCausalLM with tokenizer and chat template, a vision tower as its *VisionModel with its
image processor. The language model is written in several safetensors shards; the export
streams: its peak host
memory stays well below one copy of the model (a 120 MB decoder with scanned layers, whose
largest parameter is a seventh of it: reading one takes twice its size, a shard too)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import transformers as tf
from PIL import Image
from safetensors import safe_open

from fgjax import native
from fgjax.data import images
from fgjax.data.conversation import ConversationEncoder
from fgjax.data.tokenizer import load_tokenizer
from fgjax.hf.export import export_run
from fgjax.models import presets
from tests.export import runs
from tests.hf.hf_testing import rel_err

ROOT = Path(__file__).parents[2]
SHARD = 4 * 2**20


@pytest.fixture(scope="module")
def lm_run(dataset, tmp_path_factory):
    """(workdir, parameter bytes) of a finished language-model run with random weights."""
    cfg = presets.decoder(
        "tiny_llama", vocab_size=dataset["vocab"], width=512, depth=16, num_heads=8,
        mlp_dim=512,
    )  # fmt: skip
    workdir = tmp_path_factory.mktemp("lm_run")
    data = {"tokenizer": dataset["tokenizer"], "template": "vicuna_v1"}
    params = runs.finished_run(workdir, cfg, task="lm", data=data)
    return workdir, sum(x.nbytes for x in jax.tree.leaves(params))


@pytest.fixture(scope="module")
def exported(lm_run, tmp_path_factory):
    """(directory, {"before", "peak"} resident bytes) of `python -m fgjax.export` in 4 MiB shards."""
    workdir, _ = lm_run
    out = tmp_path_factory.mktemp("lm_hf") / "model"
    args = [f"--workdir={workdir}", f"--out={out}", f"--max_shard_size={SHARD}B"]
    done = subprocess.run(
        [sys.executable, str(Path(__file__).with_name("memory_worker.py")), *args],
        env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    return out, json.loads(done.stdout.strip().splitlines()[-1])


def test_streams_to_shards(lm_run, exported):
    out, memory = exported
    _, model_bytes = lm_run
    growth = memory["peak"] - memory["before"]
    print(f"[export memory] model {model_bytes / 2**20:.0f} MiB, peak growth "
          f"{growth / 2**20:.0f} MiB = {growth / model_bytes:.2f} x the model")  # fmt: skip
    assert growth < 0.6 * model_bytes
    index = json.loads((out / "model.safetensors.index.json").read_text())
    shards = sorted(set(index["weight_map"].values()))
    assert len(shards) >= 20 and index["metadata"]["total_size"] == model_bytes
    for shard in shards:  # none above the limit unless one tensor is
        with safe_open(out / shard, "np") as f:
            sizes = [f.get_slice(k).get_shape() for k in f.keys()]
        assert len(sizes) == 1 or os.path.getsize(out / shard) < SHARD + 2**16


def test_matches_transformers(lm_run, exported):
    workdir, _ = lm_run
    out, _ = exported
    model, cfg = native.load(workdir / "params_export")
    tokenizer = load_tokenizer(
        json.loads((workdir / "config.json").read_text())["data"]["tokenizer"]
    )
    encoder = ConversationEncoder(tokenizer, "vicuna_v1", num_image_tokens=1)
    tokens = encoder.encode_prompt("Name a striped bird.", has_image=False)

    hf_tokenizer = tf.AutoTokenizer.from_pretrained(out)
    messages = [{"role": "user", "content": "Name a striped bird."}]
    prompt = hf_tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    input_ids = hf_tokenizer(prompt, return_tensors="pt").input_ids
    np.testing.assert_array_equal(input_ids[0].numpy(), tokens)

    hf_model = tf.AutoModelForCausalLM.from_pretrained(out).eval()
    assert type(hf_model).__name__ == "LlamaForCausalLM"
    with torch.no_grad():
        reference = hf_model(input_ids).logits.numpy()
    err = rel_err(model(jnp.asarray(tokens)[None]).logits, reference)
    print(f"[export parity] lm logits max|diff|/max|ref| = {err:.2e}")
    assert err <= 1e-4


def test_vision_tower(tmp_path):
    """A CLIP tower alone -> CLIPVisionModel + its image processor (resize and centre crop)."""
    cfg = presets.encoder("tiny_clip")
    workdir = tmp_path / "run"
    runs.finished_run(workdir, cfg, task="encoder", data={"preprocess": None})
    result = export_run(workdir, tmp_path / "hf")
    assert result.architecture == "CLIPVisionModel"
    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (40, 64, 3), np.uint8))
    pixels = tf.AutoImageProcessor.from_pretrained(tmp_path / "hf")(image, return_tensors="pt")
    pixels = pixels["pixel_values"]
    ours = images.preprocess(image, images.preprocess_config_for(cfg))
    np.testing.assert_allclose(pixels[0].numpy().transpose(1, 2, 0), ours, rtol=0, atol=1e-6)
    hf_model = tf.CLIPVisionModel.from_pretrained(tmp_path / "hf").eval()
    with torch.no_grad():
        reference = hf_model(pixel_values=pixels)
    model, _ = native.load(workdir / "params_export")
    out = model(jnp.asarray(ours)[None])
    for name, got, want in (
        ("last_hidden_state", out.last_hidden_state, reference.last_hidden_state),
        ("pooled", out.pooled, reference.pooler_output),
    ):
        err = rel_err(got, want.numpy())
        print(f"[export parity] clip tower {name}: {err:.2e}")
        assert err <= 1e-4
