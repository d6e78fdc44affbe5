"""Hugging Face `config.json` dicts -> fgjax configs (the way back is in config_export.py).

`from_hf(hf)` reads the v4 schema (`rope_theta` / `rope_scaling`) and the v5 one
(`rope_parameters`), filling absent fields with transformers' class defaults (published
configs such as LLaVA-1.5's `text_config` rely on them).
"""

from __future__ import annotations

import dataclasses

from fgjax.models.config import DecoderConfig, ProjectorConfig, RopeConfig, VitConfig, VLMConfig
from fgjax.models.qwen_vl import Qwen25VLConfig

# architecture name in config.json -> fgjax model kind
ARCHITECTURES = {
    "LlamaForCausalLM": "llama",
    "MistralForCausalLM": "mistral",
    "Qwen2ForCausalLM": "qwen2",
    "Qwen3ForCausalLM": "qwen3",
    "GemmaForCausalLM": "gemma",
    "Gemma2ForCausalLM": "gemma2",
    "Gemma3ForCausalLM": "gemma3",
    "SiglipVisionModel": "siglip",
    "SiglipModel": "siglip",  # the vision half of a dual encoder
    "CLIPVisionModel": "clip",
    "CLIPModel": "clip",
    "Dinov2Model": "dinov2",
    "Dinov2WithRegistersModel": "dinov2",
    "DINOv3ViTModel": "dinov3",
    "LlavaForConditionalGeneration": "llava",
    "Gemma3ForConditionalGeneration": "gemma3_vlm",
    "PaliGemmaForConditionalGeneration": "paligemma",
    "Qwen2_5_VLForConditionalGeneration": "qwen2_5_vl",
    "Qwen3VLForConditionalGeneration": "qwen3_vl",
    "LlavaNextForConditionalGeneration": "llava_next",
    "LlavaOnevisionForConditionalGeneration": "llava_onevision",
    "InternVLForConditionalGeneration": "internvl",
}
_MODEL_TYPES = {  # fallback when `architectures` is absent
    "llama": "LlamaForCausalLM",
    "mistral": "MistralForCausalLM",
    "qwen2": "Qwen2ForCausalLM",
    "qwen3": "Qwen3ForCausalLM",
    "gemma": "GemmaForCausalLM",
    "gemma2": "Gemma2ForCausalLM",
    "gemma3_text": "Gemma3ForCausalLM",
    "siglip_vision_model": "SiglipVisionModel",
    "siglip": "SiglipModel",
    "clip_vision_model": "CLIPVisionModel",
    "clip": "CLIPModel",
    "dinov2": "Dinov2Model",
    "dinov2_with_registers": "Dinov2WithRegistersModel",
    "dinov3_vit": "DINOv3ViTModel",
    "llava": "LlavaForConditionalGeneration",
    "gemma3": "Gemma3ForConditionalGeneration",
    "paligemma": "PaliGemmaForConditionalGeneration",
    "qwen2_5_vl": "Qwen2_5_VLForConditionalGeneration",
    "qwen3_vl": "Qwen3VLForConditionalGeneration",
    "llava_next": "LlavaNextForConditionalGeneration",
    "llava_onevision": "LlavaOnevisionForConditionalGeneration",
    "internvl": "InternVLForConditionalGeneration",
}

# transformers' config-class defaults for the fields fgjax reads
_DECODER_DEFAULTS = {
    "llama": dict(vocab_size=32000, hidden_size=4096, intermediate_size=11008,
                  num_hidden_layers=32, num_attention_heads=32, hidden_act="silu",
                  max_position_embeddings=2048, rms_norm_eps=1e-6, tie_word_embeddings=False,
                  bos_token_id=1, eos_token_id=2, attention_bias=False, mlp_bias=False),
    "mistral": dict(vocab_size=32000, hidden_size=4096, intermediate_size=14336,
                    num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=8,
                    hidden_act="silu", max_position_embeddings=131072, rms_norm_eps=1e-6,
                    tie_word_embeddings=False, bos_token_id=1, eos_token_id=2,
                    sliding_window=4096),
    "qwen2": dict(vocab_size=151936, hidden_size=4096, intermediate_size=22016,
                  num_hidden_layers=32, num_attention_heads=32, hidden_act="silu",
                  max_position_embeddings=32768, rms_norm_eps=1e-6, tie_word_embeddings=False,
                  bos_token_id=None, eos_token_id=None, use_sliding_window=False),
    "qwen3": dict(vocab_size=151936, hidden_size=4096, intermediate_size=22016,
                  num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=32,
                  head_dim=128, hidden_act="silu", max_position_embeddings=32768,
                  rms_norm_eps=1e-6, tie_word_embeddings=False, attention_bias=False,
                  use_sliding_window=False, sliding_window=4096, max_window_layers=28,
                  bos_token_id=None, eos_token_id=None),
    "gemma": dict(vocab_size=256000, hidden_size=3072, intermediate_size=24576,
                  num_hidden_layers=28, num_attention_heads=16, head_dim=256,
                  hidden_act="gelu_pytorch_tanh", max_position_embeddings=8192,
                  rms_norm_eps=1e-6, tie_word_embeddings=True, bos_token_id=2, eos_token_id=1,
                  pad_token_id=0, attention_bias=False),
    "gemma2": dict(vocab_size=256000, hidden_size=2304, intermediate_size=9216,
                   num_hidden_layers=26, num_attention_heads=8, num_key_value_heads=4,
                   head_dim=256, hidden_activation="gelu_pytorch_tanh",
                   max_position_embeddings=8192, rms_norm_eps=1e-6, tie_word_embeddings=True,
                   bos_token_id=2, eos_token_id=1, pad_token_id=0, attention_bias=False,
                   query_pre_attn_scalar=256, sliding_window=4096,
                   final_logit_softcapping=30.0, attn_logit_softcapping=50.0),
    "gemma3": dict(vocab_size=262208, hidden_size=2304, intermediate_size=9216,
                   num_hidden_layers=26, num_attention_heads=8, num_key_value_heads=4,
                   head_dim=256, hidden_activation="gelu_pytorch_tanh",
                   max_position_embeddings=131072, rms_norm_eps=1e-6, tie_word_embeddings=True,
                   bos_token_id=2, eos_token_id=1, pad_token_id=0, attention_bias=False,
                   query_pre_attn_scalar=256, sliding_window=4096, sliding_window_pattern=6,
                   final_logit_softcapping=None, attn_logit_softcapping=None),
}  # fmt: skip
# HF's text model_type -> fgjax family, where they differ
_DECODER_MODEL_TYPES = {"gemma3_text": "gemma3"}
_VISION_DEFAULTS = {
    "siglip": dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
                   num_attention_heads=12, num_channels=3, image_size=224, patch_size=16,
                   hidden_act="gelu_pytorch_tanh", layer_norm_eps=1e-6, vision_use_head=True),
    "clip": dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
                 num_attention_heads=12, num_channels=3, image_size=224, patch_size=32,
                 hidden_act="quick_gelu", layer_norm_eps=1e-5),
    "dinov2": dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, mlp_ratio=4,
                   hidden_act="gelu", layer_norm_eps=1e-6, image_size=224, patch_size=14,
                   num_channels=3, qkv_bias=True, layerscale_value=1.0, use_swiglu_ffn=False,
                   use_mask_token=True, num_register_tokens=0),
    "dinov3": dict(hidden_size=384, intermediate_size=1536, num_hidden_layers=12,
                   num_attention_heads=6, hidden_act="gelu", layer_norm_eps=1e-5,
                   rope_theta=100.0, image_size=224, patch_size=16, num_channels=3,
                   query_bias=True, key_bias=False, value_bias=True, proj_bias=True,
                   mlp_bias=True, layerscale_value=1.0, use_gated_mlp=False,
                   num_register_tokens=0),
}  # fmt: skip
_VISION_MODEL_TYPES = {
    "siglip_vision_model": "siglip",
    "clip_vision_model": "clip",
    "dinov2": "dinov2",
    "dinov2_with_registers": "dinov2",
    "dinov3_vit": "dinov3",
}

_ACTS = {
    "gelu": "gelu",
    "gelu_pytorch_tanh": "gelu_tanh",
    "gelu_new": "gelu_tanh",
    "quick_gelu": "quick_gelu",
    "silu": "silu",
    "swish": "silu",
}


class UnsupportedModelError(ValueError):
    """The config describes a model (or a variant of one) that fgjax cannot represent."""


def architecture(hf: dict) -> str:
    """The supported architecture name of a config.json dict, or UnsupportedModelError."""
    names = list(hf.get("architectures") or [])
    if not names and hf.get("model_type") in _MODEL_TYPES:
        names = [_MODEL_TYPES[hf["model_type"]]]
    for name in names:
        if name in ARCHITECTURES:
            return name
    found = names or [f"model_type={hf.get('model_type')!r}"]
    raise UnsupportedModelError(
        f"unsupported architecture {', '.join(map(str, found))}; fgjax.hf supports "
        f"{', '.join(ARCHITECTURES)}"
    )


def _act(name: str, where: str) -> str:
    if name not in _ACTS:
        raise UnsupportedModelError(
            f"{where}: activation {name!r} is not supported ({list(_ACTS)})"
        )
    return _ACTS[name]


def _rope(hf: dict) -> RopeConfig:
    """RoPE settings from either schema: v5 `rope_parameters`, v4 `rope_theta` + `rope_scaling`."""
    params = dict(hf.get("rope_parameters") or {})
    if not params:
        params = dict(hf.get("rope_scaling") or {})
        params.setdefault("rope_theta", hf.get("rope_theta", 10000.0))
    return _rope_from_parameters(params)


def _gemma3_ropes(hf: dict) -> tuple[RopeConfig, RopeConfig]:
    """Gemma 3's (full-layer, sliding-layer) RoPE: v5 `rope_parameters` keyed by layer type, or
    v4 `rope_theta` + `rope_scaling` (full) and `rope_local_base_freq` (sliding)."""
    params = hf.get("rope_parameters") or {}
    if "full_attention" in params or "sliding_attention" in params:
        full = dict(params.get("full_attention") or {"rope_type": "default"})
        local = dict(params.get("sliding_attention") or {"rope_type": "default"})
    else:
        full = {"rope_type": "default", **(hf.get("rope_scaling") or {})}
        full.setdefault("rope_theta", hf.get("rope_theta"))
        local = {"rope_type": "default", "rope_theta": hf.get("rope_local_base_freq")}
    full["rope_theta"] = full.get("rope_theta") or 1_000_000.0  # transformers' defaults
    local["rope_theta"] = local.get("rope_theta") or 10_000.0
    return _rope_from_parameters(full), _rope_from_parameters(local)


def _rope_from_parameters(params: dict) -> RopeConfig:
    kind = params.get("rope_type", params.get("type", "default"))
    if kind not in ("default", "linear", "llama3"):
        raise UnsupportedModelError(
            f"rope_type {kind!r} is not supported; fgjax supports 'default', 'linear', 'llama3'"
        )
    rope = RopeConfig(theta=float(params["rope_theta"]), rope_type=kind)
    if kind == "linear":
        rope = dataclasses.replace(rope, factor=float(params["factor"]))
    if kind == "llama3":
        rope = dataclasses.replace(
            rope,
            factor=float(params["factor"]),
            low_freq_factor=float(params["low_freq_factor"]),
            high_freq_factor=float(params["high_freq_factor"]),
            original_max_positions=int(params["original_max_position_embeddings"]),
        )
    return rope


def decoder_from_hf(hf: dict) -> DecoderConfig:
    """A Llama / Mistral / Qwen2 / Qwen3 / Gemma 1-3 config.json dict (or a VLM's text_config)
    -> DecoderConfig."""
    model_type = hf.get("model_type", "llama")
    family = _DECODER_MODEL_TYPES.get(model_type, model_type)
    if family not in _DECODER_DEFAULTS:
        raise UnsupportedModelError(
            f"text model_type {model_type!r} is not supported; use one of "
            f"{[m for m in _MODEL_TYPES if m in _DECODER_DEFAULTS or m in _DECODER_MODEL_TYPES]}"
        )
    c = {**_DECODER_DEFAULTS[family], **hf}
    eos = c.get("eos_token_id")
    width, heads = c["hidden_size"], c["num_attention_heads"]
    head_dim = c.get("head_dim")
    if family == "qwen2" and c.get("use_sliding_window"):
        raise UnsupportedModelError("Qwen2 with use_sliding_window=true is not supported")
    if c.get("use_bidirectional_attention"):
        raise UnsupportedModelError(
            f"{model_type} with use_bidirectional_attention=true (an embedding model, not a "
            "decoder) is not supported"
        )
    gemma = family.startswith("gemma")
    if gemma:  # transformers reads the legacy "gelu" as the tanh approximation
        act = c.get("hidden_activation") or c["hidden_act"]
        act = "gelu_tanh" if act == "gelu" else _act(act, family)
    else:
        act = _act(c["hidden_act"], family)
    bias = bool(c.get("attention_bias", False))
    layers = _layer_kinds(family, c)
    rope, local_rope = _gemma3_ropes(hf) if family == "gemma3" else (_rope(hf), None)
    window = c.get("sliding_window") if family == "mistral" or layers is not None else None
    return DecoderConfig(
        family=family,
        vocab_size=c["vocab_size"],
        width=width,
        depth=c["num_hidden_layers"],
        num_heads=heads,
        num_kv_heads=kv if (kv := c.get("num_key_value_heads")) and kv != heads else None,
        head_dim=head_dim if head_dim and head_dim != width // heads else None,
        mlp_dim=c["intermediate_size"],
        norm_eps=float(c["rms_norm_eps"]),
        norm_add_one=gemma,
        act=act,
        qkv_bias=family == "qwen2" or bias,
        out_bias=bias,
        mlp_bias=bool(c.get("mlp_bias", False)),
        rope=rope,
        sliding_window=window,
        qk_norm=family in ("qwen3", "gemma3"),
        query_pre_attn_scalar=_float(c.get("query_pre_attn_scalar")) if gemma else None,
        attn_softcap=_float(c.get("attn_logit_softcapping")),
        sandwich_norm=family in ("gemma2", "gemma3"),
        layer_types=layers,
        local_rope=local_rope,
        final_softcap=_float(c.get("final_logit_softcapping")),
        tie_embeddings=bool(c["tie_word_embeddings"]),
        embed_scale=gemma,
        max_positions=c["max_position_embeddings"],
        bos_token_id=c.get("bos_token_id"),
        eos_token_id=tuple(eos) if isinstance(eos, list) else eos,
        pad_token_id=c.get("pad_token_id"),
    )


def _float(value) -> float | None:
    return None if value is None else float(value)


def _layer_kinds(family: str, c: dict) -> tuple[str, ...] | None:
    """Per-layer attention kinds as transformers derives them when `layer_types` is absent:
    Gemma 2 alternates sliding and full layers; Gemma 3 makes every `sliding_window_pattern`-th
    layer full; Qwen3 slides from `max_window_layers` on, with use_sliding_window only."""
    depth = c["num_hidden_layers"]
    if family not in ("qwen3", "gemma2", "gemma3") or (
        family == "qwen3" and not c.get("use_sliding_window")
    ):
        return None  # every layer alike (v5 configs of other families list all as full)
    if c.get("layer_types"):
        kinds = [t == "sliding_attention" for t in c["layer_types"]]
    elif family == "gemma2":
        kinds = [(i + 1) % 2 != 0 for i in range(depth)]
    elif family == "gemma3":
        kinds = [(i + 1) % int(c["sliding_window_pattern"]) != 0 for i in range(depth)]
    else:
        kinds = [i >= c["max_window_layers"] for i in range(depth)]
    if not any(kinds):
        return None
    return tuple("sliding_attention" if k else "full_attention" for k in kinds)


def vit_from_hf(hf: dict) -> VitConfig:
    """A SigLIP / CLIP / DINOv2 / DINOv3 vision config dict -> VitConfig."""
    family = _VISION_MODEL_TYPES.get(hf.get("model_type"))
    if family is None:
        raise UnsupportedModelError(
            f"vision model_type {hf.get('model_type')!r} is not supported; use one of "
            f"{list(_VISION_MODEL_TYPES)}"
        )
    defaults = _VISION_DEFAULTS[family]
    if hf.get("model_type") == "dinov2_with_registers":
        defaults = {**defaults, "patch_size": 16, "num_register_tokens": 4}
    c = {**defaults, **hf}
    common = dict(
        family=family,
        width=c["hidden_size"],
        depth=c["num_hidden_layers"],
        num_heads=c["num_attention_heads"],
        image_size=c["image_size"],
        patch_size=c["patch_size"],
        num_channels=c["num_channels"],
        norm_eps=float(c["layer_norm_eps"]),
        act=_act(c["hidden_act"], family),
    )
    if family == "siglip":
        return VitConfig(
            **common, mlp_dim=c["intermediate_size"], post_norm="last",
            pool="map" if c["vision_use_head"] else None,
        )  # fmt: skip
    if family == "clip":
        return VitConfig(
            **common, mlp_dim=c["intermediate_size"], class_token=True, patch_bias=False,
            pre_norm=True, post_norm="pooled", pool="cls",
        )  # fmt: skip
    if family == "dinov3":
        return _dinov3_from_hf(c, common)
    if c["use_swiglu_ffn"]:
        raise UnsupportedModelError("DINOv2 with use_swiglu_ffn=true (giant) is not supported")
    registers = hf.get("model_type") == "dinov2_with_registers"
    return VitConfig(
        **common,
        mlp_dim=int(c["hidden_size"] * c["mlp_ratio"]),
        qkv_bias=bool(c["qkv_bias"]),
        class_token=True,
        num_registers=c["num_register_tokens"] if registers else 0,
        layer_scale=True,
        layer_scale_init=float(c["layerscale_value"]),
        mask_token=registers or bool(c["use_mask_token"]),
        post_norm="last",
        pool="cls",
        # transformers resamples DINOv2 positions with plain bicubic, the registers variant
        # with antialias=True
        pos_interp="bicubic_aa" if registers else "bicubic",
    )


def _dinov3_from_hf(c: dict, common: dict) -> VitConfig:
    """DINOv3ViTModel: CLS + registers, 2-D RoPE (no position table), LayerScale, a plain or
    gated MLP, separate q/k/v/o bias switches. Its pos_embed_shift/jitter/rescale and
    drop_path_rate act in training mode only: fgjax runs the eval path."""
    for key in ("image_size", "patch_size"):
        if not isinstance(c[key], int):
            raise UnsupportedModelError(f"DINOv3 with a non-square {key}={c[key]} is not supported")
    if c["query_bias"] != c["value_bias"]:
        raise UnsupportedModelError(
            f"DINOv3 with query_bias={c['query_bias']} but value_bias={c['value_bias']} is not "
            "supported: fgjax's qkv_bias covers both (key_bias is separate)"
        )
    return VitConfig(
        **common,
        mlp_dim=c["intermediate_size"],
        mlp="gated" if c["use_gated_mlp"] else "plain",
        qkv_bias=bool(c["query_bias"]),
        key_bias=None if c["key_bias"] == c["query_bias"] else bool(c["key_bias"]),
        out_bias=bool(c["proj_bias"]),
        mlp_bias=bool(c["mlp_bias"]),
        class_token=True,
        num_registers=c["num_register_tokens"],
        layer_scale=True,
        layer_scale_init=float(c["layerscale_value"]),
        mask_token=True,
        rope=RopeConfig(theta=float(c["rope_theta"])),
        post_norm="last",
        pool="cls",
    )


def llava_from_hf(hf: dict) -> VLMConfig:
    """A LlavaForConditionalGeneration config dict -> VLMConfig."""
    vision = dict(hf.get("vision_config") or {})
    vision.setdefault("model_type", "clip_vision_model")
    encoder = vit_from_hf(vision)
    text = dict(hf.get("text_config") or {})
    if text.get("pad_token_id") is None and hf.get("pad_token_id") is not None:
        text["pad_token_id"] = hf["pad_token_id"]  # LLaVA-1.5 keeps it at the top level
    decoder = decoder_from_hf(text)
    if hf.get("tie_word_embeddings"):  # transformers 5 ties if either level asks for it
        decoder = dataclasses.replace(decoder, tie_embeddings=True)
    layer = hf.get("vision_feature_layer", -2)
    strategy = hf.get("vision_feature_select_strategy", "default")
    if strategy == "default" and encoder.num_prefix_tokens != 1:
        raise UnsupportedModelError(
            "vision_feature_select_strategy='default' drops exactly one token (the CLS); this "
            f"{encoder.family} tower has {encoder.num_prefix_tokens} prefix tokens, so it would "
            "drop a patch or keep registers. Use 'full' for towers without a CLS token"
        )
    if strategy not in ("default", "full"):
        raise UnsupportedModelError(f"vision_feature_select_strategy {strategy!r} is unknown")
    if hf.get("projector_hidden_act", "gelu") != "gelu":
        raise UnsupportedModelError(
            f"projector_hidden_act {hf['projector_hidden_act']!r}: fgjax projectors use gelu"
        )
    encoder = dataclasses.replace(
        encoder,
        feature_layer=tuple(layer) if isinstance(layer, (list, tuple)) else layer,
        keep_prefix=strategy == "full" and encoder.num_prefix_tokens > 0,
    )
    return VLMConfig(
        encoder=encoder,
        projector=ProjectorConfig("mlp_gelu", 2, bool(hf.get("multimodal_projector_bias", True))),
        decoder=decoder,
        image_token_id=hf.get("image_token_index", hf.get("image_token_id", 32000)),
    )


def from_hf(hf: dict, **overrides):
    """A config.json dict -> (architecture name, fgjax config), with fgjax-field `overrides`
    (for a VLM each override goes to the VLMConfig if it has the field, else to every
    sub-config that has it)."""
    arch = architecture(hf)
    kind = ARCHITECTURES[arch]
    if kind == "llava":
        cfg = llava_from_hf(hf)
    elif kind in ("gemma3_vlm", "paligemma", "qwen2_5_vl", "qwen3_vl"):
        from fgjax.hf import vlm_configs  # they build on the readers above

        cfg = vlm_configs.READERS[kind](hf)
    elif kind in ("llava_next", "llava_onevision"):
        from fgjax.hf.llava_next import llava_next_from_hf  # it builds on llava_from_hf

        cfg = llava_next_from_hf(hf, kind)
    elif kind == "internvl":
        from fgjax.hf.internvl import internvl_from_hf  # it builds on the readers above

        cfg = internvl_from_hf(hf)
    elif kind in _DECODER_DEFAULTS:
        cfg = decoder_from_hf({"model_type": kind, **hf})
    elif arch in ("SiglipModel", "CLIPModel"):
        vision = dict(hf.get("vision_config") or {})
        vision.setdefault("model_type", f"{kind}_vision_model")
        cfg = vit_from_hf(vision)
    else:
        cfg = vit_from_hf(hf)
    return arch, apply_overrides(cfg, overrides)


def apply_overrides(cfg, overrides: dict):
    if not overrides:
        return cfg
    if not isinstance(cfg, (VLMConfig, Qwen25VLConfig)):
        unknown = set(overrides) - {f.name for f in dataclasses.fields(cfg)}
        if unknown:
            raise TypeError(f"{type(cfg).__name__} has no field(s) {sorted(unknown)}")
        return dataclasses.replace(cfg, **overrides)
    own = {f.name for f in dataclasses.fields(cfg)} - {"encoder", "decoder", "projector"}
    parts = {"encoder": cfg.encoder, "decoder": cfg.decoder}
    updates = {k: v for k, v in overrides.items() if k in own}
    for key, value in overrides.items():
        if key in own:
            continue
        targets = [n for n, p in parts.items() if key in {f.name for f in dataclasses.fields(p)}]
        if not targets:
            raise TypeError(f"neither the VLMConfig nor its encoder/decoder has a field {key!r}")
        for name in targets:
            parts[name] = dataclasses.replace(parts[name], **{key: value})
    return dataclasses.replace(cfg, **parts, **updates)
