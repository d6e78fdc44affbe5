"""Export of a training run (its workdir) as a Hugging Face transformers directory, or as an
fgjax-native parameters export when transformers cannot represent the model.

    result = export_run("runs/llava", "out/llava-hf", step=None, dtype="bfloat16")

HF format: a VLM becomes `LlavaForConditionalGeneration` (legacy key layout), a decoder
trained alone its `*ForCausalLM`, a vision tower its `*VisionModel`; with the tokenizer
(`<image>` a special token at the model's image_token_id), chat template, image processor,
LLaVA processor and generation config (fgjax/hf/processor_files.py). A Qwen2.5-VL run becomes
`Qwen2_5_VLForConditionalGeneration` with its tokenizer, a chat template writing images as
`<|vision_start|><|image_pad|><|vision_end|>` and a Qwen2VLImageProcessor at the run's image
size. Parameters stream from
the checkpoint to the shards one tensor at a time (fgjax/rundir.py, fgjax/hf/writer.py).
Everything is written into a temporary sibling directory renamed to `out` at the end, so a
failed export leaves nothing behind.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
import tempfile
from pathlib import Path

import ml_collections
import numpy as np

from fgjax import native, storage
from fgjax.data.conversation import ConversationEncoder, needs_image_token
from fgjax.data.tokenizer import tokenizer_for
from fgjax.hf import config_export, processor_files, writer
from fgjax.hf.configs import UnsupportedModelError
from fgjax.models.config import DecoderConfig, FusedVitConfig, VitConfig, VLMConfig
from fgjax.models.qwen_vl import Qwen25VLConfig
from fgjax.rundir import Run, RunError

FORMATS = ("auto", "hf", "native")


@dataclasses.dataclass(frozen=True)
class ExportResult:
    path: Path
    format: str  # "hf" or "native"
    source: str  # which parameters: "checkpoint step N" or the final export
    architecture: str | None  # the HF class, for format "hf"
    reason: str | None  # why the model is not exported to HF, for format "native"


def unsupported_reason(cfg) -> str | None:
    """Why transformers cannot represent the fgjax model `cfg` faithfully, or None."""
    if isinstance(cfg, VLMConfig):
        if cfg.image_layout in ("gemma3", "before_bos", "internvl"):
            return (
                f"image_layout={cfg.image_layout!r}: exporting a trained Gemma 3 / PaliGemma / "
                "InternVL run with its tokenizer and processor files is not implemented "
                "(fgjax.export writes LLaVA's); fgjax.hf.save(model, dir) writes its weights "
                "and config.json"
            )
        if cfg.image_layout != "inline":
            return (
                f"image_layout={cfg.image_layout!r}: the model was trained with the image tokens "
                "right after BOS (Prismatic), but HF LlavaProcessor expands <image> where the "
                "prompt text holds it; prompts built the HF way would not match training"
            )
        if isinstance(cfg.encoder, FusedVitConfig):
            names = "+".join(t.family for t in cfg.encoder.towers)
            return (
                f"the encoder fuses {len(cfg.encoder.towers)} vision towers ({names}); HF LLaVA "
                "has a single vision tower"
            )
    tower = cfg.encoder if isinstance(cfg, VLMConfig) else cfg
    if (
        isinstance(tower, VitConfig)
        and tower.family not in ("dinov2", "dinov3")  # HF resamples / rotates at any size
        and tower.resolution != tower.image_size
    ):
        return (
            f"the {tower.family} tower runs at input_size={tower.input_size} with position "
            f"embeddings resampled from image_size={tower.image_size}; HF {tower.family} "
            "towers (and LLaVA) run at their configured image_size"
        )
    try:
        config_export.to_hf(cfg)
    except UnsupportedModelError as e:
        return str(e)
    return None


def _fresh_directory(out: Path, overwrite: bool) -> Path:
    """A new temporary directory beside `out`; checks that `out` may be (re)placed."""
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        looks_exported = (out / "config.json").is_file() or native.is_native(out)
        if not overwrite:
            raise FileExistsError(f"{out} exists and is not empty; pass overwrite=True "
                                  "(--overwrite) to replace an earlier export")  # fmt: skip
        if not looks_exported:
            raise FileExistsError(
                f"{out} exists and does not look like an earlier export (no config.json or "
                f"{native.META}); refusing to replace it, choose another output directory"
            )
    if storage.is_remote(out):  # written locally, then uploaded with its markers last
        return Path(tempfile.mkdtemp(prefix="fgjax-export-"))
    out.parent.mkdir(parents=True, exist_ok=True)
    temp = out.with_name(f".{out.name}.export-tmp-{os.getpid()}")
    shutil.rmtree(temp, ignore_errors=True)
    temp.mkdir()
    return temp


def _tokenizer_and_template(run: Run, tokenizer_path: str | None):
    """The run's tokenizer as the trainer set it up (`<image>`, `<pad>` and template tokens
    special), and its prompt template name; checked against the model config."""
    data = ml_collections.ConfigDict(run.config.get("data", {}))
    if tokenizer_path:
        data.tokenizer = tokenizer_path
    path = data.get("tokenizer")
    if not path or not storage.path(path).exists():
        raise RunError(
            f"the run's tokenizer config.data.tokenizer={path!r} is not there; pass "
            "tokenizer=... (--tokenizer=PATH) with the tokenizer the run trained with"
        )
    cfg = run.model_cfg
    is_vlm = isinstance(cfg, (VLMConfig, Qwen25VLConfig))
    roles = data.get("tokenizer_roles")
    image_token = is_vlm and needs_image_token(cfg.image_layout)  # the trainer's own set-up
    tokenizer = tokenizer_for(path, image_token=image_token, roles=roles)
    template = data.get("template")
    if template is not None:
        if is_vlm:  # raises if the tokenizer's <image> id or vocabulary disagree with the model
            ConversationEncoder.for_model(tokenizer, template, cfg)
        else:
            ConversationEncoder(tokenizer, template, num_image_tokens=1)
    vocab = cfg.decoder.vocab_size if is_vlm else getattr(cfg, "vocab_size", None)
    if vocab is not None and tokenizer.vocab_size > vocab:
        raise RunError(f"the tokenizer at {path} has {tokenizer.vocab_size} tokens, more than "
                       f"the model's vocab_size={vocab}: is it the run's tokenizer?")  # fmt: skip
    return tokenizer, template


def with_tokenizer_ids(cfg, tokenizer):
    """The model config with the run tokenizer's bos/eos/pad ids: a preset's (1/2) would go
    into the exported config.json where the run's own tokenizer uses others."""
    whole = isinstance(cfg, (VLMConfig, Qwen25VLConfig))
    ids = {"bos_token_id": tokenizer.bos_id, "eos_token_id": tokenizer.eos_id,
           "pad_token_id": tokenizer.pad_id}  # fmt: skip
    decoder = dataclasses.replace(cfg.decoder if whole else cfg, **ids)
    return dataclasses.replace(cfg, decoder=decoder) if whole else decoder


def _write_hf(run: Run, params, out: Path, dtype, max_shard_bytes, tokenizer) -> str:
    """The transformers directory; returns the HF architecture."""
    cfg = run.model_cfg
    if tokenizer is not None:
        cfg = with_tokenizer_ids(cfg, tokenizer[0])
    data = run.config.get("data", {})
    hf_config = writer.write_model(cfg, params, out, dtype=dtype, max_shard_bytes=max_shard_bytes)
    if isinstance(cfg, VitConfig):  # a vision tower alone: weights and image processor
        processor_files.write_image_processor(str(out), cfg, data.get("preprocess"))
        return hf_config["architectures"][0]
    tokenizer, template = tokenizer
    qwen = isinstance(cfg, Qwen25VLConfig)
    is_vlm = isinstance(cfg, VLMConfig) or qwen
    processor_class = "Qwen2_5_VLProcessor" if qwen else ("LlavaProcessor" if is_vlm else None)
    max_length = (cfg.decoder if is_vlm else cfg).max_positions
    processor_files.write_tokenizer(
        tokenizer, str(out), template=template, max_length=max_length,
        processor_class=processor_class, image_layout="qwen_vl" if qwen else "inline",
    )  # fmt: skip
    processor_files.write_generation_config(str(out), tokenizer, template)
    if qwen:
        processor_files.write_qwen_image_processor(str(out), cfg.encoder, data.get("preprocess"))
    elif is_vlm:
        processor_files.write_image_processor(
            str(out), cfg.encoder, data.get("preprocess"), processor_class
        )
        processor_files.write_llava_processor(str(out), cfg, hf_config)
    return hf_config["architectures"][0]


def _write_native(run: Run, params, out: Path, dtype, tokenizer) -> None:
    """fgjax.native export (`fgjax.native.load(out)`), plus the run's config.json and the
    tokenizer of a VLM or language model (fgjax format, in out/tokenizer/). Holds one copy of
    the parameters in host memory (Orbax writes them as one tree)."""
    cfg = writer.with_param_dtype(run.model_cfg, dtype) if dtype else run.model_cfg
    tree = {}
    for path in params:
        node = tree
        *parents, leaf = path.split("/")
        for part in parents:
            node = node.setdefault(part, {})
        value = params[path]
        node[leaf] = value.astype(np.dtype(dtype), copy=False) if dtype else value
    native.save(out, cfg, tree)
    (out / "run_config.json").write_text(json.dumps(run.config, indent=2))
    if tokenizer is not None:
        tokenizer[0].save(str(out / "tokenizer"))


def export_run(
    workdir,
    out,
    *,
    step: int | None = None,
    dtype: str | None = None,
    format: str = "auto",
    tokenizer: str | None = None,
    max_shard_bytes: int = 5 * 2**30,
    overwrite: bool = False,
) -> ExportResult:
    """Exports the parameters of `workdir` (checkpoint `step`; None: the final parameters
    export, or the newest checkpoint of an unfinished run) to directory `out`.

    dtype: "float32" / "bfloat16" / "float16" (None keeps the stored dtype).
    format: "hf" (raise UnsupportedModelError when transformers cannot represent the model),
      "native" (fgjax.native only) or "auto" (HF when possible, else native; the result's
      `reason` says why). tokenizer: the run's tokenizer if config.data.tokenizer moved.
    Everything is checked (workdir, checkpoint, tokenizer) before anything is written.
    Raises RunError for a missing, incomplete or corrupt workdir, naming what it holds.
    """
    if format not in FORMATS:
        raise ValueError(f"format={format!r}; use one of {FORMATS}")
    if dtype is not None and dtype not in ("float32", "bfloat16", "float16"):
        raise ValueError(f"dtype={dtype!r}; use 'float32', 'bfloat16' or 'float16'")
    run = Run.open(workdir)
    reason = None if format == "native" else unsupported_reason(run.model_cfg)
    if reason and format == "hf":
        raise UnsupportedModelError(
            f"transformers cannot represent the model of {workdir}: {reason}. Export it with "
            "format='native' (--format=native) and load it with fgjax.native.load"
        )
    params, source = run.params(step)
    has_tokenizer = isinstance(run.model_cfg, (VLMConfig, Qwen25VLConfig, DecoderConfig))
    tokenizer = _tokenizer_and_template(run, tokenizer) if has_tokenizer else None
    out = storage.path(out)
    temp = _fresh_directory(out, overwrite)
    try:
        if format == "native" or reason:
            _write_native(run, params, temp, dtype, tokenizer)
            architecture = None
        else:
            architecture = _write_hf(run, params, temp, dtype, max_shard_bytes, tokenizer)
        if storage.is_remote(out):  # an object store has no rename: config.json commits it
            if out.exists():
                out.rmtree()
            storage.upload_tree(temp, out, last=("config.json", native.META))
        else:
            if out.exists():
                shutil.rmtree(out)
            os.replace(temp, out)
    finally:
        shutil.rmtree(temp, ignore_errors=True)
    if reason:
        logging.warning("%s: transformers cannot represent the model (%s); wrote an "
                        "fgjax-native export to %s instead", workdir, reason, out)  # fmt: skip
    return ExportResult(out, "hf" if architecture else "native", source, architecture, reason)


__all__ = ["ExportResult", "RunError", "UnsupportedModelError", "export_run", "unsupported_reason"]
