"""Every field of a training config, declared once: its default and what it does.

`resolve(config)` is the first thing a training run does with a config: a key the schema does
not know is an error naming the closest known one (a typo is never silently ignored), and the
result is a copy with every default filled in -- the caller's config is never changed. The
trainer then adds what it derives from the tokenizer (model.image_token_id, a grown
vocabulary) and records that config in the run's config.json.

Data source specs (`data.sources`), the model overrides (`model.*_overrides`, `model.text`)
and `init` hold the fields of their own kinds; their builders check them.
"""

from __future__ import annotations

import ml_collections

from fgjax.config_utils import ABSENT, REQUIRED, Field, group
from fgjax.config_utils import resolve as _resolve_fields

F = Field
FIELDS: dict[str, Field] = {
    "job": F("train", "what fgjax.main runs: train, eval or study"),
    "task": F("vlm", "vlm | lm | contrastive (fgjax/train/tasks.py)"),
    "seed": F(0, "initialization, data order and the step's randomness"),
    "stage": F(None, "align | align_llm | finetune | full: which groups train (optim.STAGES)"),
    "trainable": F(None, "{group: bool}, instead of a stage"),
    "model": group(
        "the model to build",
        vlm=F(None, "a whole-VLM preset (presets.VLMS: gemma3_12b, paligemma2_224, qwen25vl_7b, "
              "...) instead of encoder + projector + decoder"),
        encoder=F(None, "vision tower preset (fgjax/models/presets.py)"),
        decoder=F(None, "LLM preset"),
        projector=F("mlp2x_gelu", "projector kind"),
        image_token_id=F(None, "the <image> id; None: the tokenizer's"),
        image_layout=F("inline", "where image features go in the sequence"),
        encoder_overrides=F({}, "fields replacing the encoder preset's"),
        decoder_overrides=F({}, "fields replacing the decoder preset's"),
        dtype=F("float32", "compute dtype"),
        remat=F("none", "rematerialisation policy of the blocks"),
        attention=F("auto", "auto | reference | xla | cudnn (models/config.py ATTENTION)"),
        scan_layers=F(True, "stack the blocks and scan them"),
        vocab_multiple=F(None, "grow the vocabulary to hold the tokenizer's ids, to a multiple"),
        text=F(None, "contrastive task: the text tower's fields"),
        embed_dim=F(64, "contrastive task: the joint embedding width"),
    ),
    "init": F(None, "{component: 'hf:DIR' | 'run:DIR[@STEP][#SUBTREE]'} (train/init.py)"),
    "data": group(
        "the training data",
        sources=F(REQUIRED, "source specs (train/inputs.py SOURCES), each with an optional weight"),
        tokenizer=F(REQUIRED, "tokenizer.json, a sentencepiece model or a directory"),
        tokenizer_roles=F({}, "{bos_token, eos_token, pad_token, unk_token: token} over its config"),
        template=F(None, "chat template (fgjax/data/templates.py); None: plain text"),
        system=F(ABSENT, "replaces the template's system message (None: no system message)"),
        max_length=F(REQUIRED, "tokens per row"),
        preprocess=F(None, "image preprocessing mode; None: the encoder's default"),
        num_threads=F(None, "transform threads (per worker process); None: cores/4 (1-16), 1 each"),
        worker_processes=F(0, "grain processes decoding and preprocessing; 0: threads in this one"),
        packing=group(
            "several conversations per row of max_length (tasks vlm and lm; data/packing.py)",
            enabled=F(False, "pack the examples into rows (segment ids, restarting positions)"),
            max_images_per_row=F(None, "VLM image slots per row; None: max_length // image tokens"),
            bins=F(None, "rows filled at once (grain's num_packing_bins); None: the batch"),
            strategy=F("first_fit", "first_fit | best_fit (grain's packers)"),
        ),
    ),
    "batch_size": F(REQUIRED, "global batch (rows per step, over all devices)"),
    "grad_accum": F(1, "micro-batches per step"),
    "num_steps": F(REQUIRED, "training steps"),
    "optim": group(
        "AdamW, its schedule and clipping",
        lr=F(REQUIRED, "peak learning rate"),
        warmup_steps=F(0, "linear warm-up steps (or warmup_ratio of num_steps)"),
        warmup_ratio=F(0.0, "warm-up as a fraction of num_steps"),
        schedule=F("cosine", "cosine | linear | constant after warm-up"),
        end_lr_ratio=F(0.0, "the schedule's last value over the peak"),
        weight_decay=F(0.0, "AdamW decay of kernels and embeddings"),
        b1=F(0.9, "Adam b1"),
        b2=F(0.999, "Adam b2"),
        eps=F(1e-8, "Adam eps"),
        clip_norm=F(1.0, "global gradient-norm clip; 0 or None: none"),
        lr_mults=F({}, "{group: multiplier of the learning rate}"),
    ),
    "mesh": F({"data": -1}, "{axis: size} over data, fsdp, tensor; one -1 takes the rest"),
    "num_devices": F(None, "use only the first N devices"),
    "sharding_rules": F(None, "logical-axis rules; None: models/partitioning.DEFAULT_RULES"),
    "checkpoint": group(
        "Orbax checkpoints in WORKDIR/checkpoints",
        every_steps=F(REQUIRED, "save every N steps (and at the end)"),
        keep=F(2, "checkpoints kept; None: all"),
        asynchronous=F(True, "save in the background"),
    ),
    "log_every": F(10, "log metrics every N steps"),
    "steps_per_call": F(1, "optimizer steps per compiled call (lax.scan), up to the next log, "
                        "checkpoint, export or evaluation step: for tiny models"),  # fmt: skip
    "eval": group(
        "evaluation during training, logged as eval/* (train/evaluation.py)",
        every_steps=F(None, "evaluate at steps N, 2N, ... and the last; None: never"),
        held_out=F([], "source specs (as data.sources): their loss is eval/held_out_loss"),
        batch_size=F(None, "global rows per held-out batch; None: batch_size // grad_accum"),
        evaluators=F([], "evaluation configs run on the parameters (evaluate/during_training.py)"),
    ),
    "export_steps": F((), "also export the parameters at these steps"),
    "profile_steps": F(None, "(first, count): capture a profile of those steps"),
    "peak_flops_per_device": F(None, "for MFU where the device kind is not known"),
    "loss_tokens_per_row": F(None, "run the LM head only at each row's first K loss positions"),
    "debug": group(
        "testing aids",
        nan_at_step=F(-1, "plant a NaN loss at this step (-1: never)"),
    ),
}


def resolve(config) -> ml_collections.ConfigDict:
    """A checked copy of `config` with every default filled in (see the module docstring)."""
    return _resolve_fields(config, FIELDS, "training config")
