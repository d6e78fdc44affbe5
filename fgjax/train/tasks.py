"""Training tasks: what model a config builds, how its parameters group, and its loss.

- "vlm": next-token loss of a VLM on image-text conversations (LLaVA stages 1 and 2).
- "lm":  next-token loss of a decoder alone on text.
A loss returns sums (per-token loss sum, loss-token count, extra metric sums) so that the
step can normalize by the token count of the whole global batch.
"""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp
import optax

from fgjax.data.packing import segment_attention_mask
from fgjax.models import presets
from fgjax.models.config import DecoderConfig, VLMConfig
from fgjax.models.contrastive import ContrastiveConfig, TextTowerConfig, sigmoid_loss
from fgjax.models.layers import at_least_float32
from fgjax.train import flops
from fgjax.train.optim import VLM_GROUPS


def next_token_loss(logits, tokens, loss_mask):
    """logits f32[B, T, V] predict tokens[:, 1:] where loss_mask[:, 1:] -> (sum, count, extras)."""
    targets = tokens[:, 1:]
    acc = at_least_float32(logits.dtype)
    weights = loss_mask[:, 1:].astype(acc)
    nll = optax.softmax_cross_entropy_with_integer_labels(logits[:, :-1].astype(acc), targets)
    correct = (jnp.argmax(logits[:, :-1], axis=-1) == targets) * weights
    return (nll * weights).sum(), weights.sum(), {"correct": correct.sum()}


def decoder_inputs(batch: dict) -> dict:
    """Keyword arguments for Decoder/VLM calls from a batch; packed rows carry segment_ids."""
    kwargs = {"input_mask": batch["input_mask"]}
    if "segment_ids" in batch:
        kwargs["attn_mask"] = segment_attention_mask(batch["segment_ids"])
        kwargs["positions"] = batch["positions"]
    return kwargs


@dataclasses.dataclass(frozen=True)
class VlmTask:
    groups = VLM_GROUPS

    def model_config(self, config) -> VLMConfig:
        m = config.model
        dtype = m.get("dtype", "float32")
        common = {
            "dtype": dtype,
            "remat": m.get("remat", "none"),
            "scan_layers": m.get("scan_layers", True),
        }
        cfg = presets.vlm(
            m.encoder,
            m.decoder,
            m.get("projector", "mlp2x_gelu"),
            image_token_id=m.get("image_token_id", None),
            image_layout=m.get("image_layout", "inline"),
            encoder_overrides={**common, **dict(m.get("encoder_overrides", {}))},
            decoder_overrides={**common, **dict(m.get("decoder_overrides", {}))},
        )
        cfg.validate()
        return cfg

    def loss_fn(self, trainable: dict):
        stop = not trainable.get("encoder", False)

        def loss(model, batch):
            out = model(
                batch["tokens"],
                batch["images"],
                stop_encoder_gradient=stop,
                **decoder_inputs(batch),
            )
            total, count, extra = next_token_loss(out.logits, batch["tokens"], batch["loss_mask"])
            return (
                total,
                count,
                {**extra, "input_tokens": batch["input_mask"].sum().astype(jnp.float32)},
            )

        return loss

    def step_flops(self, cfg: VLMConfig, batch: int, seq_len: int, trainable: dict) -> float:
        return flops.vlm_train_flops(cfg, batch, seq_len, trainable).total


@dataclasses.dataclass(frozen=True)
class LmTask:
    groups = (("decoder", r".*"),)

    def model_config(self, config) -> DecoderConfig:
        m = config.model
        overrides = {"dtype": m.get("dtype", "float32"), "remat": m.get("remat", "none")}
        overrides.update(dict(m.get("decoder_overrides", {})))
        cfg = presets.decoder(m.decoder, **overrides)
        cfg.validate()
        return cfg

    def loss_fn(self, trainable: dict):
        def loss(model, batch):
            out = model(batch["tokens"], **decoder_inputs(batch))
            total, count, extra = next_token_loss(out.logits, batch["tokens"], batch["loss_mask"])
            return (
                total,
                count,
                {**extra, "input_tokens": batch["input_mask"].sum().astype(jnp.float32)},
            )

        return loss

    def step_flops(self, cfg: DecoderConfig, batch: int, seq_len: int, trainable: dict) -> float:
        return flops.lm_train_flops(cfg, batch, seq_len)


@dataclasses.dataclass(frozen=True)
class ContrastiveTask:
    """SigLIP-style image-text pretraining: the sigmoid loss over all pairs of the global batch
    (so it cannot be split into micro-batches)."""

    groups = (
        ("image", r"^image/"),
        ("text", r"^text/"),
        ("heads", r"^(image_head|text_head|log_temperature|bias)"),
    )

    def model_config(self, config) -> ContrastiveConfig:
        m = config.model
        common = {"dtype": m.get("dtype", "float32"), "remat": m.get("remat", "none")}
        image = presets.encoder(
            m.encoder, **{**common, "pool": "map", **dict(m.get("encoder_overrides", {}))}
        )
        text = TextTowerConfig(**{**common, **dict(m.text)})
        cfg = ContrastiveConfig(image=image, text=text, embed_dim=int(m.get("embed_dim", 64)))
        cfg.validate()
        if int(config.get("grad_accum", 1)) != 1:
            raise ValueError(
                "the sigmoid loss couples every pair of the batch; set grad_accum=1 for contrastive training"
            )
        return cfg

    def loss_fn(self, trainable: dict):
        def loss(model, batch):
            images = model.embed_images(batch["images"])
            texts = model.embed_texts(batch["text_tokens"], batch["text_mask"])
            logits = model.logits(images, texts)
            rows = logits.shape[0]
            correct = (jnp.argmax(logits, axis=1) == jnp.arange(rows)).sum().astype(jnp.float32)
            extra = {
                "correct": correct,
                "input_tokens": batch["text_mask"].sum().astype(jnp.float32),
            }
            return sigmoid_loss(logits) * rows, jnp.asarray(rows, jnp.float32), extra

        return loss

    def step_flops(
        self, cfg: ContrastiveConfig, batch: int, seq_len: int, trainable: dict
    ) -> float:
        text = seq_len * flops.stack_flops_per_token(cfg.text, seq_len)
        return 3 * batch * (flops.vit_forward_flops(cfg.image) + text)


TASKS = {"vlm": VlmTask(), "lm": LmTask(), "contrastive": ContrastiveTask()}


def get(name: str):
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r}; available: {sorted(TASKS)}")
    return TASKS[name]
