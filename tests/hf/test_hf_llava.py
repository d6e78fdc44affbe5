"""Parity of a full LLaVA loaded with fgjax.hf.load against transformers'
LlavaForConditionalGeneration (float32), image tokens in the middle of the text, for a CLIP
tower + Llama and a SigLIP tower + Gemma, and both on-disk key layouts."""

import hf_testing as ht
import numpy as np
import pytest
import torch
import transformers as tf
from flax import nnx
from safetensors.torch import load_file

import fgjax.hf
from fgjax.models import VLM

VISION = ht.VISION
TEXT = ht.TEXT
IMAGE_TOKEN = 255
CASES = {
    "clip_llama": lambda: tf.LlavaConfig(
        vision_config=tf.CLIPVisionConfig(**VISION),
        text_config=tf.LlamaConfig(**TEXT),
        image_token_index=IMAGE_TOKEN,
    ),
    # no CLS: strategy "full"; two feature layers concatenated (embeddings and the last block)
    "siglip_gemma": lambda: tf.LlavaConfig(
        vision_config=tf.SiglipVisionConfig(**VISION),
        text_config=tf.GemmaConfig(**{**TEXT, "num_key_value_heads": 1}, head_dim=32),
        image_token_index=IMAGE_TOKEN,
        vision_feature_select_strategy="full",
        vision_feature_layer=[-4, -1],
    ),
}
NUM_IMAGE_TOKENS = (32 // 8) ** 2


def prompt(batch=2, before=5, after=7, seed=3):
    """Tokens with the image placeholders in the middle of the text: (jax, torch)."""
    rng = np.random.default_rng(seed)
    text = rng.integers(0, IMAGE_TOKEN, (batch, before + after))
    image = np.full((batch, NUM_IMAGE_TOKENS), IMAGE_TOKEN)
    tokens = np.concatenate([text[:, :before], image, text[:, before:]], axis=1)
    return np.asarray(tokens, np.int32), torch.from_numpy(tokens)


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """saved(name) -> (transformers LLaVA, its directory, its reference logits)."""

    def reference(model):
        _, pixels = ht.images(2, 32, seed=5)
        return model(input_ids=prompt()[1], pixel_values=pixels).logits.numpy()

    cases = {name: lambda n=name: tf.LlavaForConditionalGeneration(CASES[n]()) for name in CASES}
    return ht.saved_models(tmp_path_factory, cases, reference)


@nnx.jit
def forward(model, tokens, images):
    return model(tokens, images).logits


def check_logits(label, model, reference):
    images, _ = ht.images(2, 32, seed=5)
    ht.check(label, forward(model, prompt()[0], images), reference)


@pytest.mark.parametrize("name", list(CASES))
def test_llava_parity(saved, name):
    _, path, reference = saved(name)
    model, cfg = fgjax.hf.load(path)
    assert isinstance(model, VLM) and cfg.image_token_id == IMAGE_TOKEN
    assert cfg.num_image_tokens == NUM_IMAGE_TOKENS
    check_logits(f"llava {name} logits", model, reference)


def test_on_disk_layout_is_legacy(saved):
    """transformers 5.24 writes the legacy layout, towers without `vision_model.`."""
    from safetensors import safe_open

    _, path, _ = saved("clip_llama")
    with safe_open(f"{path}/model.safetensors", "np") as f:
        keys = set(f.keys())
    assert "language_model.lm_head.weight" in keys
    assert "vision_tower.embeddings.class_embedding" in keys


@pytest.mark.parametrize("name", list(CASES))
def test_new_key_layout(saved, name, tmp_path):
    """The 4.52+ layout (model.vision_tower.vision_model.*, model.language_model.*, lm_head)."""
    _, path, reference = saved(name)
    renames = [
        ("language_model.lm_head.", "lm_head."),
        ("language_model.model.", "model.language_model."),
        ("vision_tower.", "model.vision_tower.vision_model."),
        ("multi_modal_projector.", "model.multi_modal_projector."),
    ]

    model, _ = fgjax.hf.load(ht.resave_renamed(path, tmp_path, renames), scan_layers=False)
    check_logits(f"llava {name} logits, new key layout, unrolled", model, reference)


@pytest.mark.parametrize("name", list(CASES))
def test_save_round_trip(saved, name, tmp_path):
    """fgjax.hf.save writes `vision_tower.vision_model.*` (read by every transformers
    version); transformers loads it back bit-exactly."""
    hf_model, path, _ = saved(name)
    model, cfg = fgjax.hf.load(path)
    fgjax.hf.save(model, tmp_path / "out")
    keys = load_file(tmp_path / "out" / "model.safetensors").keys()
    assert all(k.startswith("vision_tower.vision_model.") for k in keys if "vision" in k)
    again = tf.LlavaForConditionalGeneration.from_pretrained(tmp_path / "out")
    assert ht.state_dicts_equal(hf_model, again) == []
    assert fgjax.hf.load(tmp_path / "out")[1] == cfg
