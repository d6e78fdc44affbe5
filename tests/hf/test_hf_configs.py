"""The config converters: transformers' defaults for absent fields, both rope schemas,
overrides, and configs HF cannot express."""

import dataclasses

import pytest
import transformers as tf

from fgjax.hf import config_export, configs
from fgjax.models import presets

FAMILIES = {
    "LlamaForCausalLM": tf.LlamaConfig,
    "MistralForCausalLM": tf.MistralConfig,
    "Qwen2ForCausalLM": tf.Qwen2Config,
    "GemmaForCausalLM": tf.GemmaConfig,
    "Qwen3ForCausalLM": tf.Qwen3Config,
    "Gemma2ForCausalLM": tf.Gemma2Config,
    "Gemma3ForCausalLM": tf.Gemma3TextConfig,
    "SiglipVisionModel": tf.SiglipVisionConfig,
    "CLIPVisionModel": tf.CLIPVisionConfig,
    "Dinov2Model": tf.Dinov2Config,
    "Dinov2WithRegistersModel": tf.Dinov2WithRegistersConfig,
}


@pytest.mark.parametrize("arch", list(FAMILIES))
def test_absent_fields_take_transformers_defaults(arch):
    """A config.json naming only the architecture reads as transformers' default config."""
    config_class = FAMILIES[arch]
    _, sparse = configs.from_hf({"architectures": [arch], "model_type": config_class.model_type})
    _, full = configs.from_hf({"architectures": [arch], **config_class().to_dict()})
    assert sparse == full


def test_llava_defaults_and_top_level_fields():
    _, cfg = configs.from_hf(tf.LlavaConfig().to_dict())
    assert cfg.encoder.family == "clip" and cfg.encoder.feature_layer == -2
    assert not cfg.encoder.keep_prefix and cfg.image_token_id == 32000
    _, tied = configs.from_hf({**tf.LlavaConfig().to_dict(), "tie_word_embeddings": True})
    assert tied.decoder.tie_embeddings  # transformers 5 ties if either level says so


def test_overrides_reach_the_right_config():
    hf = config_export.to_hf(presets.vlm("tiny_siglip", "tiny_llama"))
    _, cfg = configs.from_hf(hf, feature_layer=-1, remat="full", image_layout="after_bos")
    assert cfg.encoder.feature_layer == -1 and cfg.image_layout == "after_bos"
    assert cfg.encoder.remat == cfg.decoder.remat == "full"
    with pytest.raises(TypeError, match="has a field 'no_such_field'"):
        configs.from_hf(hf, no_such_field=1)


@pytest.mark.parametrize(
    "name", ["tiny_siglip", "tiny_clip", "tiny_dinov2", "tiny_llama", "tiny_qwen2", "tiny_gemma"]
)
def test_to_hf_round_trip(name):
    cfg = presets.encoder(name) if name in presets.ENCODERS else presets.decoder(name)
    _, back = configs.from_hf(config_export.to_hf(cfg))
    assert config_export.resolved(back) == config_export.resolved(cfg)


def test_to_hf_refuses_what_hf_cannot_express():
    cfg = dataclasses.replace(presets.decoder("tiny_llama"), qkv_bias=True)  # o_proj bias-free
    with pytest.raises(configs.UnsupportedModelError, match="qkv_bias=True vs False"):
        config_export.to_hf(cfg)
    with pytest.raises(configs.UnsupportedModelError, match="single vision tower"):
        config_export.to_hf(presets.vlm("tiny_dinov2_siglip", "tiny_llama"))
