"""Acceptance of the HF export of trained VLMs: transformers' LlavaForConditionalGeneration
and AutoProcessor, given the raw image and the prompt text, reproduce fgjax's tokens, pixels,
logits (1e-4 relative, float32) and greedy generations; fgjax -> HF -> fgjax is bit-exact;
--step and --dtype pick and cast the parameters."""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import ml_collections
import ml_dtypes
import numpy as np
import pytest
import torch
import transformers as tf
from flax import nnx
from PIL import Image
from safetensors import safe_open

import fgjax.hf
from fgjax import native, trees
from fgjax.data import images
from fgjax.data.conversation import ConversationEncoder
from fgjax.data.tokenizer import tokenizer_for
from fgjax.hf.export import export_run
from fgjax.rundir import Run
from tests.hf.hf_testing import rel_err

TOWERS = ["clip", "siglip"]
QUESTION = "What is striped here?"
NEW_TOKENS = 20


@pytest.fixture(scope="module")
def exported(trained, tmp_path_factory):
    """exported(name) -> (the HF directory of the final parameters in float32, run workdir)."""
    cache = {}

    def get(name):
        if name not in cache:
            out = tmp_path_factory.mktemp(f"hf_{name}") / "model"
            result = export_run(trained(name), out, dtype="float32")
            assert result.format == "hf" and result.architecture == "LlavaForConditionalGeneration"
            cache[name] = out, trained(name)
        return cache[name]

    return get


def raw_image(seed=0) -> Image.Image:
    """A non-square photo-like image, so that letterbox / resize really act."""
    rng = np.random.default_rng(seed)
    pixels = np.cumsum(rng.integers(-20, 21, (45, 70, 3)), axis=1) + 128
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def fgjax_inputs(workdir, model_cfg):
    """fgjax's own prompt tokens i32[1, T] and pixels f32[1, S, S, 3] for QUESTION and the image."""
    config = json.loads((workdir / "config.json").read_text())
    data = ml_collections.ConfigDict(config["data"])
    tokenizer = tokenizer_for(data.tokenizer, image_token=True)
    encoder = ConversationEncoder.for_model(tokenizer, data.template, model_cfg)
    tokens = encoder.encode_prompt("<image>\n" + QUESTION, has_image=True)
    mode = config["data"]["preprocess"]
    pixels = images.preprocess(raw_image(), images.preprocess_config_for(model_cfg.encoder, mode))
    return tokens[None], pixels[None]


def hf_inputs(path):
    processor = tf.AutoProcessor.from_pretrained(path)
    messages = [
        {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": QUESTION}]}
    ]
    prompt = processor.apply_chat_template(messages, add_generation_prompt=True)
    return processor(images=raw_image(), text=prompt, return_tensors="pt")


@nnx.jit
def forward(model, tokens, pixels):
    return model(tokens, pixels).logits


@nnx.jit
def prefill(model, tokens, pixels, cache):
    out = model(tokens, pixels, cache=cache)
    return out.logits[:, -1], out.cache


@nnx.jit
def decode_step(model, token, cache):
    out = model.decoder(token[:, None], cache=cache)
    return out.logits[:, -1], out.cache


def greedy(model, tokens, pixels, steps: int) -> list[int]:
    """Greedy decoding over fgjax's KV cache: one prefill, then one token per step."""
    cache = model.decoder.init_cache(1, tokens.shape[1] + steps)
    logits, cache = prefill(model, jnp.asarray(tokens), jnp.asarray(pixels), cache)
    out = []
    for _ in range(steps):
        token = jnp.argmax(logits, axis=-1)
        out.append(int(token[0]))
        logits, cache = decode_step(model, token.astype(jnp.int32), cache)
    return out


@pytest.mark.parametrize("name", TOWERS)
def test_transformers_reproduces_fgjax(exported, name):
    """Same tokens and pixels from the HF processor, same logits and greedy tokens."""
    path, workdir = exported(name)
    model, cfg = native.load(workdir / "params_export")
    tokens, pixels = fgjax_inputs(workdir, cfg)
    inputs = hf_inputs(path)
    np.testing.assert_array_equal(inputs["input_ids"].numpy(), tokens)
    hf_pixels = inputs["pixel_values"].numpy().transpose(0, 2, 3, 1)
    np.testing.assert_allclose(hf_pixels, pixels, rtol=0, atol=1e-6)

    hf_model = tf.LlavaForConditionalGeneration.from_pretrained(path).eval()
    tokenizer = tokenizer_for(json.loads((workdir / "config.json").read_text())["data"]["tokenizer"],
                              image_token=True)  # fmt: skip
    text_config = json.loads((path / "config.json").read_text())["text_config"]
    for role in ("bos", "eos", "pad"):  # the run tokenizer's, not the preset's
        assert text_config[f"{role}_token_id"] == getattr(tokenizer, f"{role}_id"), role
    with torch.no_grad():
        reference = hf_model(**inputs).logits.numpy()
    err = rel_err(forward(model, jnp.asarray(tokens), jnp.asarray(pixels)), reference)
    print(f"[export parity] {name}: logits max|diff|/max|ref| = {err:.2e}")
    assert err <= 1e-4

    generated = hf_model.generate(
        **inputs, max_new_tokens=NEW_TOKENS, do_sample=False, eos_token_id=None, pad_token_id=0
    )[0, tokens.shape[1] :].tolist()
    ours = greedy(model, tokens, pixels, NEW_TOKENS)
    print(f"[export greedy] {name}: {ours}")
    assert len(generated) == NEW_TOKENS and generated == ours


@pytest.mark.parametrize("name", TOWERS)
def test_round_trip_is_bit_exact(exported, name):
    """fgjax (the run's parameters) -> HF directory -> fgjax.hf.load: every parameter equal."""
    path, workdir = exported(name)
    store, _ = Run.open(workdir).params()
    model, cfg = fgjax.hf.load(path)
    assert cfg.decoder.vocab_size == Run.open(workdir).model_cfg.decoder.vocab_size
    loaded = trees.flatten(jax.device_get(nnx.to_pure_dict(nnx.state(model, nnx.Param))))
    assert sorted(loaded) == sorted(store)
    different = [p for p in store if not np.array_equal(loaded[p], store[p])]
    assert different == []


def test_step_and_dtype(trained, tmp_path):
    """step=2 exports that checkpoint (not the final parameters), cast to bfloat16."""
    workdir = trained("clip")
    result = export_run(workdir, tmp_path / "bf16", step=2, dtype="bfloat16")
    assert result.source == "checkpoint step 2"
    step2, _ = Run.open(workdir).params(step=2)
    final, _ = Run.open(workdir).params()
    config = json.loads((tmp_path / "bf16" / "config.json").read_text())
    assert config["torch_dtype"] == config["text_config"]["torch_dtype"] == "bfloat16"
    with safe_open(tmp_path / "bf16" / "model.safetensors", "np") as f:
        head = f.get_tensor("language_model.lm_head.weight")
    assert head.dtype == ml_dtypes.bfloat16
    np.testing.assert_array_equal(head, step2["decoder/lm_head"].T.astype(ml_dtypes.bfloat16))
    assert not np.array_equal(step2["decoder/lm_head"], final["decoder/lm_head"])
    hf_model = tf.LlavaForConditionalGeneration.from_pretrained(tmp_path / "bf16")
    assert hf_model.lm_head.weight.dtype == torch.bfloat16


def test_native_on_request(trained, tmp_path):
    """format="native" writes fgjax's own format even for a model transformers can hold."""
    workdir = trained("siglip")
    result = export_run(workdir, tmp_path / "native", format="native", dtype="bfloat16", step=3)
    assert result.format == "native" and result.reason is None
    model, cfg = native.load(tmp_path / "native")
    assert cfg.decoder.param_dtype == cfg.encoder.param_dtype == "bfloat16"
    loaded = trees.flatten(jax.device_get(nnx.to_pure_dict(nnx.state(model, nnx.Param))))
    step3, _ = Run.open(workdir).params(step=3)
    assert sorted(loaded) == sorted(step3)
    assert all(np.array_equal(loaded[p], step3[p].astype(ml_dtypes.bfloat16)) for p in step3)
