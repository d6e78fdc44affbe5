"""InternVL (transformers' InternVLForConditionalGeneration: InternVL 2.5, 3 and 3.5 as
"OpenGVLab/InternVL3-1B-hf" publishes them) config.json dicts <-> fgjax VLMConfig.

The model is fgjax's generic VLM: an InternViT tower (family "internvl": CLS token, learned
positions resampled bicubically for other sizes, LayerNorm or RMSNorm blocks with LayerScale,
optional qk-norm over all heads, no final norm unless `use_mean_pooling` is false), its
features at `vision_feature_layer` with the CLS dropped, the "pixel_shuffle" projector
(each 1/downsample_ratio-square window of patches one token, LayerNorm, Linear, GELU,
Linear) and a Qwen2 / Qwen3 / Llama decoder. Each 448 x 448 tile of an image is one fgjax
image of `num_image_tokens` tokens; the processor's `<img>` and `</img>` are ordinary text
tokens (fgjax/data/internvl.py tiles images as the processor does).

transformers ties the LM head to the embeddings by the top-level `tie_word_embeddings`
(class default true), whatever text_config says: fgjax reads the same flag.

InternVL 3's text configs carry Qwen2.5's dynamic NTK RoPE scaling (rope_type "dynamic",
factor 2), which transformers applies only once a sequence outgrows max_position_embeddings
(32768): below that its frequencies are the default ones. fgjax reads it as the default RoPE,
exact for sequences of up to max_position_embeddings tokens (`decoder.max_positions`), and
exports the default RoPE.
"""

from __future__ import annotations

import dataclasses

from fgjax.hf import configs
from fgjax.hf.configs import UnsupportedModelError
from fgjax.models.config import ProjectorConfig, VitConfig, VLMConfig

ARCHITECTURE = "InternVLForConditionalGeneration"
# transformers 5.24's InternVLVisionConfig and InternVLConfig defaults
_VISION_DEFAULTS = dict(
    hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, attention_bias=False,
    use_qk_norm=False, intermediate_size=4096, hidden_act="gelu", norm_type="layer_norm",
    layer_norm_eps=1e-6, image_size=448, patch_size=14, num_channels=3, use_mask_token=False,
    use_absolute_position_embeddings=True, layer_scale_init_value=0.1, use_mean_pooling=True,
)  # fmt: skip
_TOP_DEFAULTS = dict(
    image_token_id=151667, downsample_ratio=0.5, projector_hidden_act="gelu",
    vision_feature_layer=-1, vision_feature_select_strategy="default", tie_word_embeddings=True,
)  # fmt: skip
_NORMS = {"layer_norm": "layernorm", "rms_norm": "rmsnorm"}
# InternVLMultiModalProjector's nn.LayerNorm takes torch's default eps
PROJECTOR_NORM_EPS = 1e-5


def _square(value, name: str) -> int:
    sizes = value if isinstance(value, (list, tuple)) else (value, value)
    if len(sizes) != 2 or sizes[0] != sizes[1]:
        raise UnsupportedModelError(f"InternViT with a non-square {name}={value} is not supported")
    return int(sizes[0])


def internvit_from_hf(v: dict, feature_layer: int) -> VitConfig:
    """An InternVL `vision_config` dict (absent fields at transformers' defaults) -> VitConfig
    whose features are hidden_states[feature_layer] (-1: last_hidden_state, post-normed when
    use_mean_pooling is false), the CLS dropped."""
    c = {**_VISION_DEFAULTS, **v}
    if not c["use_absolute_position_embeddings"]:
        raise UnsupportedModelError("InternViT without absolute position embeddings")
    if c["norm_type"] not in _NORMS:
        raise UnsupportedModelError(f"InternViT norm_type {c['norm_type']!r} is unknown")
    if not c["use_mean_pooling"] and c["norm_type"] != "layer_norm":
        raise UnsupportedModelError(
            "InternViT with use_mean_pooling=false and norm_type='rms_norm' (a final LayerNorm "
            "after RMSNorm blocks) is not supported"
        )
    post_norm = None if c["use_mean_pooling"] else "last"
    qk_norm = bool(c["use_qk_norm"])
    return VitConfig(
        family="internvl",
        width=c["hidden_size"],
        depth=c["num_hidden_layers"],
        num_heads=c["num_attention_heads"],
        mlp_dim=c["intermediate_size"],
        image_size=_square(c["image_size"], "image_size"),
        patch_size=_square(c["patch_size"], "patch_size"),
        num_channels=c["num_channels"],
        norm=_NORMS[c["norm_type"]],
        norm_eps=float(c["layer_norm_eps"]),
        act=configs._act(c["hidden_act"], "internvl vision_config"),
        qkv_bias=bool(c["attention_bias"]),
        qk_norm=qk_norm,
        qk_norm_across_heads=qk_norm,
        class_token=True,
        layer_scale=True,
        layer_scale_init=float(c["layer_scale_init_value"]),
        mask_token=bool(c["use_mask_token"]),
        post_norm=post_norm,
        pool=None,
        feature_layer=feature_layer,
        feature_norm=post_norm == "last" and feature_layer == -1,
    )


def without_dynamic_ntk(text: dict) -> dict:
    """A text_config dict with rope_type "dynamic" (v4 `rope_scaling` or v5
    `rope_parameters`) replaced by the default RoPE of the same theta (see the module
    docstring)."""
    text = dict(text)
    for key in ("rope_scaling", "rope_parameters"):
        params = text.get(key)
        if isinstance(params, dict) and params.get("rope_type", params.get("type")) == "dynamic":
            kept = {k: v for k, v in params.items() if k not in ("rope_type", "type", "factor")}
            text[key] = {**kept, "rope_type": "default"}
    return text


def shuffle_factor(ratio: float) -> int:
    """downsample_ratio 0.5 -> 2: the side of the window of patches that makes one token."""
    k = round(1 / ratio)
    if k < 1 or abs(k * ratio - 1) > 1e-9:
        raise UnsupportedModelError(
            f"downsample_ratio={ratio}: fgjax's pixel shuffle takes 1 / an integer (0.5, 0.25)"
        )
    return k


def internvl_from_hf(hf: dict) -> VLMConfig:
    """An InternVLForConditionalGeneration config dict -> VLMConfig."""
    c = {**_TOP_DEFAULTS, **hf}
    layer = c["vision_feature_layer"]
    if not isinstance(layer, int):
        raise UnsupportedModelError(
            f"vision_feature_layer={layer}: InternVL takes one layer (transformers indexes "
            "hidden_states with it)"
        )
    if c["vision_feature_select_strategy"] != "default":
        raise UnsupportedModelError(
            f"vision_feature_select_strategy={c['vision_feature_select_strategy']!r}: the pixel "
            "shuffle needs a square grid, so InternVL drops the CLS ('default')"
        )
    if c["projector_hidden_act"] != "gelu":
        raise UnsupportedModelError(
            f"projector_hidden_act {c['projector_hidden_act']!r}: fgjax projectors use gelu"
        )
    encoder = internvit_from_hf(c.get("vision_config") or {}, layer)
    k = shuffle_factor(float(c["downsample_ratio"]))
    grid = encoder.resolution // encoder.patch_size
    if grid % k:
        raise UnsupportedModelError(
            f"a {grid} x {grid} patch grid does not split into {k} x {k} windows "
            f"(downsample_ratio={c['downsample_ratio']})"
        )
    text = without_dynamic_ntk({"model_type": "qwen2", **(c.get("text_config") or {})})
    decoder = dataclasses.replace(
        configs.decoder_from_hf(text), tie_embeddings=bool(c["tie_word_embeddings"])
    )
    return VLMConfig(
        encoder=encoder,
        projector=ProjectorConfig(
            "pixel_shuffle", 2, True, tokens=(grid // k) ** 2, norm_eps=PROJECTOR_NORM_EPS
        ),
        decoder=decoder,
        image_token_id=c["image_token_id"],
        image_layout="internvl",
    )


def internvl_to_hf(cfg: VLMConfig) -> dict:
    """The config.json dict of an InternVL VLMConfig (transformers 5's schema for the
    InternVL fields, the v4 one for the text model's RoPE, as config_export writes it)."""
    from fgjax.hf.config_export import _HF_ACTS, decoder_to_hf

    enc, dec = cfg.encoder, cfg.decoder
    if enc.family != "internvl":
        raise UnsupportedModelError(
            f"the pixel_shuffle projector on a {enc.family} tower: HF InternVL's tower is InternViT"
        )
    vision = {
        "model_type": "internvl_vision",
        "hidden_size": enc.width,
        "num_hidden_layers": enc.depth,
        "num_attention_heads": enc.num_heads,
        "intermediate_size": enc.mlp_dim,
        "hidden_act": _HF_ACTS[enc.act],
        "attention_bias": enc.qkv_bias,
        "use_qk_norm": enc.qk_norm,
        "norm_type": {v: k for k, v in _NORMS.items()}[enc.norm],
        "layer_norm_eps": enc.norm_eps,
        "image_size": [enc.image_size, enc.image_size],
        "patch_size": [enc.patch_size, enc.patch_size],
        "num_channels": enc.num_channels,
        "use_mask_token": enc.mask_token,
        "use_absolute_position_embeddings": True,
        "layer_scale_init_value": enc.layer_scale_init,
        "use_mean_pooling": enc.post_norm is None,
    }
    text = decoder_to_hf(dec)
    del text["architectures"], text["torch_dtype"]
    grid = enc.resolution // enc.patch_size
    side = round(cfg.projector.tokens**0.5)
    layer = enc.feature_layer
    return {
        "architectures": [ARCHITECTURE],
        "model_type": "internvl",
        "vision_config": vision,
        "text_config": text,
        "image_token_id": cfg.image_token_id,
        "image_seq_length": cfg.projector.tokens,
        "downsample_ratio": side / grid,
        "projector_hidden_act": "gelu",
        "vision_feature_layer": layer if isinstance(layer, int) else list(layer),
        "vision_feature_select_strategy": "default",
        "tie_word_embeddings": dec.tie_embeddings,
        "torch_dtype": dec.param_dtype,
    }
