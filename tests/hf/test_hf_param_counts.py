"""Real-size presets: fgjax's parameter count (jax.eval_shape, no memory) equals the count
transformers reports for the published config (torch meta device, no memory), and the
HF -> fgjax config converter turns the published config into the preset.

The HF configs below are literal copies of the published config.json values (the fields
that matter), not derived from fgjax, so the comparison is not circular.
"""

import dataclasses

import hf_testing as ht
import pytest

from fgjax.hf import config_export, configs
from fgjax.models import param_count, presets

LLAMA2_7B = dict(
    architectures=["LlamaForCausalLM"], model_type="llama", vocab_size=32000, hidden_size=4096,
    intermediate_size=11008, num_hidden_layers=32, num_attention_heads=32,
    num_key_value_heads=32, hidden_act="silu", max_position_embeddings=4096,
    rms_norm_eps=1e-05, rope_scaling=None, tie_word_embeddings=False, bos_token_id=1,
    eos_token_id=2, pretraining_tp=1, torch_dtype="float16",
)  # fmt: skip
CLIP_L336 = dict(
    architectures=["CLIPVisionModel"], model_type="clip_vision_model", hidden_size=1024,
    image_size=336, intermediate_size=4096, num_attention_heads=16, num_hidden_layers=24,
    patch_size=14, projection_dim=768, hidden_act="quick_gelu", layer_norm_eps=1e-05,
)  # fmt: skip
GEMMA3_SIGLIP = dict(
    hidden_size=1152, image_size=896, intermediate_size=4304, model_type="siglip_vision_model",
    num_attention_heads=16, num_hidden_layers=27, patch_size=14, vision_use_head=False,
)  # fmt: skip
HF_CONFIGS = {
    # openai/clip-vit-large-patch14-336 (vision_config)
    "clip_l336": CLIP_L336,
    # apple/DFN5B-CLIP-ViT-H-14-378: open_clip "ViT-H-14-378-quickgelu" (quick_gelu: true)
    "dfn_h378": dict(
        architectures=["CLIPVisionModel"], model_type="clip_vision_model", hidden_size=1280,
        image_size=378, intermediate_size=5120, num_attention_heads=16, num_hidden_layers=32,
        patch_size=14, projection_dim=1024, hidden_act="quick_gelu", layer_norm_eps=1e-05,
    ),
    # google/siglip-so400m-patch14-384 and -224 (vision_config)
    "siglip_so400m384": dict(
        architectures=["SiglipVisionModel"], model_type="siglip_vision_model",
        hidden_size=1152, image_size=384, intermediate_size=4304, num_attention_heads=16,
        num_hidden_layers=27, patch_size=14,
    ),
    "siglip_so400m224": dict(
        architectures=["SiglipVisionModel"], model_type="siglip_vision_model",
        hidden_size=1152, image_size=224, intermediate_size=4304, num_attention_heads=16,
        num_hidden_layers=27, patch_size=14,
    ),
    # google/siglip-base-patch16-224 (vision_config: the class defaults)
    "siglip_b16_224": dict(
        architectures=["SiglipVisionModel"], model_type="siglip_vision_model", hidden_size=768,
        image_size=224, intermediate_size=3072, num_attention_heads=12, num_hidden_layers=12,
        patch_size=16,
    ),
    # facebook/dinov2-with-registers-large, facebook/dinov2-large
    "dinov2_l14_reg4": dict(
        architectures=["Dinov2WithRegistersModel"], model_type="dinov2_with_registers",
        hidden_size=1024, image_size=518, layer_norm_eps=1e-06, layerscale_value=1.0,
        mlp_ratio=4, num_attention_heads=16, num_channels=3, num_hidden_layers=24,
        num_register_tokens=4, patch_size=14, qkv_bias=True, use_swiglu_ffn=False,
        hidden_act="gelu",
    ),
    "dinov2_l14": dict(
        architectures=["Dinov2Model"], model_type="dinov2", hidden_size=1024, image_size=518,
        layer_norm_eps=1e-06, layerscale_value=1.0, mlp_ratio=4, num_attention_heads=16,
        num_channels=3, num_hidden_layers=24, patch_size=14, qkv_bias=True,
        use_swiglu_ffn=False, hidden_act="gelu",
    ),
    # facebook/dinov3-vits16-pretrain-lvd1689m, -vitb16-, -vitl16-: sizes, patch, image size
    # and 4 registers as published; the bias switches (no key bias), rope_theta 100,
    # layer_norm_eps 1e-5 and layerscale_value are left to DINOv3ViTConfig's documented
    # defaults, which these checkpoints use as far as we know (no copy here to check against)
    "dinov3_s16": dict(
        architectures=["DINOv3ViTModel"], model_type="dinov3_vit", hidden_size=384,
        intermediate_size=1536, num_hidden_layers=12, num_attention_heads=6, patch_size=16,
        image_size=224, num_register_tokens=4, hidden_act="gelu", use_gated_mlp=False,
    ),
    "dinov3_b16": dict(
        architectures=["DINOv3ViTModel"], model_type="dinov3_vit", hidden_size=768,
        intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12, patch_size=16,
        image_size=224, num_register_tokens=4, hidden_act="gelu", use_gated_mlp=False,
    ),
    "dinov3_l16": dict(
        architectures=["DINOv3ViTModel"], model_type="dinov3_vit", hidden_size=1024,
        intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16, patch_size=16,
        image_size=224, num_register_tokens=4, hidden_act="gelu", use_gated_mlp=False,
    ),
    # google/siglip2-so400m-patch14-384, google/siglip2-base-patch16-224 (vision_config of
    # their SiglipModel configs: SigLIP's architecture, SigLIP 2's weights)
    "siglip2_so400m384": dict(
        architectures=["SiglipVisionModel"], model_type="siglip_vision_model",
        hidden_size=1152, image_size=384, intermediate_size=4304, num_attention_heads=16,
        num_hidden_layers=27, patch_size=14,
    ),
    "siglip2_b16_224": dict(
        architectures=["SiglipVisionModel"], model_type="siglip_vision_model", hidden_size=768,
        image_size=224, intermediate_size=3072, num_attention_heads=12, num_hidden_layers=12,
        patch_size=16,
    ),
    # meta-llama/Llama-2-7b-hf; lmsys/vicuna-7b-v1.5 (same, with pad_token_id 0)
    "llama2_7b": LLAMA2_7B,
    "vicuna7b": {**LLAMA2_7B, "pad_token_id": 0},
    # meta-llama/Meta-Llama-3-8B, Llama-3.1-8B
    "llama3_8b": dict(
        architectures=["LlamaForCausalLM"], model_type="llama", vocab_size=128256,
        hidden_size=4096, intermediate_size=14336, num_hidden_layers=32,
        num_attention_heads=32, num_key_value_heads=8, hidden_act="silu",
        max_position_embeddings=8192, rms_norm_eps=1e-05, rope_scaling=None,
        rope_theta=500000.0, tie_word_embeddings=False, attention_bias=False,
        bos_token_id=128000, eos_token_id=128001,
    ),
    "llama31_8b": dict(
        architectures=["LlamaForCausalLM"], model_type="llama", vocab_size=128256,
        hidden_size=4096, intermediate_size=14336, num_hidden_layers=32,
        num_attention_heads=32, num_key_value_heads=8, hidden_act="silu",
        max_position_embeddings=131072, rms_norm_eps=1e-05, mlp_bias=False,
        rope_scaling=dict(factor=8.0, low_freq_factor=1.0, high_freq_factor=4.0,
                          original_max_position_embeddings=8192, rope_type="llama3"),
        rope_theta=500000.0, tie_word_embeddings=False, attention_bias=False,
        bos_token_id=128000, eos_token_id=128001,
    ),
    # mistralai/Mistral-7B-v0.1
    "mistral7b": dict(
        architectures=["MistralForCausalLM"], model_type="mistral", vocab_size=32000,
        hidden_size=4096, intermediate_size=14336, num_hidden_layers=32,
        num_attention_heads=32, num_key_value_heads=8, hidden_act="silu",
        max_position_embeddings=32768, rms_norm_eps=1e-05, rope_theta=10000.0,
        sliding_window=4096, tie_word_embeddings=False, bos_token_id=1, eos_token_id=2,
    ),
    # Qwen/Qwen2-7B
    "qwen2_7b": dict(
        architectures=["Qwen2ForCausalLM"], model_type="qwen2", vocab_size=152064,
        hidden_size=3584, intermediate_size=18944, num_hidden_layers=28,
        num_attention_heads=28, num_key_value_heads=4, hidden_act="silu",
        max_position_embeddings=131072, max_window_layers=28, rms_norm_eps=1e-06,
        rope_theta=1000000.0, sliding_window=131072, use_sliding_window=False,
        tie_word_embeddings=False, bos_token_id=151643, eos_token_id=151643,
    ),
    # google/gemma-2b (legacy hidden_act "gelu" means the tanh approximation)
    "gemma2b": dict(
        architectures=["GemmaForCausalLM"], model_type="gemma", vocab_size=256000,
        hidden_size=2048, intermediate_size=16384, num_hidden_layers=18, num_attention_heads=8,
        num_key_value_heads=1, head_dim=256, hidden_act="gelu", max_position_embeddings=8192,
        rms_norm_eps=1e-06, rope_scaling=None, rope_theta=10000.0, attention_bias=False,
        bos_token_id=2, eos_token_id=1, pad_token_id=0,
    ),
    # Qwen/Qwen2.5-7B-Instruct (a Qwen2 architecture)
    "qwen25_7b": dict(
        architectures=["Qwen2ForCausalLM"], model_type="qwen2", vocab_size=152064,
        hidden_size=3584, intermediate_size=18944, num_hidden_layers=28,
        num_attention_heads=28, num_key_value_heads=4, hidden_act="silu",
        max_position_embeddings=32768, max_window_layers=28, rms_norm_eps=1e-06,
        rope_theta=1000000.0, sliding_window=131072, use_sliding_window=False,
        tie_word_embeddings=False, bos_token_id=151643, eos_token_id=151645,
    ),
    # Qwen/Qwen3-8B, Qwen/Qwen3-0.6B
    "qwen3_8b": dict(
        architectures=["Qwen3ForCausalLM"], model_type="qwen3", vocab_size=151936,
        hidden_size=4096, intermediate_size=12288, num_hidden_layers=36, num_attention_heads=32,
        num_key_value_heads=8, head_dim=128, hidden_act="silu", max_position_embeddings=40960,
        max_window_layers=36, rms_norm_eps=1e-06, rope_scaling=None, rope_theta=1000000,
        sliding_window=None, use_sliding_window=False, tie_word_embeddings=False,
        attention_bias=False, bos_token_id=151643, eos_token_id=151645,
    ),
    "qwen3_0_6b": dict(
        architectures=["Qwen3ForCausalLM"], model_type="qwen3", vocab_size=151936,
        hidden_size=1024, intermediate_size=3072, num_hidden_layers=28, num_attention_heads=16,
        num_key_value_heads=8, head_dim=128, hidden_act="silu", max_position_embeddings=40960,
        max_window_layers=28, rms_norm_eps=1e-06, rope_scaling=None, rope_theta=1000000,
        sliding_window=None, use_sliding_window=False, tie_word_embeddings=True,
        attention_bias=False, bos_token_id=151643, eos_token_id=151645,
    ),
    # google/gemma-2-9b, google/gemma-2-27b
    "gemma2_9b": dict(
        architectures=["Gemma2ForCausalLM"], model_type="gemma2", vocab_size=256000,
        hidden_size=3584, intermediate_size=14336, num_hidden_layers=42, num_attention_heads=16,
        num_key_value_heads=8, head_dim=256, hidden_act="gelu_pytorch_tanh",
        hidden_activation="gelu_pytorch_tanh", max_position_embeddings=8192,
        query_pre_attn_scalar=256, rms_norm_eps=1e-06, rope_theta=10000.0, sliding_window=4096,
        attn_logit_softcapping=50.0, final_logit_softcapping=30.0, attention_bias=False,
        bos_token_id=2, eos_token_id=1, pad_token_id=0,
    ),
    "gemma2_27b": dict(
        architectures=["Gemma2ForCausalLM"], model_type="gemma2", vocab_size=256000,
        hidden_size=4608, intermediate_size=36864, num_hidden_layers=46, num_attention_heads=32,
        num_key_value_heads=16, head_dim=128, hidden_act="gelu_pytorch_tanh",
        hidden_activation="gelu_pytorch_tanh", max_position_embeddings=8192,
        query_pre_attn_scalar=144, rms_norm_eps=1e-06, rope_theta=10000.0, sliding_window=4096,
        attn_logit_softcapping=50.0, final_logit_softcapping=30.0, attention_bias=False,
        bos_token_id=2, eos_token_id=1, pad_token_id=0,
    ),
    # google/gemma-3-1b-pt; the (sparse) text_config of google/gemma-3-4b-pt and -27b-pt,
    # whose other fields are Gemma3TextConfig's defaults
    "gemma3_1b": dict(
        architectures=["Gemma3ForCausalLM"], model_type="gemma3_text", vocab_size=262144,
        hidden_size=1152, intermediate_size=6912, num_hidden_layers=26, num_attention_heads=4,
        num_key_value_heads=1, head_dim=256, hidden_activation="gelu_pytorch_tanh",
        max_position_embeddings=32768, query_pre_attn_scalar=256, rms_norm_eps=1e-06,
        rope_local_base_freq=10000, rope_scaling=None, rope_theta=1000000, sliding_window=512,
        sliding_window_pattern=6, attn_logit_softcapping=None, final_logit_softcapping=None,
        attention_bias=False, bos_token_id=2, eos_token_id=1, pad_token_id=0,
    ),
    "gemma3_4b": dict(
        architectures=["Gemma3ForCausalLM"], model_type="gemma3_text", hidden_size=2560,
        intermediate_size=10240, num_hidden_layers=34,
        rope_scaling=dict(factor=8.0, rope_type="linear"), sliding_window=1024,
    ),
    "gemma3_27b": dict(
        architectures=["Gemma3ForCausalLM"], model_type="gemma3_text", head_dim=128,
        hidden_size=5376, intermediate_size=21504, num_attention_heads=32, num_hidden_layers=62,
        num_key_value_heads=16, query_pre_attn_scalar=168,
        rope_scaling=dict(factor=8.0, rope_type="linear"), sliding_window=1024,
    ),
    # llava-hf/llava-1.5-7b-hf: a sparse text_config (LlamaConfig defaults fill the rest)
    "llava15_7b": dict(
        architectures=["LlavaForConditionalGeneration"], model_type="llava",
        image_token_index=32000, pad_token_id=32001, projector_hidden_act="gelu",
        text_config=dict(architectures=["LlamaForCausalLM"], max_position_embeddings=4096,
                         model_type="llama", rms_norm_eps=1e-05, vocab_size=32064),
        tie_word_embeddings=False, vision_config={**CLIP_L336, "vocab_size": 32000},
        vision_feature_layer=-2, vision_feature_select_strategy="default", vocab_size=32064,
    ),
    # google/gemma-3-4b-pt, -12b-pt: a sparse text_config (Gemma3TextConfig's defaults fill
    # the rest) and the SigLIP So400m/14 tower at 896 px without its head
    "gemma3_4b_vlm": dict(
        architectures=["Gemma3ForConditionalGeneration"], model_type="gemma3",
        boi_token_index=255999, eoi_token_index=256000, image_token_index=262144,
        mm_tokens_per_image=256,
        text_config=dict(hidden_size=2560, intermediate_size=10240, model_type="gemma3_text",
                         num_hidden_layers=34, rope_scaling=dict(factor=8.0, rope_type="linear"),
                         sliding_window=1024),
        vision_config=GEMMA3_SIGLIP,
    ),
    "gemma3_12b_vlm": dict(
        architectures=["Gemma3ForConditionalGeneration"], model_type="gemma3",
        boi_token_index=255999, eoi_token_index=256000, image_token_index=262144,
        mm_tokens_per_image=256,
        text_config=dict(hidden_size=3840, intermediate_size=15360, model_type="gemma3_text",
                         num_attention_heads=16, num_hidden_layers=48, num_key_value_heads=8,
                         rope_scaling=dict(factor=8.0, rope_type="linear"), sliding_window=1024),
        vision_config=GEMMA3_SIGLIP,
    ),
    # google/paligemma2-3b-pt-224: Gemma 2 2B with PaliGemma's 257216-token vocabulary
    "paligemma2_3b_224": dict(
        architectures=["PaliGemmaForConditionalGeneration"], model_type="paligemma",
        bos_token_id=2, eos_token_id=1, hidden_size=2048, image_token_index=257152,
        pad_token_id=0, projection_dim=2304,
        text_config=dict(attn_logit_softcapping=50.0, cache_implementation="hybrid",
                         final_logit_softcapping=30.0, head_dim=256,
                         hidden_activation="gelu_pytorch_tanh", hidden_size=2304,
                         intermediate_size=9216, model_type="gemma2", num_attention_heads=8,
                         num_hidden_layers=26, num_image_tokens=256, num_key_value_heads=4,
                         query_pre_attn_scalar=256, sliding_window=4096, vocab_size=257216),
        vision_config=dict(hidden_size=1152, intermediate_size=4304,
                           model_type="siglip_vision_model", num_attention_heads=16,
                           num_hidden_layers=27, num_image_tokens=256, num_positions=256,
                           patch_size=14, projection_dim=2304, vision_use_head=False),
    ),
}  # fmt: skip
HF_CONFIGS["vicuna7b_llava"] = {
    **LLAMA2_7B,
    "vocab_size": 32064,
    "pad_token_id": 32001,
}  # LLaVA-1.5's text model
del HF_CONFIGS["llava15_7b"]["vision_config"]["architectures"]


VLM_PRESETS = {
    "gemma3_4b_vlm": lambda: presets.gemma3_vlm("gemma3_4b"),
    "gemma3_12b_vlm": lambda: presets.gemma3_vlm("gemma3_12b"),
    "paligemma2_3b_224": lambda: presets.paligemma2(224),
}


def preset(name):
    if name == "llava15_7b":
        return presets.llava15_7b()
    if name in VLM_PRESETS:
        return VLM_PRESETS[name]()
    if name in presets.ENCODERS:
        return presets.encoder(name)
    return presets.decoder(name)


transformers_count = ht.transformers_count


# the fields a config.json does not decide (the preset picks the input resolution, and token
# ids are tokenizer metadata, e.g. Qwen2 lists a bos id that its tokenizer never adds)
_NOT_IN_HF = ("input_size", "bos_token_id", "eos_token_id", "pad_token_id")


def sizes(cfg, like):
    if hasattr(cfg, "encoder"):
        return dataclasses.replace(
            cfg, encoder=sizes(cfg.encoder, like.encoder), decoder=sizes(cfg.decoder, like.decoder)
        )
    return dataclasses.replace(cfg, **{k: getattr(like, k) for k in _NOT_IN_HF if hasattr(cfg, k)})


@pytest.mark.parametrize("name", list(HF_CONFIGS))
def test_param_count_equals_transformers(name):
    cfg = preset(name)
    ours, theirs = param_count(cfg), transformers_count(HF_CONFIGS[name])
    print(f"[params] {name}: fgjax {ours:,} transformers {theirs:,}")
    assert ours == theirs
    if name in ("llama2_7b", "vicuna7b"):
        assert ours == 6_738_415_616


@pytest.mark.parametrize("name", list(HF_CONFIGS))
def test_published_config_converts_to_the_preset(name):
    _, cfg = configs.from_hf(HF_CONFIGS[name])
    want, got = config_export.resolved(preset(name)), config_export.resolved(cfg)
    assert sizes(got, want) == want, config_export.diff(want, sizes(got, want))


@pytest.mark.parametrize(
    "name",
    [
        "dinov2_l14_reg4",
        "gemma2b",
        "llama31_8b",
        "llava15_7b",
        "qwen3_8b",
        "gemma2_9b",
        "gemma3_4b",
        "gemma3_4b_vlm",
        "paligemma2_3b_224",
    ],
)
def test_preset_written_as_hf_config_counts_the_same(name):
    """config_export.to_hf(preset) builds the same transformers model as the published config."""
    cfg = preset(name)
    assert transformers_count(config_export.to_hf(cfg)) == transformers_count(HF_CONFIGS[name])
