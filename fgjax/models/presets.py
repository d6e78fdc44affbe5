"""Named model configurations: the real sizes the study uses, and tiny ones for tests.

`encoder(name)`, `decoder(name)` and `vlm(encoder, decoder, projector)` look names up;
keyword overrides replace fields (`decoder("vicuna7b", scan_layers=False)`).
Real-size parameter counts equal those transformers reports for the same models.
"""

from __future__ import annotations

import dataclasses

from fgjax.models.config import (
    DecoderConfig,
    FusedVitConfig,
    ProjectorConfig,
    RopeConfig,
    VitConfig,
    VLMConfig,
)
from fgjax.models.qwen3_vl import Qwen3VLConfig, Qwen3VLVisionConfig
from fgjax.models.qwen_vision import Qwen25VisionConfig
from fgjax.models.qwen_vl import Qwen25VLConfig

# -- vision towers -----------------------------------------------------------------------------


def _siglip(**kw) -> VitConfig:
    base = dict(family="siglip", act="gelu_tanh", norm_eps=1e-6, post_norm="last", pool="map")
    return VitConfig(**{**base, **kw})


def _clip(**kw) -> VitConfig:
    base = dict(
        family="clip", act="quick_gelu", norm_eps=1e-5, class_token=True, patch_bias=False,
        pre_norm=True, post_norm="pooled", pool="cls",
    )  # fmt: skip
    return VitConfig(**{**base, **kw})


def _dinov2(**kw) -> VitConfig:
    base = dict(
        family="dinov2", act="gelu", norm_eps=1e-6, class_token=True, layer_scale=True,
        mask_token=True, post_norm="last", pool="cls",
    )  # fmt: skip
    return VitConfig(**{**base, **kw})


def _dinov3(**kw) -> VitConfig:
    """DINOv3 ViT (transformers' DINOv3ViTModel): CLS + 4 registers, 2-D RoPE (theta 100) and
    no position table, LayerScale, no key bias; the +-sized models use a SwiGLU MLP."""
    base = dict(
        family="dinov3", act="gelu", norm_eps=1e-5, class_token=True, num_registers=4,
        layer_scale=True, mask_token=True, post_norm="last", pool="cls", key_bias=False,
        rope=RopeConfig(theta=100.0), image_size=224, patch_size=16,
    )  # fmt: skip
    return VitConfig(**{**base, **kw})


ENCODERS = {
    # google/siglip-so400m-patch14-384 (27 x 27 patches; 384 is not a multiple of 14)
    "siglip_so400m384": lambda: _siglip(
        width=1152, depth=27, num_heads=16, mlp_dim=4304, image_size=384, patch_size=14
    ),
    # google/siglip-so400m-patch14-224 (Prismatic's SigLIP tower)
    "siglip_so400m224": lambda: _siglip(
        width=1152, depth=27, num_heads=16, mlp_dim=4304, image_size=224, patch_size=14
    ),
    # google/siglip-base-patch16-224
    "siglip_b16_224": lambda: _siglip(
        width=768, depth=12, num_heads=12, mlp_dim=3072, image_size=224, patch_size=16
    ),
    # openai/clip-vit-large-patch14-336 (LLaVA-1.5's tower)
    "clip_l336": lambda: _clip(
        width=1024, depth=24, num_heads=16, mlp_dim=4096, image_size=336, patch_size=14
    ),
    # apple/DFN5B-CLIP-ViT-H-14-378 (open_clip "ViT-H-14-378-quickgelu": quick GELU as OpenAI's)
    "dfn_h378": lambda: _clip(
        width=1280, depth=32, num_heads=16, mlp_dim=5120, image_size=378, patch_size=14
    ),
    # facebook/dinov2-with-registers-large, fed 224 px as Prismatic does (positions resampled)
    "dinov2_l14_reg4": lambda: _dinov2(
        width=1024,
        depth=24,
        num_heads=16,
        mlp_dim=4096,
        image_size=518,
        patch_size=14,
        num_registers=4,
        input_size=224,
        pos_interp="bicubic_aa",
    ),
    # facebook/dinov2-large
    "dinov2_l14": lambda: _dinov2(
        width=1024,
        depth=24,
        num_heads=16,
        mlp_dim=4096,
        image_size=518,
        patch_size=14,
        input_size=224,
    ),
    # facebook/dinov3-vits16-pretrain-lvd1689m, -vitb16-, -vitl16- (RoPE: any input size)
    "dinov3_s16": lambda: _dinov3(width=384, depth=12, num_heads=6, mlp_dim=1536),
    "dinov3_b16": lambda: _dinov3(width=768, depth=12, num_heads=12, mlp_dim=3072),
    "dinov3_l16": lambda: _dinov3(width=1024, depth=24, num_heads=16, mlp_dim=4096),
    # google/siglip2-so400m-patch14-384, google/siglip2-base-patch16-224: the fixed-resolution
    # SigLIP 2 towers are SigLIP's architecture (SiglipModel checkpoints); only the weights
    # differ. (The NaFlex variable-resolution Siglip2VisionModel is not implemented.)
    "siglip2_so400m384": lambda: _siglip(
        width=1152, depth=27, num_heads=16, mlp_dim=4304, image_size=384, patch_size=14
    ),
    "siglip2_b16_224": lambda: _siglip(
        width=768, depth=12, num_heads=12, mlp_dim=3072, image_size=224, patch_size=16
    ),
    # tiny towers for tests and the CPU study
    "tiny_siglip": lambda: _siglip(
        width=32, depth=2, num_heads=4, mlp_dim=64, image_size=32, patch_size=8
    ),
    "tiny_clip": lambda: _clip(
        width=32, depth=2, num_heads=4, mlp_dim=64, image_size=32, patch_size=8
    ),
    "tiny_dinov2": lambda: _dinov2(
        width=32,
        depth=2,
        num_heads=4,
        mlp_dim=64,
        image_size=32,
        patch_size=8,
        num_registers=2,
        pos_interp="bicubic_aa",
    ),
    "tiny_dinov3": lambda: _dinov3(
        width=32, depth=2, num_heads=4, mlp_dim=64, image_size=32, patch_size=8, num_registers=2
    ),
}

FUSED_ENCODERS = {
    # Prismatic's "dinosiglip-vit-so-224px": DINOv2-L/14-reg4 + SigLIP So400m/14, 256 tokens each
    "dinov2_siglip": ("dinov2_l14_reg4", "siglip_so400m224"),
    "tiny_dinov2_siglip": ("tiny_dinov2", "tiny_siglip"),
}

# -- decoders ------------------------------------------------------------------------------------


def _llama(**kw) -> DecoderConfig:
    return DecoderConfig(**{**dict(family="llama", norm_eps=1e-5), **kw})


def _gemma(**kw) -> DecoderConfig:
    base = dict(
        family="gemma", norm_eps=1e-6, norm_add_one=True, embed_scale=True, act="gelu_tanh",
        tie_embeddings=True, bos_token_id=2, eos_token_id=1, pad_token_id=0,
    )  # fmt: skip
    return DecoderConfig(**{**base, **kw})


def _qwen2(**kw) -> DecoderConfig:
    base = dict(
        family="qwen2", norm_eps=1e-6, qkv_bias=True, rope=RopeConfig(theta=1e6), bos_token_id=None
    )
    base.update(eos_token_id=151643)
    return DecoderConfig(**{**base, **kw})


def _qwen3(**kw) -> DecoderConfig:
    base = dict(
        family="qwen3", norm_eps=1e-6, qk_norm=True, head_dim=128, rope=RopeConfig(theta=1e6),
        max_positions=40960, bos_token_id=151643, eos_token_id=151645, vocab_size=151936,
    )  # fmt: skip
    return DecoderConfig(**{**base, **kw})


def qwen25_vl_7b(**decoder_overrides) -> Qwen25VLConfig:
    """Qwen/Qwen2.5-VL-7B-Instruct: the 32-block window-attention tower (full attention in
    blocks 7, 15, 23, 31) merged into a Qwen2.5-7B decoder with M-RoPE (16, 24, 24)."""
    tower = Qwen25VisionConfig(
        width=1280, depth=32, num_heads=16, mlp_dim=3420, fullatt_block_indexes=(7, 15, 23, 31),
        out_dim=3584,
    )  # fmt: skip
    text = _qwen2(
        vocab_size=152064, width=3584, depth=28, num_heads=28, num_kv_heads=4, mlp_dim=18944,
        max_positions=128000, rope=RopeConfig(theta=1e6, mrope_section=(16, 24, 24)),
        bos_token_id=151643, eos_token_id=151645, **decoder_overrides,
    )  # fmt: skip
    return Qwen25VLConfig(
        encoder=tower,
        decoder=text,
        image_token_id=151655,
        video_token_id=151656,
        vision_start_token_id=151652,
        vision_end_token_id=151653,
        tokens_per_second=2,
    )


# Qwen/Qwen3-VL-{2B,4B,8B}-Instruct: (tower width, depth, mlp_dim, DeepStack taps), decoder
_QWEN3_VL = {
    "2b": ((1024, 24, 4096, (5, 11, 17)), dict(width=2048, depth=28, num_heads=16,
           num_kv_heads=8, mlp_dim=6144, tie_embeddings=True)),
    "4b": ((1024, 24, 4096, (5, 11, 17)), dict(width=2560, depth=36, num_heads=32,
           num_kv_heads=8, mlp_dim=9728, tie_embeddings=True)),
    "8b": ((1152, 27, 4304, (8, 16, 24)), dict(width=4096, depth=36, num_heads=32,
           num_kv_heads=8, mlp_dim=12288)),
}  # fmt: skip


def qwen3_vl(size: str = "8b", **decoder_overrides) -> Qwen3VLConfig:
    """Qwen/Qwen3-VL-2B-Instruct, -4B-Instruct, -8B-Instruct (size "2b", "4b", "8b"): the
    16-head tower with 16 px patches and a 48 x 48 position table, DeepStack taps into the
    first three decoder blocks, a Qwen3 decoder with interleaved M-RoPE (24, 20, 20)."""
    if size not in _QWEN3_VL:
        raise ValueError(f"unknown Qwen3-VL size {size!r}; available: {sorted(_QWEN3_VL)}")
    (width, depth, mlp_dim, taps), text = _QWEN3_VL[size]
    rope = RopeConfig(theta=5e6, mrope_section=(24, 20, 20), mrope_interleaved=True)
    return Qwen3VLConfig(
        encoder=Qwen3VLVisionConfig(
            width=width, depth=depth, num_heads=16, mlp_dim=mlp_dim, out_dim=text["width"],
            num_position_embeddings=2304, deepstack_indexes=taps,
        ),
        decoder=_qwen3(**text, rope=rope, max_positions=262144, **decoder_overrides),
        image_token_id=151655, video_token_id=151656, vision_start_token_id=151652,
        vision_end_token_id=151653,
    )  # fmt: skip


def qwen25_vl_3b(**decoder_overrides) -> Qwen25VLConfig:
    """Qwen/Qwen2.5-VL-3B-Instruct: the 7B's tower merged to width 2048, a Qwen2.5-3B decoder
    (36 blocks, 2 KV heads, tied embeddings, vocabulary 151936) with M-RoPE (16, 24, 24)."""
    cfg = qwen25_vl_7b()
    text = dataclasses.replace(
        cfg.decoder, vocab_size=151936, width=2048, depth=36, num_heads=16, num_kv_heads=2,
        mlp_dim=11008, tie_embeddings=True, **decoder_overrides,
    )  # fmt: skip
    return dataclasses.replace(
        cfg, encoder=dataclasses.replace(cfg.encoder, out_dim=2048), decoder=text
    )


def tiny_qwen25_vl() -> Qwen25VLConfig:
    """A tiny Qwen2.5-VL for tests, trained at 112 px: 8 x 8 patches in windows of 56 px (four
    per image), 16 image tokens. Its special tokens are the lowest ids, in Qwen's order
    (<|endoftext|> 0, <|im_start|> 1, <|im_end|> 2 = EOS, <|vision_start|> 3, <|vision_end|>
    4, <|image_pad|> 5, <|video_pad|> 6), as `tokenizer_train.train_bpe` places the special
    tokens it is given."""
    tower = Qwen25VisionConfig(
        width=32, depth=2, num_heads=4, mlp_dim=48, window_size=56, fullatt_block_indexes=(1,),
        out_dim=64, fixed_size=112,
    )  # fmt: skip
    text = _qwen2(
        vocab_size=384, width=64, depth=2, num_heads=4, num_kv_heads=2, mlp_dim=128,
        max_positions=2048, rope=RopeConfig(theta=1e6, mrope_section=(2, 3, 3)),
        eos_token_id=2,
    )  # fmt: skip
    return Qwen25VLConfig(
        encoder=tower, decoder=text, image_token_id=5, video_token_id=6,
        vision_start_token_id=3, vision_end_token_id=4,
    )  # fmt: skip


def _fixed_size(cfg: Qwen25VLConfig, size: int) -> Qwen25VLConfig:
    """Qwen2.5-VL trained with every image resized to size x size px."""
    return dataclasses.replace(cfg, encoder=dataclasses.replace(cfg.encoder, fixed_size=size))


def _layer_types(depth: int, full_every: int) -> tuple[str, ...]:
    """Gemma 2 (every 2nd layer full) and Gemma 3 (every 6th) attention patterns."""
    return tuple(
        "full_attention" if (i + 1) % full_every == 0 else "sliding_attention" for i in range(depth)
    )


def _gemma2(depth: int, **kw) -> DecoderConfig:
    base = dict(
        family="gemma2", vocab_size=256000, depth=depth, head_dim=256, max_positions=8192,
        query_pre_attn_scalar=256.0, attn_softcap=50.0, final_softcap=30.0, sandwich_norm=True,
        sliding_window=4096, layer_types=_layer_types(depth, 2),
    )  # fmt: skip
    return _gemma(**{**base, **kw})


def _gemma3(depth: int, **kw) -> DecoderConfig:
    base = dict(
        family="gemma3", vocab_size=262208, depth=depth, head_dim=256, max_positions=131072,
        query_pre_attn_scalar=256.0, qk_norm=True, sandwich_norm=True, sliding_window=1024,
        layer_types=_layer_types(depth, 6), local_rope=RopeConfig(theta=1e4),
        rope=RopeConfig(theta=1e6, rope_type="linear", factor=8.0),
    )  # fmt: skip
    return _gemma(**{**base, **kw})


_LLAMA2_7B = dict(
    vocab_size=32000, width=4096, depth=32, num_heads=32, mlp_dim=11008, max_positions=4096
)

DECODERS = {
    "llama2_7b": lambda: _llama(**_LLAMA2_7B),
    "vicuna7b": lambda: _llama(**_LLAMA2_7B, pad_token_id=0),
    # LLaVA-1.5's Vicuna with <image> = 32000 and <pad> = 32001, vocabulary padded to 32064
    "vicuna7b_llava": lambda: _llama(**{**_LLAMA2_7B, "vocab_size": 32064}, pad_token_id=32001),
    "llama3_8b": lambda: _llama(
        vocab_size=128256,
        width=4096,
        depth=32,
        num_heads=32,
        num_kv_heads=8,
        mlp_dim=14336,
        max_positions=8192,
        rope=RopeConfig(theta=5e5),
        bos_token_id=128000,
        eos_token_id=128001,
    ),
    "llama31_8b": lambda: _llama(
        vocab_size=128256,
        width=4096,
        depth=32,
        num_heads=32,
        num_kv_heads=8,
        mlp_dim=14336,
        max_positions=131072,
        bos_token_id=128000,
        eos_token_id=128001,
        rope=RopeConfig(
            theta=5e5, rope_type="llama3", factor=8.0, low_freq_factor=1.0, high_freq_factor=4.0
        ),
    ),
    "mistral7b": lambda: _llama(
        family="mistral",
        vocab_size=32000,
        width=4096,
        depth=32,
        num_heads=32,
        num_kv_heads=8,
        mlp_dim=14336,
        max_positions=32768,
        sliding_window=4096,
    ),
    "qwen2_7b": lambda: _qwen2(
        vocab_size=152064,
        width=3584,
        depth=28,
        num_heads=28,
        num_kv_heads=4,
        mlp_dim=18944,
        max_positions=131072,
    ),
    "gemma2b": lambda: _gemma(
        vocab_size=256000,
        width=2048,
        depth=18,
        num_heads=8,
        num_kv_heads=1,
        head_dim=256,
        mlp_dim=16384,
        max_positions=8192,
    ),
    # Qwen/Qwen2.5-7B(-Instruct) is a Qwen2 architecture; -1.5B ties its embeddings
    "qwen25_7b": lambda: _qwen2(
        vocab_size=152064,
        width=3584,
        depth=28,
        num_heads=28,
        num_kv_heads=4,
        mlp_dim=18944,
        max_positions=32768,
        eos_token_id=151645,
    ),
    "qwen25_1_5b": lambda: _qwen2(
        vocab_size=151936,
        width=1536,
        depth=28,
        num_heads=12,
        num_kv_heads=2,
        mlp_dim=8960,
        max_positions=32768,
        tie_embeddings=True,
        eos_token_id=151645,
    ),
    # Qwen/Qwen3-0.6B, -4B, -8B
    "qwen3_0_6b": lambda: _qwen3(
        width=1024, depth=28, num_heads=16, num_kv_heads=8, mlp_dim=3072, tie_embeddings=True
    ),
    "qwen3_4b": lambda: _qwen3(
        width=2560, depth=36, num_heads=32, num_kv_heads=8, mlp_dim=9728, tie_embeddings=True
    ),
    "qwen3_8b": lambda: _qwen3(width=4096, depth=36, num_heads=32, num_kv_heads=8, mlp_dim=12288),
    # google/gemma-2-2b, -9b, -27b (27b scales queries by hidden / heads = 144, not head_dim)
    "gemma2_2b": lambda: _gemma2(26, width=2304, num_heads=8, num_kv_heads=4, mlp_dim=9216),
    "gemma2_9b": lambda: _gemma2(42, width=3584, num_heads=16, num_kv_heads=8, mlp_dim=14336),
    "gemma2_27b": lambda: _gemma2(
        46,
        width=4608,
        num_heads=32,
        num_kv_heads=16,
        head_dim=128,
        mlp_dim=36864,
        query_pre_attn_scalar=144.0,
    ),
    # google/gemma-3-1b-pt (text only: 262144 tokens, window 512, no RoPE scaling), and the
    # text_config of google/gemma-3-4b-pt, -12b-pt, -27b-pt
    "gemma3_1b": lambda: _gemma3(
        26,
        vocab_size=262144,
        width=1152,
        num_heads=4,
        num_kv_heads=1,
        mlp_dim=6912,
        sliding_window=512,
        max_positions=32768,
        rope=RopeConfig(theta=1e6),
    ),
    "gemma3_4b": lambda: _gemma3(34, width=2560, num_heads=8, num_kv_heads=4, mlp_dim=10240),
    "gemma3_12b": lambda: _gemma3(48, width=3840, num_heads=16, num_kv_heads=8, mlp_dim=15360),
    "gemma3_27b": lambda: _gemma3(
        62,
        width=5376,
        num_heads=32,
        num_kv_heads=16,
        head_dim=128,
        mlp_dim=21504,
        query_pre_attn_scalar=168.0,
    ),
    # tiny decoders for tests and the CPU study
    "tiny_llama": lambda: _llama(
        vocab_size=384, width=64, depth=2, num_heads=4, num_kv_heads=2, mlp_dim=128
    ),
    "tiny_qwen2": lambda: _qwen2(
        vocab_size=384,
        width=64,
        depth=2,
        num_heads=4,
        num_kv_heads=2,
        mlp_dim=128,
        tie_embeddings=True,
    ),
    "tiny_gemma": lambda: _gemma(
        vocab_size=384, width=64, depth=2, num_heads=4, num_kv_heads=1, head_dim=32, mlp_dim=128
    ),
    "tiny_qwen3": lambda: _qwen3(
        vocab_size=384,
        width=64,
        depth=2,
        num_heads=4,
        num_kv_heads=2,
        head_dim=16,
        mlp_dim=128,
        tie_embeddings=True,
        max_positions=2048,
    ),
    # windows of 4 keys, so the tests' rows outgrow them
    "tiny_gemma2": lambda: _gemma2(
        2,
        vocab_size=384,
        width=64,
        num_heads=4,
        num_kv_heads=2,
        head_dim=16,
        mlp_dim=128,
        sliding_window=4,
        query_pre_attn_scalar=16.0,
    ),
    "tiny_gemma3": lambda: _gemma3(
        3,
        vocab_size=384,
        width=64,
        num_heads=4,
        num_kv_heads=2,
        head_dim=16,
        mlp_dim=128,
        sliding_window=4,
        query_pre_attn_scalar=16.0,
        layer_types=_layer_types(3, 3),
        max_positions=2048,
    ),
}


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


def _siglip_so400m_last(image_size: int, **kw) -> VitConfig:
    """SigLIP So400m/14 without its pooling head, features its post-normed last_hidden_state
    (the tower of Gemma 3 and PaliGemma)."""
    return _siglip(
        width=1152, depth=27, num_heads=16, mlp_dim=4304, image_size=image_size, patch_size=14,
        pool=None, feature_layer=-1, feature_norm=True, **kw,
    )  # fmt: skip


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


def internvit_300m(**kw) -> VitConfig:
    """OpenGVLab/InternViT-300M-448px-V2_5, the tower of InternVL 2.5 / 3 / 3.5 up to 38B
    (transformers' InternVLVisionModel): 24 LayerNorm blocks with LayerScale and q/k/v biases,
    no qk-norm, no final norm (use_mean_pooling); 448 px tiles of 32 x 32 patches, CLS
    dropped, features the last block's output."""
    base = dict(
        family="internvl", width=1024, depth=24, num_heads=16, mlp_dim=4096, image_size=448,
        patch_size=14, norm_eps=1e-6, act="gelu", class_token=True, layer_scale=True,
        layer_scale_init=0.1, post_norm=None, feature_layer=-1,
    )  # fmt: skip
    return VitConfig(**{**base, **kw})


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
