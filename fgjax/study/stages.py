"""The study's runs as plain training and evaluation configs, one per stage and variant.

Workdir layout, per seed (`<workdir>/seed<k>/`):
  tokenizer/                      byte-level BPE trained on the specimens texts
  stage0/encoder/  stage0/llm/    component runs (base = the export at base_step)
  stage1/<variant>/  stage2/<variant>/
  eval/<variant>/  eval/options/  evaluation runs; every variant answers the same questions
"""

from __future__ import annotations

import dataclasses
import itertools
from pathlib import Path

import ml_collections

from fgjax import native
from fgjax.train.init import export_dir

LEVELS = {
    "encoder": ("base", "upgraded"),
    "llm": ("base", "upgraded"),
    "pretrain_llm": ("frozen", "trained"),
}


@dataclasses.dataclass(frozen=True)
class Variant:
    encoder: str
    llm: str
    pretrain_llm: str

    @property
    def name(self) -> str:
        return f"enc-{self.encoder}_llm-{self.llm}_pretrain-{self.pretrain_llm}"


def variants() -> list[Variant]:
    return [Variant(*v) for v in itertools.product(*LEVELS.values())]


@dataclasses.dataclass(frozen=True)
class Unit:
    """One run: `kind` "train" or "eval", its config, workdir, and a cost weight for the ETA
    (seconds on 2 CPU cores with the default config; only the ratios matter)."""

    name: str
    kind: str
    config: ml_collections.ConfigDict
    workdir: Path
    weight: float
    variant: Variant | None = None

    def done(self) -> bool:
        if self.kind == "train":
            return native.is_native(export_dir(self.workdir))
        return (self.workdir / "summary.json").is_file() and (
            self.workdir / ".study-done"
        ).is_file()


def _train(
    seed: int, steps: int, batch: int, lr: float, warmup: int, checkpoint_every: int
) -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.job, c.seed = "train", seed
    c.batch_size, c.grad_accum, c.num_steps = batch, 1, steps
    c.optim = dict(
        lr=lr,
        warmup_steps=min(warmup, steps // 4),
        schedule="cosine",
        weight_decay=1e-4,
        clip_norm=1.0,
    )
    c.mesh = {"data": -1}
    c.checkpoint = dict(every_steps=checkpoint_every, keep=1, asynchronous=True)
    c.log_every = max(steps // 4, 1)
    return c


def _specimens(study, kind: str, **extra) -> dict:
    return {
        "name": "specimens",
        "kind": kind,
        "size": study.train_size,
        "resolution": study.resolution,
        "seed": 0,
        **extra,
    }


def encoder_run(study, seed: int, root: Path, tokenizer: Path, vocab: int) -> Unit:
    e = study.encoder
    c = _train(seed, e.steps, e.batch_size, e.lr, 50, study.checkpoint_every)
    c.task, c.stage = "contrastive", None
    c.trainable = {"image": True, "text": True, "heads": True}
    c.model = dict(
        encoder=e.preset, encoder_overrides=dict(e.overrides), text={**dict(e.text), "vocab_size": vocab},
        embed_dim=e.embed_dim,
    )  # fmt: skip
    c.data = dict(
        sources=[_specimens(study, "captions", caption_kinds=list(e.caption_kinds))],
        tokenizer=str(tokenizer),
        max_length=e.text.max_length,
        preprocess=None,
    )
    c.export_steps = [e.base_step]
    return Unit(
        "stage 0: contrastive encoder", "train", c, root / "stage0" / "encoder", e.steps * 0.27
    )


def llm_run(study, seed: int, root: Path, tokenizer: Path, vocab: int) -> Unit:
    m = study.llm
    c = _train(seed, m.steps, m.batch_size, m.lr, 30, study.checkpoint_every)
    c.task, c.stage = "lm", None
    c.trainable = {"decoder": True}
    c.model = dict(decoder=m.preset, decoder_overrides={**dict(m.overrides), "vocab_size": vocab})
    c.data = dict(
        sources=[_specimens(study, "text")],
        tokenizer=str(tokenizer),
        template="plain",
        max_length=m.max_length,
    )
    c.export_steps = [m.base_step]
    return Unit("stage 0: language model", "train", c, root / "stage0" / "llm", m.steps * 0.26)


def _snapshot(root: Path, which: str, level: str, study) -> str:
    """The "run:" source of a stage-0 model: its base export or its final parameters."""
    run = root / "stage0" / which
    step = (study.encoder if which == "encoder" else study.llm).base_step
    return f"run:{run}@{step}" if level == "base" else f"run:{run}"


def _component(root: Path, which: str, level: str, study) -> str:
    """The init source of a VLM component: the encoder is the contrastive model's image tower."""
    return _snapshot(root, which, level, study) + ("#image" if which == "encoder" else "")


def _vlm_model(study, vocab: int, image_token: int) -> dict:
    e, m = study.encoder, study.llm
    return dict(
        encoder=e.preset, decoder=m.preset, projector="mlp2x_gelu", image_token_id=image_token,
        encoder_overrides=dict(e.overrides), decoder_overrides={**dict(m.overrides), "vocab_size": vocab},
    )  # fmt: skip


def align_run(
    study, seed: int, root: Path, tokenizer: Path, vocab: int, image_token: int, v: Variant
) -> Unit:
    a = study.align
    c = _train(seed, a.steps, a.batch_size, a.lr, 20, study.checkpoint_every)
    c.task = "vlm"
    c.stage = "align" if v.pretrain_llm == "frozen" else "align_llm"
    c.optim.lr_mults = {"decoder": a.llm_lr_mult}
    c.model = _vlm_model(study, vocab, image_token)
    c.init = {
        "encoder": _component(root, "encoder", v.encoder, study),
        "decoder": _component(root, "llm", v.llm, study),
    }
    c.data = dict(
        sources=[_specimens(study, "captions")],
        tokenizer=str(tokenizer),
        template="plain",
        max_length=a.max_length,
        preprocess=None,
    )
    weight = a.steps * (0.21 if v.pretrain_llm == "trained" else 0.15)
    return Unit(f"stage 1: align {v.name}", "train", c, root / "stage1" / v.name, weight, v)


def finetune_run(
    study, seed: int, root: Path, tokenizer: Path, vocab: int, image_token: int, v: Variant
) -> Unit:
    f = study.finetune
    c = _train(seed, f.steps, f.batch_size, f.lr, 20, study.checkpoint_every)
    c.task, c.stage = "vlm", "finetune"
    c.model = _vlm_model(study, vocab, image_token)
    c.init = {"vlm": f"run:{root / 'stage1' / v.name}"}
    c.data = dict(
        sources=[_specimens(study, "instruct")], tokenizer=str(tokenizer), template=study.template,
        system=study.system, max_length=f.max_length, preprocess=None,
    )  # fmt: skip
    return Unit(
        f"stage 2: instruct {v.name}", "train", c, root / "stage2" / v.name, f.steps * 0.5, v
    )


def eval_run(study, root: Path, tokenizer: Path, v: Variant) -> Unit:
    ev = study.eval
    if ev.negatives_from not in LEVELS["encoder"]:
        raise ValueError(
            f"eval.negatives_from={ev.negatives_from!r}: mine with one of {LEVELS['encoder']}"
        )
    c = ml_collections.ConfigDict()
    c.job = "eval"
    c.model = f"run:{root / 'stage2' / v.name}"
    c.tokenizer, c.template, c.system = str(tokenizer), study.template, study.system
    c.batch_size, c.mesh, c.preprocess = ev.batch_size, {"data": -1}, None
    c.datasets = [{
        "name": "specimens", "source": "specimens", "size": ev.size, "resolution": study.resolution,
        "train_size": ev.probe_train_size,
    }]  # fmt: skip
    c.protocols = {
        "multiple_choice": {"k": 5, "seed": 0, "answer_modes": ["likelihood", "letters"]},
        "likelihood": {"alphas": [], "no_image_prior": False, "primary": "sum"},
        "general_qa": {
            "sources": [
                {
                    "source": "specimens",
                    "split": "test",
                    "size": ev.size // 6,
                    "forms": ["choice"],  # the table reports multiple choice only
                    "resolution": study.resolution,
                }
            ],
            "choice_modes": ["likelihood", "letters"],
        },  # fmt: skip
    }
    if v.llm == "base" and v.pretrain_llm == "frozen":  # one probe per encoder: its frozen features
        c.protocols["probe"] = {"features": ["vision_patch_mean"]}
    c.negatives = {
        "model": _snapshot(root, "encoder", ev.negatives_from, study),
        "tokenizer": str(tokenizer),
        "prompt": "a photo of a {}.",
    }
    c.options_dir = str(root / "eval" / "options")
    return Unit(f"evaluate {v.name}", "eval", c, root / "eval" / v.name, ev.size * 0.06, v)


def plan(study, seed: int, root: Path, tokenizer: Path, vocab: int, image_token: int) -> list[Unit]:
    """Every run of one seed, in order."""
    units = [
        encoder_run(study, seed, root, tokenizer, vocab),
        llm_run(study, seed, root, tokenizer, vocab),
    ]
    for v in variants():
        units.append(align_run(study, seed, root, tokenizer, vocab, image_token, v))
    for v in variants():
        units.append(finetune_run(study, seed, root, tokenizer, vocab, image_token, v))
    for v in variants():
        units.append(eval_run(study, root, tokenizer, v))
    return units
