"""Hugging Face `config.json` dicts of the 2024-2025 VLM families -> fgjax configs: Qwen2.5-VL
(its native-resolution tower and an M-RoPE Qwen2), Qwen3-VL (its tower with DeepStack and an
interleaved-M-RoPE Qwen3), Gemma 3 and PaliGemma (SigLIP towers with Gemma decoders). They build on the decoder and tower readers of configs.py, whose `from_hf`
dispatches here (LLaVA-NeXT / OneVision: llava_next.py)."""

from __future__ import annotations

import dataclasses

from fgjax.hf.configs import UnsupportedModelError, _act, decoder_from_hf, vit_from_hf
from fgjax.models.config import ProjectorConfig, VitConfig, VLMConfig
from fgjax.models.qwen3_vl import Qwen3VLConfig, Qwen3VLVisionConfig
from fgjax.models.qwen_vision import Qwen25VisionConfig
from fgjax.models.qwen_vl import Qwen25VLConfig

# transformers' Qwen2_5_VLTextConfig defaults (its attention: head_dim = width / heads, q/k/v
# biases, no output bias: the Qwen2 family's)
_QWEN25_VL_TEXT_DEFAULTS = dict(
    vocab_size=152064, hidden_size=8192, intermediate_size=29568, num_hidden_layers=80,
    num_attention_heads=64, num_key_value_heads=8, hidden_act="silu",
    max_position_embeddings=32768, rms_norm_eps=1e-5, use_sliding_window=False,
    bos_token_id=151643, eos_token_id=151645, pad_token_id=None,
)  # fmt: skip
_QWEN25_VL_MROPE = (16, 24, 24)  # transformers' mrope_section when the config has none
_QWEN25_VL_TOP_LEVEL = ("architectures", "model_type", "text_config", "vision_config")


def qwen25_vision_from_hf(v: dict) -> Qwen25VisionConfig:
    """A Qwen2.5-VL `vision_config` dict (v4 and v5 schemas; absent fields at transformers'
    defaults) -> Qwen25VisionConfig."""
    rope = v.get("rope_parameters") or {}
    if rope.get("rope_type", "axial") != "axial":
        raise UnsupportedModelError(f"vision rope_type {rope['rope_type']!r}: only 'axial'")
    return Qwen25VisionConfig(
        width=v.get("hidden_size", 3584),
        depth=v.get("depth", v.get("num_hidden_layers", 32)),
        num_heads=v.get("num_heads", v.get("num_attention_heads", 16)),
        mlp_dim=v.get("intermediate_size", 3420),
        act=_act(v.get("hidden_act", "silu"), "vision_config"),
        patch_size=v.get("patch_size", 14),
        temporal_patch_size=v.get("temporal_patch_size", 2),
        num_channels=v.get("in_channels", v.get("in_chans", 3)),  # in_chans: v4 configs
        spatial_merge_size=v.get("spatial_merge_size", 2),
        window_size=v.get("window_size", 112),
        fullatt_block_indexes=tuple(v.get("fullatt_block_indexes", (7, 15, 23, 31))),
        out_dim=v.get("out_hidden_size", 3584),
        rope_theta=float(rope.get("rope_theta", 10000.0)),
    )


def qwen25_vl_from_hf(hf: dict) -> Qwen25VLConfig:
    """A Qwen2_5_VLForConditionalGeneration config dict -> Qwen25VLConfig. The text model's
    fields come from `text_config`, or, as transformers reads older configs, from the top
    level; rope_type "mrope" is the default RoPE with `mrope_section`."""
    text = hf.get("text_config")
    if text is None:
        text = {k: v for k, v in hf.items() if k not in _QWEN25_VL_TOP_LEVEL}
    text = {**_QWEN25_VL_TEXT_DEFAULTS, **text}
    params = dict(text.get("rope_parameters") or text.get("rope_scaling") or {})
    params.setdefault("rope_theta", text.get("rope_theta", 1_000_000.0))
    if params.get("rope_type", params.get("type", "default")) == "mrope":
        params["rope_type"] = "default"
    sections = tuple(params.pop("mrope_section", _QWEN25_VL_MROPE))
    # Qwen2.5-VL's attention ignores head_dim (width / heads); its text model is Qwen2's
    drop = ("head_dim", "rope_scaling", "rope_theta", "layer_types", "model_type")
    text = {k: v for k, v in text.items() if k not in drop}
    decoder = decoder_from_hf({**text, "model_type": "qwen2", "rope_parameters": params})
    decoder = dataclasses.replace(
        decoder,
        rope=dataclasses.replace(decoder.rope, mrope_section=sections),
        tie_embeddings=bool(hf.get("tie_word_embeddings") or text.get("tie_word_embeddings")),
    )
    vision = hf.get("vision_config") or {}
    return Qwen25VLConfig(
        encoder=qwen25_vision_from_hf(vision),
        decoder=decoder,
        image_token_id=hf.get("image_token_id", 151655),
        video_token_id=hf.get("video_token_id", 151656),
        vision_start_token_id=hf.get("vision_start_token_id", 151652),
        vision_end_token_id=hf.get("vision_end_token_id", 151653),
        tokens_per_second=vision.get("tokens_per_second", 4),
    )


# transformers' Qwen3VLTextConfig and Qwen3VLVisionConfig defaults (no bos / eos ids: the
# published text_config files carry Qwen's)
_QWEN3_VL_TEXT_DEFAULTS = dict(
    vocab_size=151936, hidden_size=4096, intermediate_size=22016, num_hidden_layers=32,
    num_attention_heads=32, num_key_value_heads=32, head_dim=128, hidden_act="silu",
    max_position_embeddings=128000, rms_norm_eps=1e-6, attention_bias=False,
    bos_token_id=None, eos_token_id=None, pad_token_id=None,
)  # fmt: skip
_QWEN3_VL_VISION_DEFAULTS = dict(
    depth=27, hidden_size=1152, hidden_act="gelu_pytorch_tanh", intermediate_size=4304,
    num_heads=16, in_channels=3, patch_size=16, spatial_merge_size=2, temporal_patch_size=2,
    out_hidden_size=3584, num_position_embeddings=2304, deepstack_visual_indexes=(8, 16, 24),
)  # fmt: skip
_QWEN3_VL_MROPE = (24, 20, 20)  # transformers' mrope_section when the config has none


def qwen3_vl_vision_from_hf(v: dict) -> Qwen3VLVisionConfig:
    """A Qwen3-VL `vision_config` dict (absent fields at transformers' defaults) ->
    Qwen3VLVisionConfig."""
    v = {**_QWEN3_VL_VISION_DEFAULTS, **v}
    rope = v.get("rope_parameters") or {}
    if rope.get("rope_type", "axial") != "axial":
        raise UnsupportedModelError(f"vision rope_type {rope['rope_type']!r}: only 'axial'")
    for key in ("patch_size", "temporal_patch_size"):
        if not isinstance(v[key], int):
            raise UnsupportedModelError(f"Qwen3-VL with a non-cubic {key}={v[key]}")
    return Qwen3VLVisionConfig(
        width=v["hidden_size"],
        depth=v["depth"],
        num_heads=v["num_heads"],
        mlp_dim=v["intermediate_size"],
        act=_act(v["hidden_act"], "vision_config"),
        patch_size=v["patch_size"],
        temporal_patch_size=v["temporal_patch_size"],
        num_channels=v["in_channels"],
        spatial_merge_size=v["spatial_merge_size"],
        out_dim=v["out_hidden_size"],
        rope_theta=float(rope.get("rope_theta", 10000.0)),
        num_position_embeddings=v["num_position_embeddings"],
        deepstack_indexes=tuple(v["deepstack_visual_indexes"]),
    )


def qwen3_vl_from_hf(hf: dict) -> Qwen3VLConfig:
    """A Qwen3VLForConditionalGeneration config dict -> Qwen3VLConfig: the text model is
    Qwen3's (head_dim as given, qk-norm); its RoPE is read from rope_parameters (v5) or
    rope_theta + rope_scaling (v4), mrope_section defaulting to (24, 20, 20) and always
    interleaved (transformers' Qwen3-VL ignores `mrope_interleaved`). The embeddings are
    tied as the top-level tie_word_embeddings says (what transformers reads)."""
    text = {**_QWEN3_VL_TEXT_DEFAULTS, **(hf.get("text_config") or {})}
    params = dict(text.get("rope_parameters") or text.get("rope_scaling") or {})
    params.setdefault("rope_theta", text.get("rope_theta", 500_000.0))
    sections = tuple(params.pop("mrope_section", _QWEN3_VL_MROPE))
    params.pop("mrope_interleaved", None)
    drop = ("rope_scaling", "rope_theta", "layer_types", "model_type", "tie_word_embeddings")
    text = {k: v for k, v in text.items() if k not in drop}
    text.update(model_type="qwen3", rope_parameters=params, use_sliding_window=False)
    decoder = decoder_from_hf(text)
    decoder = dataclasses.replace(
        decoder,
        rope=dataclasses.replace(decoder.rope, mrope_section=sections, mrope_interleaved=True),
        tie_embeddings=bool(hf.get("tie_word_embeddings", False)),
    )
    return Qwen3VLConfig(
        encoder=qwen3_vl_vision_from_hf(hf.get("vision_config") or {}),
        decoder=decoder,
        image_token_id=hf.get("image_token_id", 151655),
        video_token_id=hf.get("video_token_id", 151656),
        vision_start_token_id=hf.get("vision_start_token_id", 151652),
        vision_end_token_id=hf.get("vision_end_token_id", 151653),
    )


def gemma3_vlm_from_hf(hf: dict) -> VLMConfig:
    """A Gemma3ForConditionalGeneration config dict -> VLMConfig: a SigLIP tower's
    last_hidden_state, pooled to mm_tokens_per_image by Gemma 3's projector, into a Gemma 3
    decoder; each image's tokens attend both ways (transformers' token_type_ids blocks)."""
    c = {"mm_tokens_per_image": 256, "boi_token_index": 255_999, "eoi_token_index": 256_000,
         "image_token_index": 262_144, "tie_word_embeddings": True, **hf}  # fmt: skip
    # Gemma3ImageProcessor resizes bilinearly (SigLIP's and PaliGemma's bicubically)
    encoder = dataclasses.replace(_siglip_last_hidden_state(c, "Gemma 3"), resample="bilinear")
    decoder = decoder_from_hf({"model_type": "gemma3_text", **(c.get("text_config") or {})})
    if c["tie_word_embeddings"]:
        decoder = dataclasses.replace(decoder, tie_embeddings=True)
    eps = float((c.get("vision_config") or {}).get("layer_norm_eps", 1e-6))
    return VLMConfig(
        encoder=encoder,
        projector=ProjectorConfig(
            "gemma3", 1, False, tokens=c["mm_tokens_per_image"], norm_eps=eps
        ),
        decoder=decoder,
        image_token_id=c.get("image_token_id", c["image_token_index"]),
        image_layout="gemma3",
        image_attention="bidirectional",
        image_boundary_ids=(c["boi_token_index"], c["eoi_token_index"]),
    )


def paligemma_from_hf(hf: dict) -> VLMConfig:
    """A PaliGemmaForConditionalGeneration config dict (PaliGemma 1: Gemma text, 2: Gemma 2)
    -> VLMConfig: a SigLIP tower's last_hidden_state, a linear projector with bias and
    prefix-LM attention (image and prompt both ways). transformers counts PaliGemma's
    positions from 1, fgjax from 0: RoPE sees only their differences, so the model is the
    same (to float rounding: tests/hf/test_hf_paligemma.py)."""
    c = {"image_token_index": 256_000, "projection_dim": 2048, "tie_word_embeddings": True, **hf}
    encoder = _siglip_last_hidden_state(c, "PaliGemma")
    text = {"model_type": "gemma", **(c.get("text_config") or {})}
    # PaliGemmaConfig sets use_bidirectional_attention, which PaliGemmaModel overrides with its
    # own prefix-LM masks: it does not describe the decoder here
    text.pop("use_bidirectional_attention", None)
    decoder = decoder_from_hf(text)
    if c["projection_dim"] != decoder.width:
        raise UnsupportedModelError(
            f"PaliGemma with projection_dim={c['projection_dim']} != text hidden_size="
            f"{decoder.width}: the projected image features would not fit the decoder"
        )
    if c["tie_word_embeddings"]:
        decoder = dataclasses.replace(decoder, tie_embeddings=True)
    return VLMConfig(
        encoder=encoder,
        projector=ProjectorConfig("linear", 1, True),
        decoder=decoder,
        image_token_id=c.get("image_token_id", c["image_token_index"]),
        image_layout="before_bos",
        image_attention="prefix",
    )


def _siglip_last_hidden_state(c: dict, name: str) -> VitConfig:
    """The SigLIP tower of a Gemma 3 / PaliGemma config dict `c`, its features the post-normed
    last_hidden_state."""
    vision = {"model_type": "siglip_vision_model", **(c.get("vision_config") or {})}
    if vision["model_type"] != "siglip_vision_model":
        raise UnsupportedModelError(
            f"{name} with a {vision['model_type']!r} vision tower is not supported (SigLIP only)"
        )
    return dataclasses.replace(vit_from_hf(vision), feature_layer=-1, feature_norm=True)


READERS = {  # configs.ARCHITECTURES kind -> reader
    "qwen2_5_vl": qwen25_vl_from_hf,
    "qwen3_vl": qwen3_vl_from_hf,
    "gemma3_vlm": gemma3_vlm_from_hf,
    "paligemma": paligemma_from_hf,
}
