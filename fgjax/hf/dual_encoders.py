"""HF's CLIP and SigLIP dual encoders (`CLIPModel`, `SiglipModel`) as fgjax ContrastiveModels:
the config (`contrastive_from_hf`) and the key map (`key_map`). `fgjax.hf.load(path,
dual_encoder=True)` uses both; without the flag those checkpoints load as their vision half.

    CLIP: causal text tower with learned positions and a final LayerNorm, pooled at the first
          EOS token (at the highest token id for configs with the pre-4.31 eos_token_id=2);
          `visual_projection` and `text_projection` without bias; logits = exp(logit_scale) *
          cosine.
    SigLIP: bidirectional text tower pooled at the final position of its padded-to-max_length
          input, then `head` (with bias); the image embedding is the MAP head's output;
          logits = exp(logit_scale) * cosine + logit_bias.
"""

from __future__ import annotations

import dataclasses
import math

from fgjax.hf import configs, keymaps
from fgjax.hf.keymaps import KeyMap
from fgjax.hf.transforms import LINEAR, Reshape, Rule
from fgjax.models.contrastive import ContrastiveConfig, TextTowerConfig

ARCHITECTURES = ("CLIPModel", "SiglipModel")

# transformers' CLIPTextConfig / SiglipTextConfig defaults for the fields fgjax reads
_TEXT_DEFAULTS = {
    "clip": dict(vocab_size=49408, hidden_size=512, intermediate_size=2048, num_hidden_layers=12,
                 num_attention_heads=8, max_position_embeddings=77, hidden_act="quick_gelu",
                 layer_norm_eps=1e-5, eos_token_id=49407),
    "siglip": dict(vocab_size=32000, hidden_size=768, intermediate_size=3072,
                   num_hidden_layers=12, num_attention_heads=12, max_position_embeddings=64,
                   hidden_act="gelu_pytorch_tanh", layer_norm_eps=1e-6, projection_size=None),
}  # fmt: skip
_CLIP_LEGACY_EOS = 2  # CLIPTextModel pools at argmax(input_ids) for this eos_token_id


def contrastive_from_hf(hf: dict, **overrides) -> ContrastiveConfig:
    """A CLIPModel / SiglipModel config.json dict -> ContrastiveConfig. `overrides` set
    ContrastiveConfig fields, or fields of every tower that has them (`param_dtype`, `dtype`,
    `scan_layers`, `remat`, ...)."""
    arch = configs.architecture(hf)
    if arch not in ARCHITECTURES:
        raise configs.UnsupportedModelError(
            f"dual_encoder=True loads {' or '.join(ARCHITECTURES)}; this config describes {arch}"
        )
    family = configs.ARCHITECTURES[arch]
    # configs written before transformers 4.28 may keep the towers in *_config_dict, which
    # transformers reads over *_config
    vision = {**(hf.get("vision_config") or {}), **(hf.get("vision_config_dict") or {})}
    vision.setdefault("model_type", f"{family}_vision_model")
    image = configs.vit_from_hf(vision)
    t = {
        **_TEXT_DEFAULTS[family],
        **(hf.get("text_config") or {}),
        **(hf.get("text_config_dict") or {}),
    }
    text = TextTowerConfig(
        family=family,
        vocab_size=t["vocab_size"],
        max_length=t["max_position_embeddings"],
        width=t["hidden_size"],
        depth=t["num_hidden_layers"],
        num_heads=t["num_attention_heads"],
        mlp_dim=t["intermediate_size"],
        norm_eps=float(t["layer_norm_eps"]),
        act=configs._act(t["hidden_act"], f"{arch} text_config"),
        causal=family == "clip",
        **_text_pooling(family, t),
    )
    if family == "clip":
        cfg = ContrastiveConfig(
            image=image, text=text, embed_dim=hf.get("projection_dim", 512),
            init_temperature=math.exp(hf.get("logit_scale_init_value", 2.6592)), init_bias=0.0,
            head_bias=False, logit_bias=False,
        )  # fmt: skip
    else:
        cfg = ContrastiveConfig(
            image=image, text=text, embed_dim=t["projection_size"] or t["hidden_size"],
            image_head=False,
        )  # fmt: skip
    return _apply_overrides(cfg, overrides)


def _text_pooling(family: str, t: dict) -> dict:
    if family == "siglip":
        return dict(pool="final")
    eos = t["eos_token_id"]
    if isinstance(eos, list):
        raise configs.UnsupportedModelError(
            f"CLIP text eos_token_id={eos}: CLIPTextModel pools at one EOS id, not a list"
        )
    if eos == _CLIP_LEGACY_EOS:
        return dict(pool="argmax")
    return dict(pool="eos", eos_token_id=eos)


def _apply_overrides(cfg: ContrastiveConfig, overrides: dict) -> ContrastiveConfig:
    own = {f.name for f in dataclasses.fields(cfg)} - {"image", "text"}
    towers = {"image": cfg.image, "text": cfg.text}
    for key, value in overrides.items():
        if key in own:
            continue
        names = [n for n, c in towers.items() if key in {f.name for f in dataclasses.fields(c)}]
        if not names:
            raise TypeError(f"neither the ContrastiveConfig nor its towers have a field {key!r}")
        for name in names:
            towers[name] = dataclasses.replace(towers[name], **{key: value})
    return dataclasses.replace(cfg, **towers, **{k: v for k, v in overrides.items() if k in own})


_BLOCK = "stack/blocks/{i}"
_TEXT_LAYER = "encoder.layers.{i}"
# the text tower under `text_model.`; the blocks are named as in the vision towers
TEXT_RULES = [
    Rule("embedding", "embeddings.token_embedding.weight"),
    Rule("pos_embed", "embeddings.position_embedding.weight"),
    *keymaps._norm(f"{_BLOCK}/attn_norm", f"{_TEXT_LAYER}.layer_norm1"),
    *keymaps._attention(f"{_BLOCK}/attn", f"{_TEXT_LAYER}.self_attn"),
    *keymaps._norm(f"{_BLOCK}/mlp_norm", f"{_TEXT_LAYER}.layer_norm2"),
    *keymaps._dense(f"{_BLOCK}/mlp/fc1", f"{_TEXT_LAYER}.mlp.fc1"),
    *keymaps._dense(f"{_BLOCK}/mlp/fc2", f"{_TEXT_LAYER}.mlp.fc2"),
    *keymaps._norm("final_norm", "final_layer_norm"),
]
HEAD_RULES = {
    "clip": [
        Rule("image_head/kernel", "visual_projection.weight", LINEAR),
        Rule("text_head/kernel", "text_projection.weight", LINEAR),
        Rule("log_temperature", "logit_scale", Reshape(lambda s: ())),  # a 0-d tensor in HF
    ],
    "siglip": [
        *keymaps._dense("text_head", "text_model.head"),
        Rule("log_temperature", "logit_scale"),
        Rule("bias", "logit_bias"),
    ],
}


def key_map(cfg: ContrastiveConfig) -> KeyMap:
    """The KeyMap of a CLIPModel / SiglipModel checkpoint for the ContrastiveConfig `cfg`."""
    image, text = cfg.image, cfg.text
    entries = {
        **keymaps._expand(
            keymaps.SIGLIP_CLIP_RULES, image.depth, image.scan_layers, "image/", "vision_model."
        ),
        **keymaps._expand(TEXT_RULES, text.depth, text.scan_layers, "text/", "text_model."),
        **keymaps._expand(HEAD_RULES[text.family], 0, False),
    }
    return KeyMap(entries, [], list(keymaps.IGNORED))
