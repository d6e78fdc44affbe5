"""Parity of fgjax vision towers loaded with fgjax.hf.load against transformers (float32):
last_hidden_state, the pooled output, and the VLM features (hidden_states[-2] minus the
prefix tokens)."""

import hf_testing as ht
import numpy as np
import pytest
import torch
import transformers as tf
from flax import nnx

import fgjax.hf

VIT = ht.VISION
DINO = {**{k: v for k, v in VIT.items() if k != "intermediate_size"}, "mlp_ratio": 2}
CASES = {
    "siglip": lambda: tf.SiglipVisionModel(tf.SiglipVisionConfig(**VIT)),
    "clip": lambda: tf.CLIPVisionModel(tf.CLIPVisionConfig(**VIT)),
    "dinov2": lambda: tf.Dinov2Model(tf.Dinov2Config(**DINO)),
    "dinov2_registers": lambda: tf.Dinov2WithRegistersModel(
        tf.Dinov2WithRegistersConfig(**DINO, num_register_tokens=2)
    ),
}
PREFIX = {"siglip": 0, "clip": 1, "dinov2": 1, "dinov2_registers": 3}


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """saved(name) -> (transformers model, its directory, None)."""
    return ht.saved_models(tmp_path_factory, CASES)


def compare(label, ours, hf_model, size, prefix, *, hf_call=None):
    """Checks last_hidden_state, pooled output and features at input `size`."""
    images, pixels = ht.images(2, size, seed=size)
    with torch.no_grad():
        ref = (hf_call or hf_model)(pixel_values=pixels, output_hidden_states=True)
    last, pooled, features = outputs(ours, images)
    ht.check(f"{label} last_hidden_state", last, ref.last_hidden_state)
    ht.check(f"{label} pooled", pooled, ref.pooler_output)
    ht.check(f"{label} features", features, ref.hidden_states[-2][:, prefix:])


@nnx.jit
def outputs(model, images):
    """One compiled call (faster than eager on this CPU): last, pooled, features."""
    out = model(images)
    return out.last_hidden_state, out.pooled, model.features(images)


@pytest.mark.parametrize(
    "name, size",
    [("siglip", 32), ("clip", 32), ("dinov2", 48), ("dinov2", 24), ("dinov2_registers", 24)],
)
def test_vision_parity(saved, name, size):
    """DINOv2 at sizes other than its config's 32: positions resampled bicubically (plain for
    Dinov2Model, antialiased for Dinov2WithRegistersModel), up and down."""
    hf_model, path, _ = saved(name)
    model, cfg = fgjax.hf.load(path)
    assert cfg.num_prefix_tokens == PREFIX[name]
    compare(f"{name} @{size}px", model, hf_model, size, PREFIX[name])


def test_unrolled_vision_parity(saved):
    hf_model, path, _ = saved("dinov2_registers")
    model, cfg = fgjax.hf.load(path, scan_layers=False)
    assert not cfg.scan_layers and cfg.pos_interp == "bicubic_aa"
    compare("dinov2_registers @24px, unrolled", model, hf_model, 24, 3)


def test_antialias_matters(saved):
    """Negative control: the plain bicubic path on the registers model misses parity when
    downsampling, so the DINOv2 resolution tests can tell the two paths apart."""
    hf_model, path, _ = saved("dinov2_registers")
    model, _ = fgjax.hf.load(path, pos_interp="bicubic")
    images, pixels = ht.images(2, 24, seed=24)
    with torch.no_grad():
        ref = hf_model(pixel_values=pixels).last_hidden_state
    assert ht.rel_err(outputs(model, images)[0], ref) > 10 * ht.TOL


def test_siglip_dual_encoder_vision_half(tmp_path):
    """A SiglipModel checkpoint (vision_model.* + text_model.*) loads as its vision tower."""
    torch.manual_seed(0)
    text = dict(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                num_attention_heads=4, bos_token_id=1, eos_token_id=2, pad_token_id=0)  # fmt: skip
    dual = ht.randomize(tf.SiglipModel(tf.SiglipConfig(vision_config=VIT, text_config=text)))
    model, cfg = fgjax.hf.load(ht.save_pretrained(dual, tmp_path))
    assert cfg.family == "siglip" and cfg.pool == "map"
    compare("SiglipModel vision half", model, dual, 32, 0, hf_call=dual.vision_model)


@pytest.mark.parametrize("name", list(CASES))
def test_save_round_trip(saved, name, tmp_path):
    hf_model, path, _ = saved(name)
    model, cfg = fgjax.hf.load(path)
    fgjax.hf.save(model, tmp_path / "out")
    again = type(hf_model).from_pretrained(tmp_path / "out")
    assert ht.state_dicts_equal(hf_model, again) == []
    assert fgjax.hf.load(tmp_path / "out")[1] == cfg


def test_dinov2_in_memory_key_names(saved, tmp_path):
    """A raw state_dict dump uses transformers' in-memory names (attention.q_proj...)."""
    hf_model, path, _ = saved("dinov2")
    state = hf_model.state_dict()
    assert any(".attention.q_proj." in k for k in state)
    model, _ = fgjax.hf.load(ht.save_state_dict(hf_model, path, tmp_path))
    reference, _ = fgjax.hf.load(path)
    np.testing.assert_array_equal(
        model.stack.blocks.attn.q.kernel[...], reference.stack.blocks.attn.q.kernel[...]
    )
