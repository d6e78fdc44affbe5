"""Decoder presets: Llama / Vicuna / Mistral, Qwen2 / 2.5 / 3, Gemma 1 / 2 / 3 (names in
DECODERS; `presets.decoder(name)` looks them up)."""

from __future__ import annotations

from fgjax.models.config import DecoderConfig, RopeConfig


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
