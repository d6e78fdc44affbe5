"""Parameter-name mapping between fgjax models and Hugging Face checkpoints, as data.

Each architecture is a table of `Rule(fg, hf, transform)`: an fgjax parameter path, the HF
key holding it (`{i}` = layer index) and a `Transform` that converts one tensor each way.
`key_map(arch, cfg)` instantiates the tables for a model: per-layer rules expand to one HF
key per layer, stacked along the leading `layers` axis when the fgjax model scans its layers.

HF keys are canonical in the legacy layout that every transformers version reads (LLaVA:
`vision_tower.vision_model.*`, `multi_modal_projector.*`, `language_model.model.*`,
`language_model.lm_head.weight`; Gemma 3 and PaliGemma the same, their projectors'
`multi_modal_projector.mm_*` / `.linear`; InternVL the same with `vision_tower.*` (no
`vision_model`) and `multi_modal_projector.layer_norm`; CLIP/SigLIP: `vision_model.*`;
Qwen2.5-VL: `visual.*`, `model.*`, `lm_head.weight`; Qwen3-VL, which only transformers 5's
names ever held: `model.visual.*`, `model.language_model.*`, `lm_head.weight`). Other on-disk
spellings are
rewritten to it by `ALIASES` before matching; export writes the canonical keys.
"""

from __future__ import annotations

import dataclasses
import re

import numpy as np

from fgjax.hf.configs import ARCHITECTURES
from fgjax.hf.transforms import (
    CONV,
    FLAT,
    LINEAR,
    LINEAR_OUT,
    SAME,
    Conv3d,
    Part,
    Rule,
    lead_ones,
)
from fgjax.models.config import VLMConfig
from fgjax.models.llava_next import LlavaNextConfig
from fgjax.models.qwen3_vl import Qwen3VLConfig
from fgjax.models.qwen_vl import Qwen25VLConfig

# -- the tables ------------------------------------------------------------------------------


def _attention(fg: str, hf: str, names=("q_proj", "k_proj", "v_proj", "out_proj")) -> list:
    """q/k/v/o projections with biases: fg "…/attn", hf "…self_attn" (no trailing dots)."""
    rules = []
    for short, name in zip("qkv", names[:3]):
        rules.append(Rule(f"{fg}/{short}/kernel", f"{hf}.{name}.weight", LINEAR))
        rules.append(Rule(f"{fg}/{short}/bias", f"{hf}.{name}.bias", FLAT))
    rules.append(Rule(f"{fg}/o/kernel", f"{hf}.{names[3]}.weight", LINEAR_OUT))
    rules.append(Rule(f"{fg}/o/bias", f"{hf}.{names[3]}.bias"))
    return rules


def _norm(fg: str, hf: str) -> list:
    return [Rule(f"{fg}/scale", f"{hf}.weight"), Rule(f"{fg}/bias", f"{hf}.bias")]


def _dense(fg: str, hf: str) -> list:
    return [Rule(f"{fg}/kernel", f"{hf}.weight", LINEAR), Rule(f"{fg}/bias", f"{hf}.bias")]


_BLOCK = "stack/blocks/{i}"
_SIGLIP_CLIP_LAYER = "encoder.layers.{i}"
SIGLIP_CLIP_RULES = [
    Rule("patch_embed/kernel", "embeddings.patch_embedding.weight", CONV),
    Rule("patch_embed/bias", "embeddings.patch_embedding.bias"),
    Rule("pos_embed", "embeddings.position_embedding.weight"),
    Rule("cls_token", "embeddings.class_embedding"),  # CLIP
    *_norm("pre_norm", "pre_layrnorm"),  # CLIP (sic)
    *_norm(f"{_BLOCK}/attn_norm", f"{_SIGLIP_CLIP_LAYER}.layer_norm1"),
    *_attention(f"{_BLOCK}/attn", f"{_SIGLIP_CLIP_LAYER}.self_attn"),
    *_norm(f"{_BLOCK}/mlp_norm", f"{_SIGLIP_CLIP_LAYER}.layer_norm2"),
    *_dense(f"{_BLOCK}/mlp/fc1", f"{_SIGLIP_CLIP_LAYER}.mlp.fc1"),
    *_dense(f"{_BLOCK}/mlp/fc2", f"{_SIGLIP_CLIP_LAYER}.mlp.fc2"),
    *_norm("post_norm", "post_layernorm"),
    # SigLIP's MAP head: torch MultiheadAttention packs q, k, v into in_proj
    Rule("head/probe", "head.probe"),
    *[
        Rule(f"head/attn/{n}/kernel", "head.attention.in_proj_weight", Part(j, 3, LINEAR))
        for j, n in enumerate("qkv")
    ],
    *[
        Rule(f"head/attn/{n}/bias", "head.attention.in_proj_bias", Part(j, 3, FLAT))
        for j, n in enumerate("qkv")
    ],
    Rule("head/attn/o/kernel", "head.attention.out_proj.weight", LINEAR_OUT),
    Rule("head/attn/o/bias", "head.attention.out_proj.bias"),
    *_norm("head/norm", "head.layernorm"),
    *_dense("head/mlp/fc1", "head.mlp.fc1"),
    *_dense("head/mlp/fc2", "head.mlp.fc2"),
]

_DINO_LAYER = "encoder.layer.{i}"
DINOV2_RULES = [
    Rule("patch_embed/kernel", "embeddings.patch_embeddings.projection.weight", CONV),
    Rule("patch_embed/bias", "embeddings.patch_embeddings.projection.bias"),
    Rule("pos_embed", "embeddings.position_embeddings", lead_ones(1)),
    Rule("cls_token", "embeddings.cls_token", lead_ones(2)),
    Rule("mask_token", "embeddings.mask_token", lead_ones(1)),
    Rule("registers", "embeddings.register_tokens", lead_ones(1)),
    *_norm(f"{_BLOCK}/attn_norm", f"{_DINO_LAYER}.norm1"),
    *_attention(
        f"{_BLOCK}/attn",
        f"{_DINO_LAYER}.attention",
        ("attention.query", "attention.key", "attention.value", "output.dense"),
    ),
    Rule(f"{_BLOCK}/attn_scale", f"{_DINO_LAYER}.layer_scale1.lambda1"),
    *_norm(f"{_BLOCK}/mlp_norm", f"{_DINO_LAYER}.norm2"),
    *_dense(f"{_BLOCK}/mlp/fc1", f"{_DINO_LAYER}.mlp.fc1"),
    *_dense(f"{_BLOCK}/mlp/fc2", f"{_DINO_LAYER}.mlp.fc2"),
    Rule(f"{_BLOCK}/mlp_scale", f"{_DINO_LAYER}.layer_scale2.lambda1"),
    *_norm("post_norm", "layernorm"),
]

_DINO3_LAYER = "layer.{i}"  # as published; transformers 5 names it model.layer.{i} in memory
DINOV3_RULES = [
    Rule("patch_embed/kernel", "embeddings.patch_embeddings.weight", CONV),
    Rule("patch_embed/bias", "embeddings.patch_embeddings.bias"),
    Rule("cls_token", "embeddings.cls_token", lead_ones(2)),
    Rule("mask_token", "embeddings.mask_token", lead_ones(2)),
    Rule("registers", "embeddings.register_tokens", lead_ones(1)),
    *_norm(f"{_BLOCK}/attn_norm", f"{_DINO3_LAYER}.norm1"),
    *_attention(
        f"{_BLOCK}/attn", f"{_DINO3_LAYER}.attention", ("q_proj", "k_proj", "v_proj", "o_proj")
    ),
    Rule(f"{_BLOCK}/attn_scale", f"{_DINO3_LAYER}.layer_scale1.lambda1"),
    *_norm(f"{_BLOCK}/mlp_norm", f"{_DINO3_LAYER}.norm2"),
    # plain MLP: up_proj -> act -> down_proj; gated (SwiGLU): the Llama names
    *_dense(f"{_BLOCK}/mlp/fc1", f"{_DINO3_LAYER}.mlp.up_proj"),
    *_dense(f"{_BLOCK}/mlp/fc2", f"{_DINO3_LAYER}.mlp.down_proj"),
    *[
        rule
        for name in ("gate", "up", "down")
        for rule in _dense(f"{_BLOCK}/mlp/{name}", f"{_DINO3_LAYER}.mlp.{name}_proj")
    ],
    Rule(f"{_BLOCK}/mlp_scale", f"{_DINO3_LAYER}.layer_scale2.lambda1"),
    *_norm("post_norm", "norm"),
]

_INTERNVIT_LAYER = "encoder.layer.{i}"
# InternViT (InternVLVisionModel), keys under a VLM's `vision_tower.`; its qk-norm weights are
# [heads * head_dim], fgjax's [heads, head_dim]
INTERNVIT_RULES = [
    Rule("patch_embed/kernel", "embeddings.patch_embeddings.projection.weight", CONV),
    Rule("patch_embed/bias", "embeddings.patch_embeddings.projection.bias"),
    Rule("pos_embed", "embeddings.position_embeddings", lead_ones(1)),
    Rule("cls_token", "embeddings.cls_token", lead_ones(2)),
    Rule("mask_token", "embeddings.mask_token", lead_ones(2)),
    *_norm(f"{_BLOCK}/attn_norm", f"{_INTERNVIT_LAYER}.layernorm_before"),
    *_attention(
        f"{_BLOCK}/attn",
        f"{_INTERNVIT_LAYER}.attention",
        ("q_proj", "k_proj", "v_proj", "projection_layer"),
    ),
    Rule(f"{_BLOCK}/attn/q_norm/scale", f"{_INTERNVIT_LAYER}.attention.q_norm.weight", FLAT),
    Rule(f"{_BLOCK}/attn/k_norm/scale", f"{_INTERNVIT_LAYER}.attention.k_norm.weight", FLAT),
    Rule(f"{_BLOCK}/attn_scale", f"{_INTERNVIT_LAYER}.lambda_1"),
    *_norm(f"{_BLOCK}/mlp_norm", f"{_INTERNVIT_LAYER}.layernorm_after"),
    *_dense(f"{_BLOCK}/mlp/fc1", f"{_INTERNVIT_LAYER}.mlp.fc1"),
    *_dense(f"{_BLOCK}/mlp/fc2", f"{_INTERNVIT_LAYER}.mlp.fc2"),
    Rule(f"{_BLOCK}/mlp_scale", f"{_INTERNVIT_LAYER}.lambda_2"),
    *_norm("post_norm", "layernorm"),  # use_mean_pooling=false only
]

_LM_LAYER = "model.layers.{i}"
DECODER_RULES = [
    Rule("embedding", "model.embed_tokens.weight"),
    Rule(f"{_BLOCK}/attn_norm/scale", f"{_LM_LAYER}.input_layernorm.weight"),
    *_attention(
        f"{_BLOCK}/attn", f"{_LM_LAYER}.self_attn", ("q_proj", "k_proj", "v_proj", "o_proj")
    ),
    Rule(f"{_BLOCK}/mlp_norm/scale", f"{_LM_LAYER}.post_attention_layernorm.weight"),
    *[
        rule
        for name in ("gate", "up", "down")
        for rule in _dense(f"{_BLOCK}/mlp/{name}", f"{_LM_LAYER}.mlp.{name}_proj")
    ],
    Rule("final_norm/scale", "model.norm.weight"),
    Rule("lm_head", "lm_head.weight", LINEAR),
    Rule(f"{_BLOCK}/attn/q_norm/scale", f"{_LM_LAYER}.self_attn.q_norm.weight"),  # Qwen3, Gemma 3
    Rule(f"{_BLOCK}/attn/k_norm/scale", f"{_LM_LAYER}.self_attn.k_norm.weight"),
]
# Gemma 2/3 norm every branch twice: post_attention_layernorm is the attention output's norm
# there, and the MLP's input norm is pre_feedforward_layernorm
SANDWICH_DECODER_RULES = [
    rule for rule in DECODER_RULES if rule.fg != f"{_BLOCK}/mlp_norm/scale"
] + [
    Rule(f"{_BLOCK}/attn_out_norm/scale", f"{_LM_LAYER}.post_attention_layernorm.weight"),
    Rule(f"{_BLOCK}/mlp_norm/scale", f"{_LM_LAYER}.pre_feedforward_layernorm.weight"),
    Rule(f"{_BLOCK}/mlp_out_norm/scale", f"{_LM_LAYER}.post_feedforward_layernorm.weight"),
]


_QWEN_LAYER = "blocks.{i}"
# the Qwen2.5-VL tower, keys under `visual.`; the fused qkv is split into q, k, v (rows in order)
QWEN25_VISION_RULES = [
    Rule("patch_embed", "patch_embed.proj.weight", Conv3d()),
    Rule(f"{_BLOCK}/attn_norm/scale", f"{_QWEN_LAYER}.norm1.weight"),
    *[
        Rule(f"{_BLOCK}/attn/{n}/kernel", f"{_QWEN_LAYER}.attn.qkv.weight", Part(j, 3, LINEAR))
        for j, n in enumerate("qkv")
    ],
    *[
        Rule(f"{_BLOCK}/attn/{n}/bias", f"{_QWEN_LAYER}.attn.qkv.bias", Part(j, 3, FLAT))
        for j, n in enumerate("qkv")
    ],
    Rule(f"{_BLOCK}/attn/o/kernel", f"{_QWEN_LAYER}.attn.proj.weight", LINEAR_OUT),
    Rule(f"{_BLOCK}/attn/o/bias", f"{_QWEN_LAYER}.attn.proj.bias"),
    Rule(f"{_BLOCK}/mlp_norm/scale", f"{_QWEN_LAYER}.norm2.weight"),
    *[
        rule
        for name in ("gate", "up", "down")
        for rule in _dense(f"{_BLOCK}/mlp/{name}", f"{_QWEN_LAYER}.mlp.{name}_proj")
    ],
    Rule("merger/norm/scale", "merger.ln_q.weight"),
    *_dense("merger/fc1", "merger.mlp.0"),
    *_dense("merger/fc2", "merger.mlp.2"),
]
# transformers 5's module names -> the published layout (visual.*, model.*, lm_head.weight)
QWEN25_VL_ALIASES = [(r"^model\.visual\.", "visual."), (r"^model\.language_model\.", "model.")]


def _merger_rules(fg: str, hf: str) -> list:
    """A Qwen3-VL patch merger (LayerNorm, linear_fc1, linear_fc2)."""
    return [*_norm(f"{fg}/norm", f"{hf}.norm"), *_dense(f"{fg}/fc1", f"{hf}.linear_fc1"),
            *_dense(f"{fg}/fc2", f"{hf}.linear_fc2")]  # fmt: skip


# the Qwen3-VL tower, keys under `model.visual.`: LayerNorm blocks, a plain MLP, the patch
# bias, the position table and the DeepStack mergers (`qwen3_vl_vision_rules` adds those)
QWEN3_VL_VISION_RULES = [
    Rule("patch_embed", "patch_embed.proj.weight", Conv3d()),
    Rule("patch_bias", "patch_embed.proj.bias"),
    Rule("pos_embed", "pos_embed.weight"),
    *_norm(f"{_BLOCK}/attn_norm", f"{_QWEN_LAYER}.norm1"),
    *[rule for rule in QWEN25_VISION_RULES if "/attn/" in rule.fg],
    *_norm(f"{_BLOCK}/mlp_norm", f"{_QWEN_LAYER}.norm2"),
    *_dense(f"{_BLOCK}/mlp/fc1", f"{_QWEN_LAYER}.mlp.linear_fc1"),
    *_dense(f"{_BLOCK}/mlp/fc2", f"{_QWEN_LAYER}.mlp.linear_fc2"),
    *_merger_rules("merger", "merger"),
]


def qwen3_vl_vision_rules(num_taps: int) -> list:
    """The tower's rules with those of its `num_taps` DeepStack mergers."""
    return QWEN3_VL_VISION_RULES + [
        rule for k in range(num_taps)
        for rule in _merger_rules(f"deepstack/{k}", f"deepstack_merger_list.{k}")
    ]  # fmt: skip


def _under_language_model(rules) -> list:
    """Decoder rules with transformers 5's `model.language_model.` for `model.`."""
    prefixed = "model.language_model."
    return [dataclasses.replace(r, hf=re.sub(r"^model\.", prefixed, r.hf)) for r in rules]


def decoder_rules(cfg) -> list:
    return SANDWICH_DECODER_RULES if cfg.sandwich_norm else DECODER_RULES


def projector_rules(num_layers: int) -> list:
    """LLaVA's multi_modal_projector.linear_{1,2,...}."""
    return [rule for j in range(num_layers) for rule in _dense(f"layers/{j}", f"linear_{j + 1}")]


# Gemma 3's projector: the weight is an [in, out] matrix (a plain nn.Parameter, x @ w)
GEMMA3_PROJECTOR_RULES = [
    Rule("norm/scale", "mm_soft_emb_norm.weight"),
    Rule("kernel", "mm_input_projection_weight"),
]
PALIGEMMA_PROJECTOR_RULES = _dense("layers/0", "linear")
# InternVL's: the LayerNorm after the pixel shuffle, then LLaVA's linear_1, linear_2
INTERNVL_PROJECTOR_RULES = [*_norm("norm", "layer_norm"), *projector_rules(2)]


def _vlm_projector_rules(kind: str, cfg) -> list:
    if kind == "gemma3_vlm":
        return GEMMA3_PROJECTOR_RULES
    if kind == "paligemma":
        return PALIGEMMA_PROJECTOR_RULES
    if kind == "internvl":
        return INTERNVL_PROJECTOR_RULES
    return projector_rules(cfg.projector.depth)


# on-disk spellings -> canonical keys, per architecture kind: (regex, replacement)
_DINOV2_ALIASES = [  # transformers' in-memory names (a raw state_dict dump)
    (r"\.attention\.q_proj\.", ".attention.attention.query."),
    (r"\.attention\.k_proj\.", ".attention.attention.key."),
    (r"\.attention\.v_proj\.", ".attention.attention.value."),
    (r"\.attention\.o_proj\.", ".attention.output.dense."),
]
ALIASES = {
    "siglip": [(r"^(?!vision_model\.)", "vision_model.")],  # transformers 5 drops the prefix
    "clip": [(r"^(?!vision_model\.)", "vision_model.")],
    "dinov2": _DINOV2_ALIASES,
    "dinov3": [(r"^model\.layer\.", "layer.")],  # transformers 5's in-memory names
    "llava": [  # the 4.52+ layout, then towers saved without `vision_model.`
        (r"^model\.language_model\.", "language_model.model."),
        (r"^lm_head\.", "language_model.lm_head."),
        (r"^model\.vision_tower\.", "vision_tower."),
        (r"^model\.multi_modal_projector\.", "multi_modal_projector."),
        (r"^vision_tower\.(?!vision_model\.)", "vision_tower.vision_model."),
        (r"^model\.image_newline$", "image_newline"),  # LLaVA-NeXT / OneVision
    ],
}
# a LLaVA's DINO tower has no vision_model submodule: its keys are vision_tower.* in every layout
_TOWER_PREFIX_ALIAS = (r"^vision_tower\.(?!vision_model\.)", "vision_tower.vision_model.")
_LLAVA_DINO_ALIASES = [alias for alias in ALIASES["llava"] if alias != _TOWER_PREFIX_ALIAS]
# keys that are not parameters (buffers) or belong to parts fgjax does not build
IGNORED = [r"(^|\.)position_ids$", r"rotary_emb\.inv_freq$"]
_DUAL_ENCODER_IGNORED = [r"^text_model\.", r"^logit_(scale|bias)$", r"^(text|visual)_projection\."]


@dataclasses.dataclass(frozen=True)
class Entry:
    """One fgjax parameter: its HF key per layer (stacked along axis 0 when `stacked`)."""

    fg: str
    hf: tuple[str, ...]
    transform: object
    stacked: bool


@dataclasses.dataclass(frozen=True)
class KeyMap:
    entries: dict  # fgjax path -> Entry, for every rule whose parameter the model may have
    aliases: list
    ignored: list

    def canonical(self, key: str) -> str:
        for pattern, replacement in self.aliases:
            key = re.sub(pattern, replacement, key)
        return key

    def is_ignored(self, key: str) -> bool:
        return any(re.search(pattern, key) for pattern in self.ignored)


def _expand(rules, depth: int, scanned: bool, fg_prefix: str = "", hf_prefix: str = ""):
    out = {}
    for rule in rules:
        fg, hf = fg_prefix + rule.fg, hf_prefix + rule.hf
        if "{i}" not in rule.fg:
            out[fg] = Entry(fg, (hf,), rule.transform, False)
        elif scanned:
            path = fg.replace("/{i}", "")
            out[path] = Entry(
                path, tuple(hf.format(i=i) for i in range(depth)), rule.transform, True
            )
        else:
            for i in range(depth):
                path = fg.format(i=i)
                out[path] = Entry(path, (hf.format(i=i),), rule.transform, False)
    return out


def _vit_rules(cfg):
    rules = {"dinov2": DINOV2_RULES, "dinov3": DINOV3_RULES, "internvl": INTERNVIT_RULES}
    return rules.get(cfg.family, SIGLIP_CLIP_RULES)


def key_map(arch: str, cfg) -> KeyMap:
    """The KeyMap of a supported HF architecture for the fgjax config `cfg`."""
    kind = ARCHITECTURES[arch]
    ignored = list(IGNORED)
    if isinstance(cfg, Qwen3VLConfig):  # before Qwen25VLConfig, which it extends
        enc, dec = cfg.encoder, cfg.decoder
        vision = qwen3_vl_vision_rules(len(enc.deepstack_indexes))
        text = _under_language_model(decoder_rules(dec))
        entries = {
            **_expand(vision, enc.depth, enc.scan_layers, "encoder/", "model.visual."),
            **_expand(text, dec.depth, dec.scan_layers, "decoder/"),
        }
        if dec.tie_embeddings:
            ignored.append(r"^lm_head\.weight$")
        return KeyMap(entries, [], ignored)
    if isinstance(cfg, Qwen25VLConfig):
        enc, dec = cfg.encoder, cfg.decoder
        entries = {
            **_expand(QWEN25_VISION_RULES, enc.depth, enc.scan_layers, "encoder/", "visual."),
            **_expand(decoder_rules(dec), dec.depth, dec.scan_layers, "decoder/"),
        }
        if dec.tie_embeddings:
            ignored.append(r"^lm_head\.weight$")
        return KeyMap(entries, QWEN25_VL_ALIASES, ignored)
    if isinstance(cfg, VLMConfig):
        enc, dec = cfg.encoder, cfg.decoder
        # towers without a vision_model submodule: vision_tower.* in every layout
        dino = getattr(enc, "family", None) in ("dinov2", "dinov3", "internvl")
        tower = "vision_tower." if dino else "vision_tower.vision_model."
        entries = {
            **_expand(_vit_rules(enc), enc.depth, enc.scan_layers, "encoder/", tower),
            **_expand(_vlm_projector_rules(kind, cfg), 0, False, "projector/",
                      "multi_modal_projector."),
            **_expand(decoder_rules(dec), dec.depth, dec.scan_layers, "decoder/", "language_model."),
        }  # fmt: skip
        if isinstance(cfg, LlavaNextConfig):  # the row-end embedding of tiled images
            entries["image_newline"] = Entry("image_newline", ("image_newline",), SAME, False)
        if dec.tie_embeddings:  # some checkpoints store the tied head anyway; HF ignores it
            ignored.append(r"^language_model\.lm_head\.weight$")
        return KeyMap(entries, _LLAVA_DINO_ALIASES if dino else ALIASES["llava"], ignored)
    if kind in ("siglip", "clip", "dinov2", "dinov3"):
        prefix = "" if kind in ("dinov2", "dinov3") else "vision_model."
        if arch in ("SiglipModel", "CLIPModel"):
            ignored += _DUAL_ENCODER_IGNORED
        if kind == "dinov3" and not cfg.num_registers:  # HF keeps an empty [1, 0, D] tensor
            ignored.append(r"^embeddings\.register_tokens$")
        entries = _expand(_vit_rules(cfg), cfg.depth, cfg.scan_layers, "", prefix)
        return KeyMap(entries, ALIASES[kind], ignored)
    if cfg.tie_embeddings:
        ignored.append(r"^lm_head\.weight$")
    return KeyMap(_expand(decoder_rules(cfg), cfg.depth, cfg.scan_layers), [], ignored)


def hf_tensors(keymap: KeyMap, params: dict):
    """Inverse mapping for export: {fgjax path: array} -> iterator of (HF key, np.ndarray),
    one per HF key (packed parts concatenated once all arrived). Reads each parameter in the
    iteration order of `params` and drops it before reading the next, so `params` may be a
    mapping that loads from disk on access. Every parameter needs an entry in `keymap`."""
    packed = {}
    for path in params:
        yield from _entry_tensors(keymap.entries[path], params[path], packed)
    if packed:
        raise ValueError(f"incomplete packed tensors: {sorted(packed)}")


def _entry_tensors(entry: Entry, value, packed: dict):
    """The HF tensors of one parameter; its frame (and the parameter) ends with it."""
    value = np.asarray(value)
    for key, layer in zip(entry.hf, list(value) if entry.stacked else [value]):
        tensor = entry.transform.to_hf(layer)
        if isinstance(entry.transform, Part):
            packed.setdefault(key, {})[entry.transform.index] = tensor
            if len(packed[key]) == entry.transform.count:
                parts = packed.pop(key)
                yield key, np.concatenate([parts[j] for j in sorted(parts)])
        else:
            yield key, np.ascontiguousarray(tensor)
