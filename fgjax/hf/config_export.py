"""fgjax configs -> Hugging Face `config.json` dicts (the v4 schema, which transformers v4
and v5 both read). `to_hf` refuses configs HF cannot express: reading its dict back with
`configs.from_hf` must give the same model.
"""

from __future__ import annotations

import dataclasses

from fgjax.hf.configs import UnsupportedModelError, from_hf
from fgjax.hf.llava_next import llava_next_to_hf
from fgjax.models.config import DecoderConfig, VitConfig, VLMConfig
from fgjax.models.llava_next import LlavaNextConfig
from fgjax.models.qwen3_vl import Qwen3VLConfig
from fgjax.models.qwen_vl import Qwen25VLConfig

_HF_ACTS = {
    "gelu": "gelu",
    "gelu_tanh": "gelu_pytorch_tanh",
    "quick_gelu": "quick_gelu",
    "silu": "silu",
}
# fields HF configs do not carry: kept from the fgjax config when checking a round trip
# (Qwen2.5-VL's fixed_size is the size it was trained at; transformers takes any size)
_RUNTIME_FIELDS = ("scan_layers", "remat", "attention", "dtype", "param_dtype", "input_size",
                   "fixed_size")  # fmt: skip

_DECODER_ARCHS = {
    "llama": "LlamaForCausalLM",
    "mistral": "MistralForCausalLM",
    "qwen2": "Qwen2ForCausalLM",
    "qwen3": "Qwen3ForCausalLM",
    "gemma": "GemmaForCausalLM",
    "gemma2": "Gemma2ForCausalLM",
    "gemma3": "Gemma3ForCausalLM",
}
_DECODER_MODEL_TYPES = {"gemma3": "gemma3_text"}


def _rope_scaling(rope) -> dict | None:
    if rope.rope_type == "linear":
        return {"rope_type": "linear", "factor": rope.factor}
    if rope.rope_type == "llama3":
        return {
            "rope_type": "llama3",
            "factor": rope.factor,
            "low_freq_factor": rope.low_freq_factor,
            "high_freq_factor": rope.high_freq_factor,
            "original_max_position_embeddings": rope.original_max_positions,
        }
    return None


def decoder_to_hf(cfg: DecoderConfig) -> dict:
    rope = cfg.rope
    scaling = _rope_scaling(rope)
    hf = {
        "architectures": [_DECODER_ARCHS[cfg.family]],
        "model_type": _DECODER_MODEL_TYPES.get(cfg.family, cfg.family),
        "vocab_size": cfg.vocab_size,
        "hidden_size": cfg.width,
        "intermediate_size": cfg.mlp_dim,
        "num_hidden_layers": cfg.depth,
        "num_attention_heads": cfg.num_heads,
        "num_key_value_heads": cfg.kv_heads,
        "head_dim": cfg.dim_per_head,
        "hidden_act": _HF_ACTS[cfg.act],
        "max_position_embeddings": cfg.max_positions,
        "rms_norm_eps": cfg.norm_eps,
        "rope_theta": rope.theta,
        "rope_scaling": scaling,
        "tie_word_embeddings": cfg.tie_embeddings,
        "bos_token_id": cfg.bos_token_id,
        "eos_token_id": cfg.eos_token_id,
        "pad_token_id": cfg.pad_token_id,
        "torch_dtype": cfg.param_dtype,
    }
    if cfg.family in ("llama", "gemma", "gemma2", "gemma3", "qwen3"):
        hf["attention_bias"] = cfg.out_bias
    if cfg.family == "llama":
        hf["mlp_bias"] = cfg.mlp_bias
    if cfg.family == "mistral":
        hf["sliding_window"] = cfg.sliding_window
    if cfg.family == "qwen2":
        hf["use_sliding_window"] = False
    if cfg.layer_types is not None:
        hf.update(layer_types=list(cfg.layer_types), sliding_window=cfg.sliding_window)
    if cfg.family == "qwen3":
        hf["use_sliding_window"] = cfg.layer_types is not None
    if cfg.family in ("gemma2", "gemma3"):
        del hf["hidden_act"]  # Gemma 2/3 read hidden_activation
        hf.update(
            hidden_activation=_HF_ACTS[cfg.act],
            query_pre_attn_scalar=int(cfg.query_pre_attn_scalar),  # an int in HF's schema
            attn_logit_softcapping=cfg.attn_softcap,
            final_logit_softcapping=cfg.final_softcap,
        )
    if cfg.family == "gemma3" and cfg.local_rope is not None:
        hf["rope_local_base_freq"] = cfg.local_rope.theta
    return hf


def vit_to_hf(cfg: VitConfig) -> dict:
    hf = {
        "hidden_size": cfg.width,
        "num_hidden_layers": cfg.depth,
        "num_attention_heads": cfg.num_heads,
        "image_size": cfg.image_size,
        "patch_size": cfg.patch_size,
        "num_channels": cfg.num_channels,
        "hidden_act": _HF_ACTS[cfg.act],
        "layer_norm_eps": cfg.norm_eps,
        "torch_dtype": cfg.param_dtype,
    }
    if cfg.family == "siglip":
        arch, model_type = "SiglipVisionModel", "siglip_vision_model"
        hf.update(intermediate_size=cfg.mlp_dim, vision_use_head=cfg.pool == "map")
    elif cfg.family == "clip":
        arch, model_type = "CLIPVisionModel", "clip_vision_model"
        hf.update(intermediate_size=cfg.mlp_dim)
    elif cfg.family == "dinov3":
        arch, model_type = "DINOv3ViTModel", "dinov3_vit"
        hf.update(_dinov3_fields(cfg))
    else:
        registers = cfg.num_registers > 0 or cfg.pos_interp == "bicubic_aa"
        arch = "Dinov2WithRegistersModel" if registers else "Dinov2Model"
        model_type = "dinov2_with_registers" if registers else "dinov2"
        ratio = cfg.mlp_dim / cfg.width
        hf.update(
            mlp_ratio=int(ratio) if ratio.is_integer() else ratio,
            qkv_bias=cfg.qkv_bias,
            layerscale_value=cfg.layer_scale_init,
            use_swiglu_ffn=False,
        )
        if registers:
            hf["num_register_tokens"] = cfg.num_registers
        else:
            hf["use_mask_token"] = cfg.mask_token
    return {"architectures": [arch], "model_type": model_type, **hf}


def _dinov3_fields(cfg: VitConfig) -> dict:
    if cfg.rope is None:
        raise UnsupportedModelError("a DINOv3 tower has 2-D RoPE positions: set rope")
    return dict(
        intermediate_size=cfg.mlp_dim,
        use_gated_mlp=cfg.mlp == "gated",
        query_bias=cfg.qkv_bias,
        key_bias=cfg.qkv_bias if cfg.key_bias is None else cfg.key_bias,
        value_bias=cfg.qkv_bias,
        proj_bias=cfg.out_bias,
        mlp_bias=cfg.mlp_bias,
        layerscale_value=cfg.layer_scale_init,
        num_register_tokens=cfg.num_registers,
        rope_theta=cfg.rope.theta,
    )


def vlm_to_hf(cfg: VLMConfig) -> dict:
    if not isinstance(cfg.encoder, VitConfig):
        raise UnsupportedModelError("HF LLaVA has a single vision tower; fused encoders differ")
    if cfg.projector.kind == "gemma3":
        return gemma3_vlm_to_hf(cfg)
    if cfg.projector.kind == "pixel_shuffle":
        from fgjax.hf.internvl import internvl_to_hf  # it builds on decoder_to_hf

        return internvl_to_hf(cfg)
    if cfg.image_attention == "prefix":
        return paligemma_to_hf(cfg)
    vision = vit_to_hf(cfg.encoder)
    del vision["architectures"], vision["torch_dtype"]
    text = decoder_to_hf(cfg.decoder)
    layer = cfg.encoder.feature_layer
    return {
        "architectures": ["LlavaForConditionalGeneration"],
        "model_type": "llava",
        "vision_config": vision,
        "text_config": text,
        "image_token_index": cfg.image_token_id,
        "image_seq_length": cfg.encoder.num_features,
        "vision_feature_layer": list(layer) if isinstance(layer, tuple) else layer,
        "vision_feature_select_strategy": (
            "default" if cfg.encoder.num_prefix_tokens and not cfg.encoder.keep_prefix else "full"
        ),
        "projector_hidden_act": "gelu",
        "multimodal_projector_bias": cfg.projector.bias,
        "tie_word_embeddings": cfg.decoder.tie_embeddings,
        "pad_token_id": cfg.decoder.pad_token_id,
        "torch_dtype": cfg.decoder.param_dtype,
    }


def qwen25_vl_to_hf(cfg: Qwen25VLConfig) -> dict:
    """The transformers 5 layout (text_config, vision_config), which transformers 4.5x reads
    too; rope as rope_theta + rope_scaling with the mrope_section."""
    text = decoder_to_hf(cfg.decoder)
    rope = cfg.decoder.rope
    scaling = _rope_scaling(rope) or {"rope_type": "default"}
    text.update(
        model_type="qwen2_5_vl_text",
        rope_scaling={**scaling, "mrope_section": list(rope.mrope_section)},
        use_sliding_window=False,
    )
    for key in ("architectures", "head_dim", "tie_word_embeddings", "torch_dtype"):
        del text[key]  # Qwen2.5-VL's attention takes head_dim = width / heads
    enc = cfg.encoder
    vision = {
        **_qwen_vision_to_hf(enc, "qwen2_5_vl"),
        "window_size": enc.window_size,
        "fullatt_block_indexes": list(enc.fullatt_block_indexes),
        "tokens_per_second": cfg.tokens_per_second,
    }
    return _qwen_vl_to_hf(cfg, "Qwen2_5_VLForConditionalGeneration", "qwen2_5_vl", text, vision)


def _qwen_vision_to_hf(enc, model_type: str) -> dict:
    """The vision_config fields Qwen2.5-VL's and Qwen3-VL's towers share."""
    return {
        "model_type": model_type,
        "depth": enc.depth,
        "hidden_size": enc.width,
        "num_heads": enc.num_heads,
        "intermediate_size": enc.mlp_dim,
        "hidden_act": _HF_ACTS[enc.act],
        "patch_size": enc.patch_size,
        "temporal_patch_size": enc.temporal_patch_size,
        "in_channels": enc.num_channels,
        "spatial_merge_size": enc.spatial_merge_size,
        "out_hidden_size": enc.out_dim,
        "rope_parameters": {"rope_type": "axial", "rope_theta": enc.rope_theta},
    }


def _qwen_vl_to_hf(cfg, architecture: str, model_type: str, text: dict, vision: dict) -> dict:
    """The top level of a Qwen2.5-VL / Qwen3-VL config.json."""
    return {
        "architectures": [architecture],
        "model_type": model_type,
        "text_config": text,
        "vision_config": vision,
        "image_token_id": cfg.image_token_id,
        "video_token_id": cfg.video_token_id,
        "vision_start_token_id": cfg.vision_start_token_id,
        "vision_end_token_id": cfg.vision_end_token_id,
        "tie_word_embeddings": cfg.decoder.tie_embeddings,
        "torch_dtype": cfg.decoder.param_dtype,
    }


def qwen3_vl_to_hf(cfg: Qwen3VLConfig) -> dict:
    """transformers 5's layout; rope as rope_theta + rope_scaling with the mrope_section
    (interleaved: transformers' Qwen3-VL interleaves whatever mrope_interleaved says, so a
    contiguous one reads back different and `to_hf` refuses it)."""
    text = decoder_to_hf(cfg.decoder)
    rope = cfg.decoder.rope
    scaling = _rope_scaling(rope) or {"rope_type": "default"}
    text.update(
        model_type="qwen3_vl_text",
        rope_scaling={**scaling, "mrope_section": list(rope.mrope_section),
                      "mrope_interleaved": True},
    )  # fmt: skip
    for key in ("architectures", "torch_dtype", "use_sliding_window"):
        del text[key]
    enc = cfg.encoder
    vision = {
        **_qwen_vision_to_hf(enc, "qwen3_vl_vision"),
        "num_position_embeddings": enc.num_position_embeddings,
        "deepstack_visual_indexes": list(enc.deepstack_indexes),
    }
    return _qwen_vl_to_hf(cfg, "Qwen3VLForConditionalGeneration", "qwen3_vl", text, vision)


def _vlm_parts(cfg: VLMConfig, decoder: DecoderConfig) -> dict:
    """vision_config and text_config of a Gemma 3 / PaliGemma config.json."""
    vision, text = vit_to_hf(cfg.encoder), decoder_to_hf(decoder)
    for part in (vision, text):
        del part["architectures"], part["torch_dtype"]
    return {"vision_config": vision, "text_config": text}


def gemma3_vlm_to_hf(cfg: VLMConfig) -> dict:
    """Gemma3ForConditionalGeneration (its projector's norm eps is the tower's)."""
    begin, end = cfg.image_boundary_ids or (None, None)
    return {
        "architectures": ["Gemma3ForConditionalGeneration"],
        "model_type": "gemma3",
        **_vlm_parts(cfg, cfg.decoder),
        "mm_tokens_per_image": cfg.projector.tokens,
        "boi_token_index": begin,
        "eoi_token_index": end,
        "image_token_index": cfg.image_token_id,
        "tie_word_embeddings": cfg.decoder.tie_embeddings,
        "torch_dtype": cfg.decoder.param_dtype,
    }


def paligemma_to_hf(cfg: VLMConfig) -> dict:
    """PaliGemmaForConditionalGeneration."""
    dec = cfg.decoder
    return {
        "architectures": ["PaliGemmaForConditionalGeneration"],
        "model_type": "paligemma",
        **_vlm_parts(cfg, dec),
        "image_token_index": cfg.image_token_id,
        "projection_dim": dec.width,
        "hidden_size": dec.width,
        "vocab_size": dec.vocab_size,
        "tie_word_embeddings": dec.tie_embeddings,
        "pad_token_id": dec.pad_token_id,
        "torch_dtype": dec.param_dtype,
    }


def to_hf(cfg) -> dict:
    """An fgjax config -> a config.json dict (v4 schema). Raises UnsupportedModelError when
    HF cannot express the config (reading the dict back must give the same model)."""
    if isinstance(cfg, Qwen3VLConfig):  # before Qwen25VLConfig, which it extends
        hf = qwen3_vl_to_hf(cfg)
    elif isinstance(cfg, Qwen25VLConfig):
        hf = qwen25_vl_to_hf(cfg)
    elif isinstance(cfg, VLMConfig):
        hf = vlm_to_hf(cfg)
        if isinstance(cfg, LlavaNextConfig):  # LLaVA's dict + the tiling fields
            hf = llava_next_to_hf(cfg, hf)
    elif isinstance(cfg, DecoderConfig):
        hf = decoder_to_hf(cfg)
    elif isinstance(cfg, VitConfig):
        hf = vit_to_hf(cfg)
    else:
        raise UnsupportedModelError(f"no HF model for {type(cfg).__name__}")
    _, back = from_hf(hf)
    want, got = _comparable(cfg, cfg), _comparable(back, cfg)
    if want != got:
        raise UnsupportedModelError(
            f"this {type(cfg).__name__} cannot be written as HF {hf['architectures'][0]}: "
            f"{diff(want, got)} (fgjax value vs what HF can express)"
        )
    return hf


def resolved(cfg):
    """`cfg` with head_dim and num_kv_heads spelled out (None means a default), so that
    equal models compare equal."""
    if isinstance(cfg, (VLMConfig, Qwen25VLConfig)):
        return dataclasses.replace(
            cfg, encoder=resolved(cfg.encoder), decoder=resolved(cfg.decoder)
        )
    return dataclasses.replace(cfg, head_dim=cfg.dim_per_head, num_kv_heads=cfg.kv_heads)


def _comparable(cfg, reference, standalone=True):
    """`cfg` resolved, with the fields HF configs do not carry taken from `reference`."""
    if isinstance(cfg, Qwen25VLConfig):
        return dataclasses.replace(
            cfg, encoder=_comparable(cfg.encoder, reference.encoder),
            decoder=_comparable(cfg.decoder, reference.decoder),
        )  # fmt: skip
    if isinstance(cfg, VLMConfig):
        return dataclasses.replace(
            cfg,
            encoder=_comparable(cfg.encoder, reference.encoder, standalone=False),
            decoder=_comparable(cfg.decoder, reference.decoder),
            image_layout=reference.image_layout,
        )
    cfg = resolved(cfg)
    keep = {k: getattr(reference, k) for k in _RUNTIME_FIELDS if hasattr(reference, k)}
    if isinstance(cfg, VitConfig) and standalone:
        keep.update(feature_layer=reference.feature_layer, keep_prefix=reference.keep_prefix)
    return dataclasses.replace(cfg, **keep)


def diff(a, b, prefix="") -> str:
    out = []
    for field in dataclasses.fields(a):
        x, y = getattr(a, field.name), getattr(b, field.name)
        if dataclasses.is_dataclass(x) and dataclasses.is_dataclass(y) and type(x) is type(y):
            sub = diff(x, y, f"{prefix}{field.name}.")
            out += [sub] if sub else []
        elif x != y:
            out.append(f"{prefix}{field.name}={x!r} vs {y!r}")
    return ", ".join(out)
