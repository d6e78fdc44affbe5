"""Training tasks: what model a config builds, how its parameters group, and its loss.

- "vlm": next-token loss of a VLM on image-text conversations (LLaVA stages 1 and 2).
- "lm":  next-token loss of a decoder alone on text.
A loss returns sums (per-token loss sum, loss-token count, extra metric sums) so that the
step can normalize by the token count of the whole global batch. Packed rows (segment_ids and
positions in the batch, config.data.packing) attend within each sample only.
"""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp
import optax

from fgjax.models import presets
from fgjax.models.config import DecoderConfig, VLMConfig
from fgjax.models.contrastive import ContrastiveConfig, TextTowerConfig, sigmoid_loss
from fgjax.models.layers import at_least_float32
from fgjax.models.qwen_vl import Qwen25VLConfig
from fgjax.models.vlm import prefix_before_targets
from fgjax.train import flops
from fgjax.train.optim import VLM_GROUPS


def next_token_loss(logits, tokens, loss_mask):
    """logits f32[B, T, V] predict tokens[:, 1:] where loss_mask[:, 1:] -> (sum, count, extras)."""
    return _token_loss(logits[:, :-1], tokens[:, 1:], loss_mask[:, 1:])


def _token_loss(logits, targets, weights):
    """logits f32[B, K, V] for targets i32[B, K] weighted by weights bool[B, K]."""
    acc = at_least_float32(logits.dtype)
    weights = weights.astype(acc)
    nll = optax.softmax_cross_entropy_with_integer_labels(logits.astype(acc), targets)
    correct = (jnp.argmax(logits, axis=-1) == targets) * weights
    return (nll * weights).sum(), weights.sum(), {"correct": correct.sum()}


def loss_position_loss(last_hidden, head, tokens, loss_mask, per_row: int):
    """The next-token loss with the LM head applied only where a loss is taken.

    Instruction data takes its loss on the answers alone, a small part of each row, and at a
    small width the LM head's [B, T, V] logits and their softmax cost as much as the blocks; this
    gathers the first `per_row` loss positions of each row first. last_hidden [B, T, D]; head
    maps [B, K, D] -> f32[B, K, V]; tokens, loss_mask [B, T]. Returns (sum, count, extras) as
    `next_token_loss`, whose value it equals while no row has more than `per_row` loss tokens;
    extras["loss_tokens_over_cap"] counts the loss tokens beyond it, for the trainer to refuse.
    """
    weights = loss_mask[:, 1:]
    per_row = min(per_row, weights.shape[1])
    # a stable sort puts each row's loss positions first, in order
    order = jnp.argsort(~weights, axis=1, stable=True)[:, :per_row]
    picked = jnp.take_along_axis(last_hidden[:, :-1], order[..., None], axis=1)
    targets = jnp.take_along_axis(tokens[:, 1:], order, axis=1)
    kept = jnp.take_along_axis(weights, order, axis=1)
    total, count, extra = _token_loss(head(picked), targets, kept)
    over = weights.sum().astype(jnp.float32) - kept.sum().astype(jnp.float32)
    return total, count, {**extra, "loss_tokens_over_cap": over}


def _loss(decoder, out, batch, per_row):
    """(sum, count, extras) of a decoder's output: the LM head at every position (its logits
    are in `out`) or at the loss positions only; extras count the input tokens, samples, rows
    and row slots too (how full the rows are)."""
    if per_row is None:
        total, count, extra = next_token_loss(out.logits, batch["tokens"], batch["loss_mask"])
    else:
        total, count, extra = loss_position_loss(
            out.last_hidden, decoder.logits, batch["tokens"], batch["loss_mask"], int(per_row)
        )
    return total, count, {**extra, **row_use(batch)}


def row_use(batch: dict) -> dict:
    """Sums of real tokens (input_tokens), samples, rows and row slots (rows x length) of a
    batch: input_tokens / row_slots is the packing efficiency."""
    mask = batch["input_mask"]
    if "segment_ids" in batch:  # packed: segments are numbered 1, 2, ... in each row
        samples = batch["segment_ids"].max(axis=1).sum()
    else:
        samples = mask.any(axis=1).sum()
    return {
        "input_tokens": mask.sum().astype(jnp.float32),
        "samples": samples.astype(jnp.float32),
        "rows": jnp.asarray(mask.shape[0], jnp.float32),
        "row_slots": jnp.asarray(mask.size, jnp.float32),
    }


def decoder_inputs(batch: dict) -> dict:
    """Keyword arguments for Decoder/VLM calls from a batch; packed rows carry segment_ids."""
    kwargs = {"input_mask": batch["input_mask"]}
    if "segment_ids" in batch:
        kwargs["segment_ids"] = batch["segment_ids"]
        kwargs["positions"] = batch["positions"]
    return kwargs


def runtime_fields(model_cfg) -> dict:
    """The config.model fields every part of a model takes: compute dtype, remat policy and
    attention implementation (their defaults: fgjax/train/schema.py)."""
    m = model_cfg
    return {"dtype": m.get("dtype", "float32"), "remat": m.get("remat", "none"),
            "attention": m.get("attention", "auto")}  # fmt: skip


@dataclasses.dataclass(frozen=True)
class VlmTask:
    groups = VLM_GROUPS

    def model_config(self, config) -> VLMConfig | Qwen25VLConfig:
        m = config.model
        common = {**runtime_fields(m), "scan_layers": m.get("scan_layers", True)}
        if m.get("vlm"):  # a whole family's VLM (Gemma 3, PaliGemma, Qwen2.5-VL) as published
            cfg = presets.whole_vlm(
                m.vlm,
                encoder_overrides={**common, **dict(m.get("encoder_overrides", {}))},
                decoder_overrides={**common, **dict(m.get("decoder_overrides", {}))},
            )
            cfg.validate()
            if isinstance(cfg, Qwen25VLConfig) and cfg.encoder.fixed_size is None:
                raise ValueError(
                    f"config.model.vlm={m.vlm!r} trains at one image size (a static patch "
                    "grid): set config.model.encoder_overrides = {'fixed_size': 448} (px, a "
                    "multiple of 28)"
                )
            return cfg
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

    def loss_fn(self, trainable: dict, loss_tokens_per_row: int | None = None):
        """loss(model, batch); `loss_tokens_per_row` set: the LM head only at loss positions."""
        stop = not trainable.get("encoder", False)

        def loss(model, batch):
            kwargs = decoder_inputs(batch)
            if getattr(model.cfg, "image_attention", None) == "prefix":  # PaliGemma
                kwargs["prefix_mask"] = prefix_before_targets(
                    batch["loss_mask"], batch["input_mask"], batch.get("segment_ids")
                )
            out = model(
                batch["tokens"],
                batch["images"],
                stop_encoder_gradient=stop,
                return_logits=loss_tokens_per_row is None,
                **kwargs,
            )
            return _loss(model.decoder, out, batch, loss_tokens_per_row)

        return loss

    def step_flops(
        self, cfg: VLMConfig | Qwen25VLConfig, batch: int, seq_len: int, trainable: dict,
        images_per_row: int = 1,
    ) -> float:  # fmt: skip
        if isinstance(cfg, Qwen25VLConfig):
            return flops.qwen25_vl_train_flops(cfg, batch, seq_len, trainable).total
        return flops.vlm_train_flops(cfg, batch, seq_len, trainable, images_per_row).total


@dataclasses.dataclass(frozen=True)
class LmTask:
    groups = (("decoder", r".*"),)

    def model_config(self, config) -> DecoderConfig:
        m = config.model
        overrides = runtime_fields(m)
        overrides.update(dict(m.get("decoder_overrides", {})))
        cfg = presets.decoder(m.decoder, **overrides)
        cfg.validate()
        return cfg

    def loss_fn(self, trainable: dict, loss_tokens_per_row: int | None = None):
        def loss(model, batch):
            out = model(
                batch["tokens"], return_logits=loss_tokens_per_row is None, **decoder_inputs(batch)
            )
            return _loss(model, out, batch, loss_tokens_per_row)

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
        common = runtime_fields(m)
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

    def loss_fn(self, trainable: dict, loss_tokens_per_row: int | None = None):
        if loss_tokens_per_row is not None:
            raise ValueError("loss_tokens_per_row applies to next-token tasks, not contrastive")

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
