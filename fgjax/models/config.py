"""Model configurations: plain frozen dataclasses, serializable to and from dicts.

One `TransformerConfig` describes the block stack shared by vision encoders and decoders;
`VitConfig` and `DecoderConfig` extend it with what is specific to each. `VLMConfig` composes
an encoder (one tower or a fused pair), a projector and a decoder.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax.numpy as jnp

ACTIVATIONS = ("gelu", "gelu_tanh", "quick_gelu", "silu")
REMAT_POLICIES = ("none", "full", "dots", "dots_no_batch")
# "auto": fgjax's reference on CPU and in float64 (parity), jax.nn.dot_product_attention's XLA
# path on accelerators; "cudnn": its fused cuDNN kernel (GPU, 16-bit dtypes; opt-in);
# "splash": the Pallas splash kernel (TPU; Pallas' interpreter elsewhere) for causal rows
ATTENTION = ("auto", "reference", "xla", "cudnn", "splash")
DECODER_FAMILIES = ("llama", "mistral", "qwen2", "qwen3", "gemma", "gemma2", "gemma3")
DTYPES = ("float32", "bfloat16", "float16", "float64")  # float64: references (needs jax_enable_x64)


@dataclasses.dataclass(frozen=True)
class RopeConfig:
    """Rotary position embedding (rotate-half convention, as in HF Llama).

    rope_type "default"; "linear" (positions divided by `factor`); "llama3" (Llama-3.1's
    frequency-dependent scaling with `factor`, `low_freq_factor`, `high_freq_factor` and
    `original_max_positions`).

    `mrope_section` (Qwen2-VL / Qwen2.5-VL multimodal RoPE): positions are 3-D (temporal,
    height, width) and the head_dim / 2 rotary frequencies are split into these sections in
    order, section k turned by axis k % 3 (transformers' `mrope_section`, e.g. (16, 24, 24)).
    With `mrope_interleaved` (Qwen3-VL) the axes take turns instead: frequency j turns with the
    height if j % 3 == 1 and j < 3 * sections[1], with the width if j % 3 == 2 and
    j < 3 * sections[2], else with the time (transformers' Qwen3-VL, e.g. (24, 20, 20)).
    """

    theta: float = 10000.0
    rope_type: str = "default"
    factor: float = 1.0
    low_freq_factor: float = 1.0
    high_freq_factor: float = 4.0
    original_max_positions: int = 8192
    mrope_section: tuple[int, ...] | None = None  # None: 1-D positions
    mrope_interleaved: bool = False  # Qwen3-VL: t/h/w frequencies interleaved, not in sections


@dataclasses.dataclass(frozen=True)
class TransformerConfig:
    """The pre-norm transformer block stack shared by every model family."""

    width: int = 64
    depth: int = 2
    num_heads: int = 4
    num_kv_heads: int | None = None  # None: same as num_heads (multi-head attention)
    head_dim: int | None = None  # None: width // num_heads
    mlp_dim: int = 128
    norm: str = "layernorm"  # "layernorm" | "rmsnorm"
    norm_eps: float = 1e-6
    norm_add_one: bool = False  # Gemma's RMSNorm scales by (1 + w)
    mlp: str = "plain"  # "plain": fc1 -> act -> fc2 | "gated": down(act(gate x) * up x)
    act: str = "gelu"
    qkv_bias: bool = True
    out_bias: bool = True
    mlp_bias: bool = True
    layer_scale: bool = False  # DINOv2 LayerScale on both residual branches
    layer_scale_init: float = 1.0
    rope: RopeConfig | None = None
    sliding_window: int | None = None  # Mistral v0.1 (every layer); Gemma 2/3 (see layer_types)
    qk_norm: bool = False  # Qwen3, Gemma 3: RMSNorm over head_dim on queries and keys before RoPE
    # Gemma 2/3: attention scale query_pre_attn_scalar**-0.5 instead of head_dim**-0.5
    query_pre_attn_scalar: float | None = None
    attn_softcap: float | None = None  # Gemma 2: attention logits -> cap * tanh(logits / cap)
    sandwich_norm: bool = False  # Gemma 2/3: also a norm on each branch's output, before the add
    scan_layers: bool = True  # stack layers and lax.scan them: compile time independent of depth
    remat: str = "none"  # rematerialization policy of each block, see REMAT_POLICIES
    attention: str = "auto"  # the attention implementation, see ATTENTION
    dtype: str = "float32"  # compute dtype; parameters stay in param_dtype
    param_dtype: str = "float32"

    @property
    def kv_heads(self) -> int:
        return self.num_kv_heads or self.num_heads

    @property
    def dim_per_head(self) -> int:
        return self.head_dim or self.width // self.num_heads

    @property
    def compute_dtype(self):
        return jnp.dtype(self.dtype)

    @property
    def params_dtype(self):
        return jnp.dtype(self.param_dtype)

    def validate(self) -> None:
        _check(self.act in ACTIVATIONS, f"act={self.act!r}; choose one of {ACTIVATIONS}")
        _check(
            self.norm in ("layernorm", "rmsnorm"),
            f"norm={self.norm!r}; use 'layernorm' or 'rmsnorm'",
        )
        _check(self.mlp in ("plain", "gated"), f"mlp={self.mlp!r}; use 'plain' or 'gated'")
        _check(
            self.remat in REMAT_POLICIES, f"remat={self.remat!r}; choose one of {REMAT_POLICIES}"
        )
        _check(self.dtype in DTYPES and self.param_dtype in DTYPES, f"dtypes must be in {DTYPES}")
        _check(
            self.attention in ATTENTION, f"attention={self.attention!r}; choose one of {ATTENTION}"
        )
        _check(self.depth >= 1 and self.width >= 1, "depth and width must be positive")
        _check(
            self.attn_softcap is None or self.attention in ("auto", "reference", "splash"),
            f"attn_softcap={self.attn_softcap} needs attention 'reference', 'splash' or 'auto': "
            f"jax.nn.dot_product_attention has no logit soft-capping",
        )
        _check(
            self.num_heads % self.kv_heads == 0,
            f"num_heads={self.num_heads} must be a multiple of num_kv_heads={self.kv_heads}",
        )
        if self.head_dim is None:
            _check(
                self.width % self.num_heads == 0,
                f"width={self.width} is not divisible by num_heads={self.num_heads}; set head_dim",
            )


VIT_FAMILIES = ("siglip", "clip", "dinov2", "dinov3", "internvl")


@dataclasses.dataclass(frozen=True)
class VitConfig(TransformerConfig):
    """A ViT vision tower. Variants (SigLIP, CLIP, DINOv2, DINOv3, InternViT) differ only in
    these flags.

    Positions: a learned table over `image_size` (resampled for other input sizes), or, with
    `rope` set (DINOv3), no table but 2-D RoPE on the patch tokens (prefix tokens unrotated),
    which takes any input size as it is.

    Feature selection for a VLM: `feature_layer` indexes the hidden-state list the way HF
    does (0 = embeddings, -1 = last block output, -2 = the one before; a tuple concatenates
    several along channels); `keep_prefix` keeps the CLS and register tokens; `feature_norm`
    applies the post-norm to the last block's output, i.e. takes `last_hidden_state` (Gemma 3,
    PaliGemma) rather than hidden_states[-1] (LLaVA).
    """

    family: str = "siglip"  # one of VIT_FAMILIES: for HF import/export and preprocessing
    image_size: int = 32  # the size the position embeddings were trained for
    input_size: int | None = None  # the size fed to the tower, if different (positions resampled)
    patch_size: int = 8
    num_channels: int = 3
    class_token: bool = False
    num_registers: int = 0
    patch_bias: bool = True
    pre_norm: bool = False  # CLIP's pre_layrnorm on the embeddings
    post_norm: str | None = (
        "last"  # "last": on last_hidden_state | "pooled": on the CLS only | None
    )
    pool: str | None = None  # "map": SigLIP attention-pooling head | "cls" | None
    mask_token: bool = False  # DINOv2's (unused at inference) mask token parameter
    pos_interp: str = "bicubic"  # pos-emb resampling at other resolutions: "bicubic" | "bicubic_aa"
    key_bias: bool | None = None  # None: as qkv_bias; DINOv3 has q and v biases but no k bias
    # InternViT's qk-norm (with qk_norm): one RMSNorm over all heads' features at once (weight
    # [heads, head_dim], eps 1e-6 as transformers fixes it) instead of one per head
    qk_norm_across_heads: bool = False
    feature_layer: int | tuple[int, ...] = -2
    keep_prefix: bool = False
    feature_norm: bool = False
    # the preprocessing's resampling filter when it is not the family's (fgjax.data.images):
    # Gemma 3's SigLIP images are resized bilinearly
    resample: str | None = None

    @property
    def num_prefix_tokens(self) -> int:
        return int(self.class_token) + self.num_registers

    @property
    def resolution(self) -> int:
        """The input image size (height = width)."""
        return self.input_size or self.image_size

    @property
    def grid_size(self) -> int:
        """Patches per side of the position-embedding grid."""
        return self.image_size // self.patch_size

    @property
    def num_patches(self) -> int:
        """Patch tokens per image at the input resolution."""
        return (self.resolution // self.patch_size) ** 2

    @property
    def feature_layers(self) -> tuple[int, ...]:
        layers = self.feature_layer
        return tuple(layers) if isinstance(layers, (tuple, list)) else (layers,)

    @property
    def num_features(self) -> int:
        """Image tokens this tower hands to the projector at its configured resolution."""
        return self.num_patches + (self.num_prefix_tokens if self.keep_prefix else 0)

    @property
    def feature_dim(self) -> int:
        return self.width * len(self.feature_layers)

    def validate(self) -> None:
        super().validate()
        _check(
            self.family in VIT_FAMILIES,
            f"unknown ViT family {self.family!r}; choose one of {VIT_FAMILIES}",
        )
        if self.rope is not None:  # DINOv3: half of head_dim per image axis, in cos/sin pairs
            _check(
                self.rope.rope_type == "default",
                f"ViT RoPE takes rope_type 'default', not {self.rope.rope_type!r}",
            )
            _check(self.dim_per_head % 4 == 0, "2-D RoPE needs head_dim divisible by 4")
        _check(
            self.resolution >= self.patch_size,
            f"input size {self.resolution} is smaller than patch_size={self.patch_size}",
        )
        _check(self.post_norm in (None, "last", "pooled"), f"post_norm={self.post_norm!r}")
        _check(self.pool in (None, "map", "cls"), f"pool={self.pool!r}; use 'map', 'cls' or None")
        _check(self.pos_interp in ("bicubic", "bicubic_aa"), f"pos_interp={self.pos_interp!r}")
        _check(
            self.qk_norm or not self.qk_norm_across_heads,
            "qk_norm_across_heads says how to qk-norm: set qk_norm=True too",
        )
        for layer in self.feature_layers:
            _check(
                -(self.depth + 1) <= layer <= self.depth,
                f"feature_layer={layer} is outside the {self.depth + 1} hidden states",
            )
        if self.feature_norm:
            _check(
                self.post_norm == "last" and self.feature_layers in ((-1,), (self.depth,)),
                "feature_norm takes last_hidden_state: it needs post_norm='last' and "
                f"feature_layer=-1 (got post_norm={self.post_norm!r}, "
                f"feature_layer={self.feature_layer})",
            )


@dataclasses.dataclass(frozen=True)
class FusedVitConfig:
    """Several towers on the same image, patch features concatenated along channels
    (Prismatic's DINOv2 + SigLIP). Each tower keeps its own preprocessing."""

    towers: tuple[VitConfig, ...] = ()

    @property
    def num_features(self) -> int:
        return self.towers[0].num_features

    @property
    def feature_dim(self) -> int:
        return sum(t.feature_dim for t in self.towers)

    def validate(self) -> None:
        _check(len(self.towers) >= 2, "a fused encoder needs at least two towers")
        for tower in self.towers:
            tower.validate()
        counts = {t.num_features for t in self.towers}
        _check(
            len(counts) == 1,
            f"fused towers give different numbers of image tokens {sorted(counts)}; "
            "pick image sizes so that (image_size // patch_size)**2 agree",
        )


@dataclasses.dataclass(frozen=True)
class DecoderConfig(TransformerConfig):
    """A decoder-only LM: Llama / Vicuna / Mistral / Qwen2 / Qwen3 / Gemma 1-3 by flags.

    `layer_types` gives each layer "full_attention" or "sliding_attention" (Gemma 2/3, as HF's
    config does); the sliding layers see `sliding_window` keys back and use `local_rope`
    (Gemma 3's second RoPE base) when set. None: every layer alike (`sliding_window`, if set,
    applies to all of them, as in Mistral).
    """

    family: str = "llama"  # see DECODER_FAMILIES
    vocab_size: int = 256
    tie_embeddings: bool = False
    embed_scale: bool = False  # Gemma multiplies embeddings by sqrt(width)
    max_positions: int = 2048
    bos_token_id: int | None = 1
    eos_token_id: int | None = 2
    pad_token_id: int | None = None
    norm: str = "rmsnorm"
    mlp: str = "gated"
    act: str = "silu"
    qkv_bias: bool = False
    out_bias: bool = False
    mlp_bias: bool = False
    rope: RopeConfig | None = RopeConfig()
    layer_types: tuple[str, ...] | None = None
    local_rope: RopeConfig | None = None
    final_softcap: float | None = None  # Gemma 2: LM logits -> cap * tanh(logits / cap)

    @property
    def sliding_layers(self) -> tuple[bool, ...] | None:
        """Per layer, whether it attends within the sliding window; None: all layers alike."""
        if self.layer_types is None:
            return None
        return tuple(t == "sliding_attention" for t in self.layer_types)

    def validate(self) -> None:
        super().validate()
        _check(
            self.family in DECODER_FAMILIES,
            f"unknown decoder family {self.family!r}; choose one of {DECODER_FAMILIES}",
        )
        _check(self.rope is not None, "decoders need a RopeConfig")
        if self.layer_types is not None:
            _check(
                len(self.layer_types) == self.depth,
                f"layer_types has {len(self.layer_types)} entries for depth={self.depth}",
            )
            unknown = set(self.layer_types) - {"full_attention", "sliding_attention"}
            _check(
                not unknown,
                f"layer_types {sorted(unknown)}: use 'full_attention' or 'sliding_attention'",
            )
            _check(
                self.sliding_window is not None or not any(self.sliding_layers),
                "layer_types has sliding_attention layers but sliding_window is None",
            )
        _check(
            self.local_rope is None or self.layer_types is not None,
            "local_rope is the RoPE of the sliding layers: set layer_types too",
        )
        _check(self.dim_per_head % 2 == 0, "RoPE needs an even head_dim")
        if (sections := self.rope.mrope_section) is not None:
            _check(
                sum(sections) == self.dim_per_head // 2,
                f"rope.mrope_section={sections} must add up to head_dim / 2 = "
                f"{self.dim_per_head // 2} (the rotary frequencies it splits)",
            )
            _check(
                self.sliding_window is None and self.local_rope is None,
                "multimodal RoPE (rope.mrope_section) with sliding-window layers is not supported",
            )


PROJECTORS = ("linear", "mlp_gelu", "fused_gelu_mlp", "gemma3", "pixel_shuffle")


@dataclasses.dataclass(frozen=True)
class ProjectorConfig:
    """Maps image features to the decoder width.

    kind "linear"; "mlp_gelu" with `depth` N layers (LLaVA's "mlp{N}x_gelu": Linear, then N-1
    times GELU + Linear); "fused_gelu_mlp" (Prismatic: in -> 4*in -> out -> out, GELU between);
    "gemma3" (Gemma 3's multimodal projector: the patch grid average-pooled to `tokens` per
    image, Gemma's RMSNorm (1 + w) with `norm_eps`, one linear map without bias);
    "pixel_shuffle" (InternVL: each k x k window of the patch grid becomes one of `tokens`
    tokens with k * k times the channels, then LayerNorm with `norm_eps`, Linear, GELU, Linear;
    depth 2).
    """

    kind: str = "mlp_gelu"
    depth: int = 2
    bias: bool = True
    tokens: int | None = None  # gemma3, pixel_shuffle: image tokens per image (a square)
    norm_eps: float = 1e-6  # gemma3, pixel_shuffle: eps of the norm before the linear map

    @classmethod
    def from_name(cls, name: str) -> ProjectorConfig:
        """Parses LLaVA-style names: "linear", "mlp2x_gelu", "fused_gelu_mlp"."""
        if name == "linear":
            return cls(kind="linear", depth=1)
        if name == "fused_gelu_mlp":
            return cls(kind="fused_gelu_mlp", depth=3)
        if name.startswith("mlp") and name.endswith("x_gelu") and name[3:-6].isdigit():
            return cls(kind="mlp_gelu", depth=int(name[3:-6]))
        raise ValueError(
            f"unknown projector {name!r}; use 'linear', 'mlp<N>x_gelu' or 'fused_gelu_mlp'"
        )


@dataclasses.dataclass(frozen=True)
class VLMConfig:
    """Encoder -> projector -> decoder, with image features placed at image-token positions.

    `image_layout` says where the prompt builder puts the image tokens: "inline" (wherever
    the text has `<image>`, LLaVA/HF), "after_bos" (Prismatic), "gemma3" (inline, wrapped as
    Gemma 3's processor does: "\n\n", `image_boundary_ids[0]`, the image tokens,
    `image_boundary_ids[1]`, "\n\n"), "before_bos" (PaliGemma: image tokens, BOS, text) or
    "internvl" (inline, `<img>`, the image tokens of every tile, `</img>`, "\n":
    InternVLProcessor's expansion, whose boundary tokens the tokenizer names; the prompt
    holds tiles x num_image_tokens image tokens, fgjax/data/internvl.py tiles the images).
    The model itself always scatters features into the positions holding `image_token_id`.

    `image_attention` is how the decoder attends, built by `VLM.__call__` from the tokens so
    that every caller gets it: "causal" (LLaVA); "bidirectional" (Gemma 3: the tokens of each
    image, a run of consecutive image tokens, also see each other both ways; causal
    elsewhere); "prefix" (PaliGemma's prefix-LM: the image and the prompt, i.e. all tokens of
    a call that starts the sequence, or those `prefix_mask` marks, see each other both ways;
    what follows is causal).
    """

    encoder: VitConfig | FusedVitConfig = VitConfig()
    projector: ProjectorConfig = ProjectorConfig()
    decoder: DecoderConfig = DecoderConfig()
    image_token_id: int = 255
    image_layout: str = "inline"
    image_attention: str = "causal"
    image_boundary_ids: tuple[int, int] | None = None  # (begin, end) tokens around each image

    @property
    def num_image_tokens(self) -> int:
        """Image tokens per image in the prompt."""
        if self.projector.kind in ("gemma3", "pixel_shuffle"):
            return self.projector.tokens
        return self.encoder.num_features

    def validate(self) -> None:
        self.encoder.validate()
        self.decoder.validate()
        _check(self.projector.kind in PROJECTORS, f"unknown projector kind {self.projector.kind!r}")
        _check(
            self.image_layout in IMAGE_LAYOUTS,
            f"image_layout={self.image_layout!r}; choose one of {IMAGE_LAYOUTS}",
        )
        _check(
            self.image_attention in IMAGE_ATTENTION,
            f"image_attention={self.image_attention!r}; choose one of {IMAGE_ATTENTION}",
        )
        _check(
            (self.image_layout == "gemma3") == (self.image_boundary_ids is not None),
            "image_layout 'gemma3' needs image_boundary_ids (begin, end), and only it uses them",
        )
        if self.projector.kind in ("gemma3", "pixel_shuffle"):
            self._check_pooling()
        _check(
            0 <= self.image_token_id < self.decoder.vocab_size,
            f"image_token_id={self.image_token_id} is outside the vocabulary "
            f"({self.decoder.vocab_size}); extend the vocabulary or pick another id",
        )

    def _check_pooling(self) -> None:
        enc, tokens, kind = self.encoder, self.projector.tokens, self.projector.kind
        _check(isinstance(enc, VitConfig), f"the {kind} projector pools one tower's patch grid")
        side = round((tokens or 0) ** 0.5)
        grid = enc.resolution // enc.patch_size
        _check(
            bool(tokens) and side * side == tokens and grid % side == 0 and not enc.keep_prefix,
            f"the {kind} projector pools the {grid} x {grid} patch grid to projector.tokens="
            f"{tokens}: it must be a square whose side divides {grid}",
        )


IMAGE_LAYOUTS = ("inline", "after_bos", "gemma3", "before_bos", "internvl")
IMAGE_ATTENTION = ("causal", "bidirectional", "prefix")


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise ValueError(message)


# -- (de)serialization ---------------------------------------------------------------------

_CONFIG_TYPES = {
    cls.__name__: cls
    for cls in (
        RopeConfig,
        TransformerConfig,
        VitConfig,
        FusedVitConfig,
        DecoderConfig,
        ProjectorConfig,
        VLMConfig,
    )
}


def register_config_type(cls):
    """Makes a config dataclass defined elsewhere readable by `from_dict`."""
    _CONFIG_TYPES[cls.__name__] = cls
    return cls


def to_dict(config: Any) -> dict:
    """A JSON-ready dict of a config, tagged with its type so `from_dict` can rebuild it."""
    if dataclasses.is_dataclass(config):
        out = {"__type__": type(config).__name__}
        for field in dataclasses.fields(config):
            out[field.name] = to_dict(getattr(config, field.name))
        return out
    if isinstance(config, (tuple, list)):
        return [to_dict(x) for x in config]
    return config


def from_dict(data: Any) -> Any:
    """Inverse of `to_dict`."""
    if isinstance(data, dict) and "__type__" in data:
        cls = _CONFIG_TYPES[data["__type__"]]
        kwargs = {k: from_dict(v) for k, v in data.items() if k != "__type__"}
        for field in dataclasses.fields(cls):
            if isinstance(kwargs.get(field.name), list):
                kwargs[field.name] = tuple(kwargs[field.name])
        return cls(**kwargs)
    if isinstance(data, list):
        return [from_dict(x) for x in data]
    return data
