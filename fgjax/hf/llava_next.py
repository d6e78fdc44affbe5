"""LLaVA-NeXT and LLaVA-OneVision config.json dicts <-> LlavaNextConfig
(fgjax/models/llava_next.py).

Both are LLaVA configs (`configs.llava_from_hf` reads the tower, projector and decoder) plus
`image_grid_pinpoints` and, for OneVision, `vision_aspect_ratio` ("anyres_max_N") and
`video_token_index`. Absent fields take transformers 5.24's defaults, which differ between
the two: LLaVA-NeXT a CLIP ViT-L/14-336 and Llama with hidden_states[-2] and the CLS dropped,
OneVision a SigLIP So400m/14-384 (26 blocks, no head) and Qwen2 with hidden_states[-1], all
tokens kept.
"""

from __future__ import annotations

import dataclasses
import re

from fgjax.hf import configs
from fgjax.models.config import VLMConfig
from fgjax.models.llava_next import LLAVA_NEXT_PINPOINTS, ONEVISION_PINPOINTS, LlavaNextConfig

ARCHITECTURE_NAMES = {
    "llava_next": "LlavaNextForConditionalGeneration",
    "llava_onevision": "LlavaOnevisionForConditionalGeneration",
}
# transformers' sub-config defaults, used when a config has no vision_config / text_config
_VISION_DEFAULTS = {
    "llava_next": dict(model_type="clip_vision_model", intermediate_size=4096, hidden_size=1024,
                       patch_size=14, image_size=336, num_hidden_layers=24,
                       num_attention_heads=16),
    "llava_onevision": dict(model_type="siglip_vision_model", hidden_size=1152,
                            intermediate_size=4304, patch_size=14, image_size=384,
                            num_hidden_layers=26, num_attention_heads=16, vision_use_head=False),
}  # fmt: skip
_TOP_DEFAULTS = {
    "llava_next": dict(image_token_index=32000, vision_feature_layer=-2,
                       vision_feature_select_strategy="default"),
    "llava_onevision": dict(image_token_index=151646, video_token_index=151647,
                            vision_feature_layer=-1, vision_feature_select_strategy="full",
                            vision_aspect_ratio="anyres_max_9"),
}  # fmt: skip
_TEXT_MODEL_TYPES = {"llava_next": "llama", "llava_onevision": "qwen2"}
_PINPOINTS = {"llava_next": LLAVA_NEXT_PINPOINTS, "llava_onevision": ONEVISION_PINPOINTS}


def llava_next_from_hf(hf: dict, kind: str) -> LlavaNextConfig:
    """A LlavaNextForConditionalGeneration (kind "llava_next") or
    LlavaOnevisionForConditionalGeneration ("llava_onevision") config dict ->
    LlavaNextConfig."""
    c = {**_TOP_DEFAULTS[kind], **hf}
    c["vision_config"] = (
        {"model_type": _VISION_DEFAULTS[kind]["model_type"], **hf["vision_config"]}
        if hf.get("vision_config") else _VISION_DEFAULTS[kind]
    )  # fmt: skip
    c["text_config"] = {"model_type": _TEXT_MODEL_TYPES[kind], **(hf.get("text_config") or {})}
    base = configs.llava_from_hf(c)
    max_tiles = None
    if kind == "llava_onevision":
        aspect = str(c["vision_aspect_ratio"])
        match = re.fullmatch(r"anyres_max_(\d+)", aspect)
        if match is None:
            raise configs.UnsupportedModelError(
                f"vision_aspect_ratio {aspect!r}: fgjax reads OneVision's 'anyres_max_<N>'"
            )
        max_tiles = int(match.group(1))
    shared = {f.name: getattr(base, f.name) for f in dataclasses.fields(VLMConfig)}
    return LlavaNextConfig(
        **shared,
        image_grid_pinpoints=c.get("image_grid_pinpoints") or _PINPOINTS[kind],
        max_tiles=max_tiles,
        video_token_id=c.get("video_token_index") if kind == "llava_onevision" else None,
    )


def llava_next_to_hf(cfg: LlavaNextConfig, llava: dict) -> dict:
    """The config.json dict of a LlavaNextConfig, from `llava` (its LLaVA-1.5 dict, as
    config_export writes it for the VLMConfig part): OneVision when max_tiles is set."""
    kind = "llava_next" if cfg.max_tiles is None else "llava_onevision"
    out = {**llava, "architectures": [ARCHITECTURE_NAMES[kind]], "model_type": kind}
    out["image_grid_pinpoints"] = [list(p) for p in cfg.image_grid_pinpoints]
    if kind == "llava_onevision":
        out["vision_aspect_ratio"] = f"anyres_max_{cfg.max_tiles}"
        out["video_token_index"] = (
            _TOP_DEFAULTS[kind]["video_token_index"]
            if cfg.video_token_id is None
            else cfg.video_token_id
        )
    return out
