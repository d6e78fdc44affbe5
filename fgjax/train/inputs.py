"""Training data from config: sources -> records -> fixed-shape examples -> grain batches.

config.data:
  sources   list of {name, weight, ...}: "llava_json" (path, image_root) for LLaVA-558K/665K,
            "specimens" (kind = "captions" | "curated" | "instruct" | "classify" | "text", split, size,
            resolution, seed, keep, text_fraction) for the built-in data (fgjax/data/specimens_source.py)
  tokenizer a tokenizer.json / sentencepiece file or directory
  template  prompt template name ("plain", "vicuna_v1", ...)
  max_length, preprocess (image mode, None for the tower's default), strict (bad rows raise)
  packing   {enabled, max_images_per_row, bins, strategy}: several examples per row (packing_of)

Records are {"image": u8[H, W, 3] | None, "conversations": [...]} (LLaVA turns) or
{"text": str} (plain text, for language-model training). Examples are
tokens i32[T], loss_mask bool[T], input_mask bool[T] and, for a VLM, images f32[S, S, 3]
(a tuple per tower for a fused encoder; zeros for text-only rows, never read; Qwen2.5-VL's
patch rows f32[N, C * T * P * P] at its fixed size, fgjax/data/qwen_patches.py). Packed, the
transform leaves them unpadded (images f32[n, S, S, 3], n = 0 or 1) and grain packs them into
rows (fgjax/data/packing.py: Packing).
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import numpy as np

from fgjax.data import images as image_ops
from fgjax.data import pipeline, qwen_patches
from fgjax.data.conversation import ConversationEncoder, SampleError
from fgjax.data.folder_source import FolderSource
from fgjax.data.llava_json import LlavaJsonSource
from fgjax.data.packing import STRATEGIES, Packing
from fgjax.data.skips import BadInputError, SkipCounter, SkipGuard
from fgjax.data.specimens_source import SpecimensSource
from fgjax.data.templates import get_template
from fgjax.data.tokenizer import Tokenizer
from fgjax.models.config import DecoderConfig, FusedVitConfig, VLMConfig
from fgjax.models.qwen_vl import Qwen25VLConfig

# name -> function(spec) returning a random-access source of records
SOURCES: dict[str, Callable] = {
    "specimens": lambda spec: SpecimensSource(
        spec["kind"],
        spec.get("split", "train"),
        int(spec.get("size", 20_000)),
        int(spec.get("resolution", 32)),
        int(spec.get("seed", 0)),
        spec.get("keep"),
        float(spec.get("text_fraction", 1.0)),
    ),
    "llava_json": lambda spec: LlavaJsonSource(
        spec["path"], spec.get("image_root"), strict=spec.get("strict", False)
    ),
    "folder": lambda spec: FolderSource(
        spec["path"], spec.get("kind", "captions"), class_names=spec.get("class_names"),
        caption=spec.get("caption", "a photo of a {}."),
        question=spec.get("question", "What type of object is in this photo?"),
        choices=int(spec.get("choices", 5)), seed=int(spec.get("seed", 0)),
        strict=spec.get("strict", False),
    ),  # fmt: skip
}


def register_source(name: str, make: Callable) -> None:
    SOURCES[name] = make


def make_source(spec: dict):
    name = spec.get("name")
    if name not in SOURCES:
        raise ValueError(f"unknown training data source {name!r}; available: {sorted(SOURCES)}")
    return SOURCES[name](spec)


def pad_to(values: np.ndarray, length: int, fill) -> np.ndarray:
    out = np.full((length,), fill, values.dtype)
    out[: len(values)] = values
    return out


UNENCODABLE, SOURCE_SKIPPED = "cannot be encoded", "skipped by its source"
SKIPPED_BY_SOURCE = {"skipped_by_source": True}  # what a source's None becomes (MarkSkips)


class MarkSkips:
    """A source whose skipped rows (None: it counted and logged them) reach the transform as
    SKIPPED_BY_SOURCE, so that the transform's guard sees them too: grain drops None elements
    before any map, and a stream of nothing but them would wait forever for a batch."""

    def __init__(self, source):
        self.source = source

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, index):
        record = self.source[index]
        return SKIPPED_BY_SOURCE if record is None else record


class SkippingTransform:
    """Base of the record -> example transforms: a record that cannot be used is counted
    (once per row, in `skips`), logged and dropped, and a run of them stops the stream
    (`guard`). Records the source already skipped (None or SKIPPED_BY_SOURCE) count for the
    guard only."""

    def __init__(self):
        self.skips = SkipCounter("training data")
        self.guard = SkipGuard("training records")

    @property
    def skipped(self) -> int:
        """Distinct rows this transform could not use."""
        return self.skips.total

    def _skip(self, record, reason: str, detail: str) -> None:
        if record is not None:
            self.skips.skip(reason, record.get("id"), detail)
        self.guard.skipped(f"{reason}: {detail}")
        return None


class ConversationTransform(SkippingTransform):
    """Record -> example for a VLM (or a decoder, when `preprocess` is None). A record that
    cannot be encoded (say, its first reply beyond max_length) is skipped. `packed`: the
    example is left unpadded for packing (see the module docstring)."""

    def __init__(
        self,
        encoder: ConversationEncoder,
        max_length: int,
        pad_id: int,
        preprocess=None,
        packed: bool = False,
    ):
        super().__init__()
        self.encoder, self.max_length, self.pad_id, self.preprocess = (
            encoder,
            max_length,
            pad_id,
            preprocess,
        )
        self.packed = packed

    def __call__(self, record):
        if record is None or record is SKIPPED_BY_SOURCE:
            return self._skip(None, SOURCE_SKIPPED, "see the data report")
        try:
            if "text" in record:
                tokens, loss_mask = self._plain_text(record["text"])
            else:
                sample = self.encoder.encode(
                    record["conversations"], has_image=record.get("image") is not None
                )
                tokens, loss_mask = sample.tokens, sample.loss_mask
        except SampleError as error:
            return self._skip(record, UNENCODABLE, str(error))
        self.guard.kept()
        if self.packed:
            example = {"tokens": tokens, "loss_mask": loss_mask}
        else:
            example = {
                "tokens": pad_to(tokens, self.max_length, self.pad_id),
                "loss_mask": pad_to(loss_mask, self.max_length, False),
                "input_mask": pad_to(np.ones(len(tokens), bool), self.max_length, False),
            }
        if self.preprocess is not None:
            example["images"] = self._image(record.get("image"))
        return example

    def _plain_text(self, text: str):
        tok = self.encoder.tokenizer
        ids = tok.encode(text, add_bos=tok.bos_id is not None)[: self.max_length - 1] + [tok.eos_id]
        mask = np.ones(len(ids), bool)
        mask[0] = tok.bos_id is None  # BOS is never a target
        return np.asarray(ids, np.int32), mask

    def _image(self, image):
        if isinstance(self.preprocess, qwen_patches.PatchConfig):  # never packed (packing_of)
            if image is None:
                return np.zeros(self.preprocess.shape, np.float32)
            return qwen_patches.preprocess(image, self.preprocess)
        configs = self.preprocess if isinstance(self.preprocess, tuple) else (self.preprocess,)
        if image is None:
            arrays = tuple(np.zeros((c.size, c.size, 3), np.float32) for c in configs)
        else:
            arrays = image_ops.preprocess(image, configs)
        if self.packed:  # n = 0 or 1 images, packed along the first axis
            arrays = tuple(a[None] if image is not None else a[None][:0] for a in arrays)
        return arrays if isinstance(self.preprocess, tuple) else arrays[0]


class CaptionTransform(SkippingTransform):
    """Record {"image", "caption"} -> images f32[S, S, 3], text_tokens i32[L], text_mask
    bool[L] (caption tokens then EOS, truncated to L), for contrastive training."""

    def __init__(self, tokenizer: Tokenizer, max_length: int, preprocess):
        super().__init__()
        self.tokenizer, self.max_length, self.preprocess = tokenizer, max_length, preprocess

    def __call__(self, record):
        if record is None or record is SKIPPED_BY_SOURCE:
            return self._skip(None, SOURCE_SKIPPED, "see the data report")
        if record.get("image") is None or not record.get("caption"):
            return self._skip(record, "no image or caption", "contrastive pairs need both")
        self.guard.kept()
        ids = self.tokenizer.encode(record["caption"])[: self.max_length - 1] + [
            self.tokenizer.eos_id
        ]
        return {
            "images": image_ops.preprocess(record["image"], self.preprocess),
            "text_tokens": pad_to(np.asarray(ids, np.int32), self.max_length, 0),
            "text_mask": pad_to(np.ones(len(ids), bool), self.max_length, False),
        }


def make_transform(config, model_cfg, tokenizer: Tokenizer):
    """The record -> example function of the config's task."""
    data_cfg = config.data
    max_length = int(data_cfg.max_length)
    template = get_template(data_cfg.template) if data_cfg.get("template") else None
    if template is not None and "system" in data_cfg:
        template = template.with_system(data_cfg.system)
    pad_id = tokenizer.pad_id if tokenizer.pad_id is not None else 0
    packed = packing_of(config, model_cfg) is not None
    if isinstance(model_cfg, VLMConfig):
        encoder = ConversationEncoder.for_model(
            tokenizer, template, model_cfg, max_length=max_length
        )
        preprocess = image_ops.preprocess_config_for(
            model_cfg.encoder, mode=data_cfg.get("preprocess")
        )
        preprocess = tuple(preprocess) if isinstance(preprocess, (list, tuple)) else preprocess
        return ConversationTransform(encoder, max_length, pad_id, preprocess, packed)
    if isinstance(model_cfg, Qwen25VLConfig):  # patch rows at the tower's fixed size
        encoder = ConversationEncoder.for_model(
            tokenizer, template, model_cfg, max_length=max_length
        )
        patches = qwen_patches.patch_config_for(model_cfg.encoder, data_cfg.get("preprocess"))
        return ConversationTransform(encoder, max_length, pad_id, patches, packed)
    if isinstance(model_cfg, DecoderConfig):  # text only: images never occur
        encoder = ConversationEncoder(
            tokenizer, template, num_image_tokens=1, max_length=max_length
        )
        return ConversationTransform(encoder, max_length, pad_id, None, packed)
    preprocess = image_ops.preprocess_config_for(model_cfg.image, mode=data_cfg.get("preprocess"))
    return CaptionTransform(tokenizer, max_length, preprocess)


def packing_of(config, model_cfg, pad_id: int = 0) -> Packing | None:
    """config.data.packing as a Packing, or None when it is off; raises on a value that cannot
    work (before anything compiles: experiment.build calls it too)."""
    spec = config.data.get("packing") or {}
    if not spec.get("enabled"):
        return None
    where = "config.data.packing"
    if isinstance(model_cfg, Qwen25VLConfig):
        raise ValueError(
            f"{where}.enabled: packed Qwen2.5-VL rows are not supported (its M-RoPE positions "
            "are computed per row, not per packed sample); set it to False"
        )
    if not isinstance(model_cfg, (VLMConfig, DecoderConfig)):
        raise ValueError(
            f"{where}.enabled packs next-token rows (tasks vlm and lm); set it to False for "
            f"task {config.get('task')!r}"
        )
    length, max_images, towers = int(config.data.max_length), 0, 0
    if isinstance(model_cfg, VLMConfig):
        max_images = spec.get("max_images_per_row")
        if max_images is None:  # as many images as the row has room for
            max_images = length // model_cfg.num_image_tokens
        if isinstance(max_images, bool) or not isinstance(max_images, int) or max_images < 1:
            raise ValueError(
                f"{where}.max_images_per_row={max_images!r} must be an integer >= 1 (None: "
                f"max_length // the {model_cfg.num_image_tokens} image tokens; raise max_length)"
            )
        if isinstance(model_cfg.encoder, FusedVitConfig):
            towers = len(model_cfg.encoder.towers)
    bins = spec.get("bins")
    if bins is not None and (isinstance(bins, bool) or not isinstance(bins, int) or bins < 1):
        raise ValueError(f"{where}.bins={bins!r} must be an integer >= 1, or None: the batch")
    strategy = spec.get("strategy", "first_fit")
    if strategy not in STRATEGIES:
        raise ValueError(f"{where}.strategy={strategy!r}; use one of {sorted(STRATEGIES)}")
    return Packing(length, max_images, towers, bins, strategy, pad_id)


def data_report(transform, specs, sources) -> dict:
    """Skipped rows of the transform (by reason) and each source's report."""
    report = {"skipped_samples": transform.skips.counts}
    for spec, source in zip(specs, sources):
        if hasattr(source, "report"):
            report[spec.get("name")] = source.report()
    return report


def train_dataset(config, model_cfg, tokenizer: Tokenizer, shard: pipeline.HostShard):
    """The batched training stream of this process, the transform (for skip counts) and the
    sources (for their reports). A source without records raises before anything compiles."""
    transform = make_transform(config, model_cfg, tokenizer)
    specs = [dict(s) for s in config.data.sources]
    if not specs:
        raise BadInputError("config.data.sources is empty; name at least one training source")
    sources = [make_source(s) for s in specs]
    for spec, source in zip(specs, sources):
        if not len(source):
            raise BadInputError(f"training source {spec} has no records; fix it or remove it")
        logging.info("training source %s: %d records", spec.get("name"), len(source))
    transform.guard.describe = lambda: str(data_report(transform, specs, sources))
    weights = [float(s.get("weight", 1.0)) for s in specs] if len(specs) > 1 else None
    ds = pipeline.training_dataset(
        [MarkSkips(s) for s in sources],
        transform,
        global_batch_size=int(config.batch_size),
        seed=int(config.seed),
        weights=weights,
        shard=shard,
        num_threads=config.data.get("num_threads"),  # None: the pipeline's default
        worker_processes=config.data.get("worker_processes"),
        packing=packing_of(config, model_cfg, getattr(transform, "pad_id", 0)),
    )
    return ds, transform, sources
