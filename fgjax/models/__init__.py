"""Flax NNX models: vision towers, projectors, decoders and the VLM.

Conventions: images are NHWC float32, already normalized by the tower's preprocessing; a
vision tower returns `last_hidden_state` [B, N, D] as transformers does; a decoder takes
int32[B, T] tokens and returns float32 logits [B, T, V].
"""

from __future__ import annotations

import math

import flax
import jax
from flax import nnx

# Parameters carry logical axis names that the training code maps to a mesh; they must not be
# sharded eagerly at creation (which needs a mesh in context).
flax.config.update("flax_always_shard_variable", False)

from fgjax.models import presets  # noqa: E402
from fgjax.models.config import (  # noqa: E402
    DecoderConfig,
    FusedVitConfig,
    ProjectorConfig,
    RopeConfig,
    VitConfig,
    VLMConfig,
)
from fgjax.models.contrastive import ContrastiveConfig, ContrastiveModel, TextTowerConfig  # noqa: E402
from fgjax.models.decoder import Decoder  # noqa: E402
from fgjax.models.llava_next import AnyresImages, LlavaNext, LlavaNextConfig  # noqa: E402
from fgjax.models.qwen3_vl import (  # noqa: E402
    Qwen3VL,
    Qwen3VLConfig,
    Qwen3VLVisionConfig,
    Qwen3VLVisionTower,
)
from fgjax.models.qwen_vision import Qwen25VisionConfig, Qwen25VisionTower  # noqa: E402
from fgjax.models.qwen_vl import Qwen25Images, Qwen25VL, Qwen25VLConfig  # noqa: E402
from fgjax.models.vit import FusedVisionEncoder, VisionEncoder  # noqa: E402
from fgjax.models.vlm import VLM  # noqa: E402


def build(cfg, seed: int = 0):
    """The module for a config (VitConfig, FusedVitConfig, DecoderConfig, VLMConfig,
    ContrastiveConfig, Qwen25VisionConfig, Qwen25VLConfig or their Qwen3-VL subclasses), with
    random weights."""
    rngs = nnx.Rngs(seed)
    if isinstance(cfg, LlavaNextConfig):  # before VLMConfig, which it extends
        return LlavaNext(cfg, rngs=rngs)
    if isinstance(cfg, VLMConfig):
        return VLM(cfg, rngs=rngs)
    if isinstance(cfg, ContrastiveConfig):
        return ContrastiveModel(cfg, rngs=rngs)
    if isinstance(cfg, DecoderConfig):
        return Decoder(cfg, rngs=rngs)
    if isinstance(cfg, FusedVitConfig):
        return FusedVisionEncoder(cfg, rngs=rngs)
    if isinstance(cfg, VitConfig):
        return VisionEncoder(cfg, rngs=rngs)
    if isinstance(cfg, Qwen3VLVisionConfig):  # before Qwen25VisionConfig, which it extends
        return Qwen3VLVisionTower(cfg, rngs=rngs)
    if isinstance(cfg, Qwen3VLConfig):  # before Qwen25VLConfig, which it extends
        return Qwen3VL(cfg, rngs=rngs)
    if isinstance(cfg, Qwen25VisionConfig):
        return Qwen25VisionTower(cfg, rngs=rngs)
    if isinstance(cfg, Qwen25VLConfig):
        return Qwen25VL(cfg, rngs=rngs)
    raise TypeError(f"no model for config type {type(cfg).__name__}")


def abstract(cfg):
    """The module with jax.ShapeDtypeStruct leaves: no memory is allocated."""
    return nnx.eval_shape(lambda: build(cfg))


def param_count(cfg) -> int:
    """Number of parameters, computed from shapes only."""
    state = nnx.state(abstract(cfg), nnx.Param)
    return sum(math.prod(x.shape) for x in jax.tree.leaves(state))


__all__ = [
    "AnyresImages",
    "ContrastiveConfig",
    "ContrastiveModel",
    "TextTowerConfig",
    "VLM",
    "Decoder",
    "DecoderConfig",
    "FusedVisionEncoder",
    "FusedVitConfig",
    "LlavaNext",
    "LlavaNextConfig",
    "ProjectorConfig",
    "Qwen25VisionConfig",
    "Qwen25VisionTower",
    "Qwen25Images",
    "Qwen25VL",
    "Qwen25VLConfig",
    "Qwen3VL",
    "Qwen3VLConfig",
    "Qwen3VLVisionConfig",
    "Qwen3VLVisionTower",
    "RopeConfig",
    "VLMConfig",
    "VisionEncoder",
    "VitConfig",
    "abstract",
    "build",
    "param_count",
    "presets",
]
