"""Qwen2.5-VL and Qwen3-VL presets (their own model classes: fgjax/models/qwen_vl.py,
qwen3_vl.py)."""

from __future__ import annotations

import dataclasses

from fgjax.models.config import RopeConfig
from fgjax.models.presets.decoders import _qwen2, _qwen3
from fgjax.models.qwen3_vl import Qwen3VLConfig, Qwen3VLVisionConfig
from fgjax.models.qwen_vision import Qwen25VisionConfig
from fgjax.models.qwen_vl import Qwen25VLConfig


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
