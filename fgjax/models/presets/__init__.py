"""Named model configurations: the real sizes the study uses, and tiny ones for tests.

`encoder(name)`, `decoder(name)` and `vlm(encoder, decoder, projector)` look names up;
keyword overrides replace fields (`decoder("vicuna7b", scan_layers=False)`).
Real-size parameter counts equal those transformers reports for the same models.
"""

from __future__ import annotations

import dataclasses

from fgjax.models.config import DecoderConfig, FusedVitConfig, ProjectorConfig, VitConfig, VLMConfig
from fgjax.models.presets.decoders import DECODERS, _qwen2
from fgjax.models.presets.qwen_vl import (
    _fixed_size,
    qwen3_vl,
    qwen25_vl_3b,
    qwen25_vl_7b,
    tiny_qwen25_vl,
)
from fgjax.models.presets.towers import (
    ENCODERS,
    FUSED_ENCODERS,
    _siglip_so400m_last,
    internvit_300m,
)
from fgjax.models.qwen_vl import Qwen25VLConfig

__all__ = [
    "DECODERS", "ENCODERS", "FUSED_ENCODERS", "VLMS", "decoder", "encoder", "gemma3_vlm",
    "internvit_300m", "internvl3", "llava15_7b", "paligemma2", "qwen25_vl_3b", "qwen25_vl_7b",
    "qwen3_vl", "tiny_internvl", "tiny_qwen25_vl", "vlm", "whole_vlm",
]  # fmt: skip


def _replace(cfg, overrides):
    return dataclasses.replace(cfg, **overrides) if overrides else cfg


def encoder(name: str, **overrides) -> VitConfig | FusedVitConfig:
    """A vision-tower config by name; a fused name gives a FusedVitConfig (overrides apply
    to every tower)."""
    if name in FUSED_ENCODERS:
        return FusedVitConfig(tuple(encoder(t, **overrides) for t in FUSED_ENCODERS[name]))
    if name not in ENCODERS:
        raise ValueError(
            f"unknown encoder {name!r}; available: {sorted(ENCODERS) + sorted(FUSED_ENCODERS)}"
        )
    return _replace(ENCODERS[name](), overrides)


def decoder(name: str, **overrides) -> DecoderConfig:
    if name not in DECODERS:
        raise ValueError(f"unknown decoder {name!r}; available: {sorted(DECODERS)}")
    return _replace(DECODERS[name](), overrides)


def vlm(
    encoder_name: str = "clip_l336",
    decoder_name: str = "vicuna7b_llava",
    projector: str = "mlp2x_gelu",
    *,
    image_token_id: int | None = None,
    image_layout: str = "inline",
    encoder_overrides: dict | None = None,
    decoder_overrides: dict | None = None,
) -> VLMConfig:
    """A VLM from preset names. The image token defaults to the last vocabulary id for tiny
    decoders and to LLaVA's 32000 for the padded Vicuna vocabulary."""
    dec = decoder(decoder_name, **(decoder_overrides or {}))
    if image_token_id is None:
        image_token_id = 32000 if decoder_name == "vicuna7b_llava" else dec.vocab_size - 1
    return VLMConfig(
        encoder=encoder(encoder_name, **(encoder_overrides or {})),
        projector=ProjectorConfig.from_name(projector),
        decoder=dec,
        image_token_id=image_token_id,
        image_layout=image_layout,
    )


def llava15_7b(**kw) -> VLMConfig:
    """LLaVA-1.5-7B: CLIP ViT-L/14-336 + Vicuna-7B v1.5 (vocab 32064), mlp2x_gelu."""
    return vlm("clip_l336", "vicuna7b_llava", "mlp2x_gelu", **kw)


def gemma3_vlm(decoder_name: str = "gemma3_4b", **decoder_overrides) -> VLMConfig:
    """google/gemma-3-4b-pt (decoder "gemma3_4b"), -12b-pt ("gemma3_12b"), -27b-pt
    ("gemma3_27b"): SigLIP So400m/14 at 896 px (64 x 64 patches) average-pooled to 256 tokens
    per image, each image's tokens attending both ways."""
    return VLMConfig(
        encoder=_siglip_so400m_last(896, resample="bilinear"),  # as Gemma3ImageProcessor
        projector=ProjectorConfig("gemma3", 1, False, tokens=256, norm_eps=1e-6),
        decoder=decoder(decoder_name, **decoder_overrides),
        image_token_id=262144,
        image_layout="gemma3",
        image_attention="bidirectional",
        image_boundary_ids=(255999, 256000),  # <start_of_image>, <end_of_image>
    )


VLMS = {  # whole-VLM presets by name, for training configs (config.model.vlm)
    "llava15_7b": lambda: llava15_7b(),
    "gemma3_4b": lambda: gemma3_vlm("gemma3_4b"),
    "gemma3_12b": lambda: gemma3_vlm("gemma3_12b"),
    "gemma3_27b": lambda: gemma3_vlm("gemma3_27b"),
    "paligemma2_224": lambda: paligemma2(224),
    "paligemma2_448": lambda: paligemma2(448),
    # Qwen2.5-VL fine-tuned as usual, every image resized to 448 x 448 (256 image tokens)
    "qwen25vl_3b": lambda: _fixed_size(qwen25_vl_3b(), 448),
    "qwen25vl_7b": lambda: _fixed_size(qwen25_vl_7b(), 448),
    "tiny_qwen25vl": lambda: tiny_qwen25_vl(),
    # InternVL 3 fine-tuned with each image one 448 px tile (squashed, as InternVLProcessor with
    # max_patches=1): 256 image tokens between <img> and </img>
    "internvl3_1b": lambda: internvl3("1b"),
    "internvl3_8b": lambda: internvl3("8b"),
    "tiny_internvl": lambda: tiny_internvl(),
}


def whole_vlm(
    name: str, *, encoder_overrides=None, decoder_overrides=None
) -> VLMConfig | Qwen25VLConfig:
    """A VLM preset of VLMS with fields of its encoder and decoder replaced."""
    if name not in VLMS:
        raise ValueError(f"unknown VLM preset {name!r}; available: {sorted(VLMS)}")
    cfg = VLMS[name]()
    return dataclasses.replace(
        cfg,
        encoder=_replace(cfg.encoder, encoder_overrides),
        decoder=_replace(cfg.decoder, decoder_overrides),
    )


def paligemma2(image_size: int = 224, decoder_name: str = "gemma2_2b", **kw) -> VLMConfig:
    """google/paligemma2-3b-pt-224 (and -448, -896 by `image_size`; -10b with "gemma2_9b",
    -28b with "gemma2_27b"): SigLIP So400m/14, a linear projector into Gemma 2 with PaliGemma's
    vocabulary (257216: 1024 location and 128 segmentation tokens added), prefix-LM
    attention."""
    dec = decoder(decoder_name, vocab_size=257216, **kw)
    return VLMConfig(
        encoder=_siglip_so400m_last(image_size),
        projector=ProjectorConfig("linear", 1, True),
        decoder=dec,
        image_token_id=257152,
        image_layout="before_bos",
        image_attention="prefix",
    )


# OpenGVLab/InternVL3-{1B,8B}-hf text models: Qwen2.5-0.5B and Qwen2.5-7B, their vocabulary
# grown to 151674 by InternVL's tokens (<img> 151665, </img> 151666, <IMG_CONTEXT> 151667, ...),
# the LM head untied in both (InternVL 3's 1B has its own, unlike Qwen2.5-0.5B)
_INTERNVL3 = {
    "1b": dict(width=896, depth=24, num_heads=14, num_kv_heads=2, mlp_dim=4864),
    "8b": dict(width=3584, depth=28, num_heads=28, num_kv_heads=4, mlp_dim=18944),
}


def internvl3(size: str = "1b", **decoder_overrides) -> VLMConfig:
    """OpenGVLab/InternVL3-1B-hf ("1b") and -8B-hf ("8b"): InternViT-300M, each 448 px tile
    pixel-shuffled (2 x 2 patches per token) to 256 tokens between <img> and </img>, a
    LayerNorm + two-layer GELU projector, a Qwen2.5 decoder (fgjax/hf/internvl.py)."""
    if size not in _INTERNVL3:
        raise ValueError(f"unknown InternVL3 size {size!r}; available: {sorted(_INTERNVL3)}")
    text = _qwen2(
        vocab_size=151674, max_positions=32768, bos_token_id=151643, eos_token_id=151645,
        **{**_INTERNVL3[size], **decoder_overrides},
    )  # fmt: skip
    return VLMConfig(
        encoder=internvit_300m(),
        projector=ProjectorConfig("pixel_shuffle", 2, True, tokens=256, norm_eps=1e-5),
        decoder=text,
        image_token_id=151667,
        image_layout="internvl",
    )


def tiny_internvl() -> VLMConfig:
    """A tiny InternVL for tests: 32 px tiles of 8 x 8 patches of 4 px, pixel-shuffled to 16
    tokens, a Qwen2 decoder whose vocabulary is exactly its tokenizer's 320 ids (as InternVL
    3's 151674: no room for an added <image>). Its special tokens are the lowest ids
    (<|endoftext|> 0, <|im_start|> 1, <|im_end|> 2 = EOS, <img> 3, </img> 4, <IMG_CONTEXT> 5),
    as `tokenizer_train.train_bpe` places the special tokens it is given."""
    tower = internvit_300m(width=32, depth=2, num_heads=4, mlp_dim=64, image_size=32, patch_size=4)
    text = _qwen2(
        vocab_size=320, width=64, depth=2, num_heads=4, num_kv_heads=2, mlp_dim=128,
        max_positions=512, eos_token_id=2,
    )  # fmt: skip
    return VLMConfig(
        encoder=tower,
        projector=ProjectorConfig("pixel_shuffle", 2, True, tokens=16, norm_eps=1e-5),
        decoder=text,
        image_token_id=5,
        image_layout="internvl",
    )
