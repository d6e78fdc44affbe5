"""Models to evaluate, from the same sources as training initialization:

    "run:DIR"       a finished fgjax run (DIR/params_export, tokenizer and template from
                    DIR/config.json) or a parameters export directory itself (fgjax.native)
    "run:DIR@STEP"  the export that run wrote at STEP (its config.export_steps)
    "hf:DIR"   a Hugging Face directory (fgjax.hf.load; tokenizer.json in DIR); for a
               contrastive model a CLIPModel / SiglipModel, loaded whole (dual_encoder=True),
               its tokenizer DIR's tokenizer.json, tokenizer.model or spiece.model

A tokenizer path or template name given explicitly wins over what the source records.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from flax import nnx

from fgjax import hf, models, native, rundir, sharding
from fgjax.data.conversation import needs_image_token
from fgjax.data.templates import TEMPLATES, Template, get_template
from fgjax.data.tokenizer import Tokenizer, load_tokenizer, tokenizer_for
from fgjax.hf import io as hf_io
from fgjax.models.config import VLMConfig
from fgjax.models.contrastive import ContrastiveConfig
from fgjax.models.partitioning import DEFAULT_RULES
from fgjax.models.qwen_vl import Qwen25VLConfig

KEEP = object()  # "keep the template's own system message"


@dataclasses.dataclass
class Loaded:
    model: Any
    cfg: Any
    tokenizer: Tokenizer
    template: Template | None
    source: str
    recorded: dict = dataclasses.field(default_factory=dict)  # the run's data config


def _load_weights(source: str, mesh=None, rules=DEFAULT_RULES, dual_encoder: bool = False,
                  image_size: int | None = None):  # fmt: skip
    """(model, cfg, recorded data config) of a source. With a mesh, an fgjax export is
    restored straight onto it (each parameter placed by its logical axes; needed with several
    processes). dual_encoder: an HF CLIPModel / SiglipModel as a whole ContrastiveModel.
    image_size: the fixed_size given to an HF Qwen-VL's tower (evaluated at one size)."""
    kind, _, path = source.partition(":")
    if kind == "run":
        target = rundir.run_export(path)
        cfg = native.read_config(target)
        graphdef, abstract = nnx.split(models.abstract(cfg))
        shardings = None if mesh is None else sharding.state_shardings(abstract, mesh, rules)
        model = nnx.merge(graphdef, native.load_params(target, cfg, shardings))
        return model, cfg, rundir.read_config(path.partition("@")[0]).get("data", {})
    if kind == "hf":
        overrides = {}
        if image_size is not None and _has_fixed_size(str(path)):
            overrides["fixed_size"] = image_size
        model, cfg = hf.load(str(path), dual_encoder=dual_encoder, **overrides)
        return model, cfg, {"tokenizer": str(path)}
    raise ValueError(f"model source {source!r} must start with 'run:' or 'hf:'")


def _has_fixed_size(path: str) -> bool:
    """Whether the HF VLM in `path` is a Qwen2.5-VL or Qwen3-VL, whose tower takes the
    evaluation's one image size as its fixed_size (an HF checkpoint has none)."""
    _, cfg = hf.from_hf(hf_io.read_config(path))
    return isinstance(cfg, Qwen25VLConfig)


def _tokenizer(path: str | None, source: str, roles=None, image_token: bool = True) -> Tokenizer:
    if not path:
        raise ValueError(
            f"no tokenizer known for {source}: set config.tokenizer to a tokenizer.json, a "
            "sentencepiece model or a directory holding one"
        )
    return tokenizer_for(path, image_token=image_token, roles=roles)


def load_vlm(source: str, *, tokenizer: str | None = None, template: str | None = None,
             system=KEEP, mesh=None, rules=DEFAULT_RULES, image_size: int | None = None,
             ) -> Loaded:  # fmt: skip
    """A VLM with its tokenizer (LLaVA's <image> added if missing, for the layouts that use
    it: conversation.needs_image_token) and chat template; `system` replaces the template's
    system message (None: none); `mesh`: restore onto it; `image_size`: the image side of an
    HF Qwen-VL or InternVL (evaluate/image_inputs.py)."""
    model, cfg, data = _load_weights(source, mesh, rules, image_size=image_size)
    if not isinstance(cfg, (VLMConfig, Qwen25VLConfig)):
        raise ValueError(f"{source} holds a {type(cfg).__name__}, not a VLM")
    name = template or data.get("template")
    if not name:
        raise ValueError(
            f"no chat template known for {source}: set config.template to one of {sorted(TEMPLATES)}"
        )
    chosen = get_template(name)
    if system is not KEEP:
        chosen = chosen.with_system(system)
    roles = None if tokenizer else data.get("tokenizer_roles")  # the run's, for the run's file
    loaded_tokenizer = _tokenizer(
        tokenizer or data.get("tokenizer"), source, roles, needs_image_token(cfg.image_layout)
    )
    return Loaded(model, cfg, loaded_tokenizer, chosen, source, dict(data))


def load_contrastive(source: str, *, tokenizer: str | None = None, mesh=None) -> Loaded:
    """A ContrastiveModel (for mining negatives and zero-shot references) with its caption
    tokenizer; "hf:DIR" loads a CLIPModel / SiglipModel whole, with DIR's tokenizer."""
    model, cfg, data = _load_weights(source, mesh, dual_encoder=True)
    if not isinstance(cfg, ContrastiveConfig):
        raise ValueError(f"{source} holds a {type(cfg).__name__}, not a ContrastiveModel")
    tok_path = tokenizer or data.get("tokenizer")
    if not tok_path:
        raise ValueError(f"no tokenizer known for {source}: set config.negatives.tokenizer")
    try:
        loaded_tokenizer = load_tokenizer(tok_path)
    except FileNotFoundError as e:
        raise FileNotFoundError(
            f"{e}: give {source}'s tokenizer explicitly (config.negatives.tokenizer, or "
            "reference_tokenizers= of configs/eval/compare.py)"
        ) from e
    return Loaded(model, cfg, loaded_tokenizer, None, source)
