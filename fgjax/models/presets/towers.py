"""Vision-tower presets: SigLIP / SigLIP 2, CLIP, DINOv2, DINOv3, InternViT, fused towers
(names in ENCODERS and FUSED_ENCODERS; `presets.encoder(name)` looks them up)."""

from __future__ import annotations

from fgjax.models.config import RopeConfig, VitConfig


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


def _siglip_so400m_last(image_size: int, **kw) -> VitConfig:
    """SigLIP So400m/14 without its pooling head, features its post-normed last_hidden_state
    (the tower of Gemma 3 and PaliGemma)."""
    return _siglip(
        width=1152, depth=27, num_heads=16, mlp_dim=4304, image_size=image_size, patch_size=14,
        pool=None, feature_layer=-1, feature_norm=True, **kw,
    )  # fmt: skip


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
