"""The study's runs as plain training and evaluation configs, one per stage and arm.

Workdir layout:
  tokenizer/                     byte-level BPE trained on the specimens texts
  components/                    stage 0, trained once and shared by every seed (the paper
    llm-base/ llm-upgraded/        fixes its encoders and LLMs): two language models, each its
                                   own complete run (the upgrade: more text, longer training);
    filter/ kept.json              a filtering network (DFN's recipe: the contrastive model
                                   trained on a small curated set) and the pairs it keeps;
    encoder-base/ encoder-upgraded/  contrastive models of one architecture and budget, on the
                                   raw pool and on the filtered pool;
    ceiling.json                   ridge probes on each encoder's frozen features
  options/                       the five-way option sets, mined once from the taxonomy
  seed<k>/stage1/<arm>/ seed<k>/stage2/<arm>/ seed<k>/eval/<arm>/
"""

from __future__ import annotations

import dataclasses
import itertools
from pathlib import Path

import ml_collections

from fgjax import native
from fgjax.rundir import export_dir

LEVELS = {
    "encoder": ("base", "upgraded"),
    "llm": ("base", "upgraded"),
    "pretrain": ("frozen", "trained"),
}


@dataclasses.dataclass(frozen=True)
class Arm:
    """One VLM recipe: encoder and LLM level, the LLM during alignment ("frozen", "trained",
    or "none": no alignment stage), and the instruction data ("general" or "classify")."""

    encoder: str
    llm: str
    pretrain: str
    instruct: str = "general"

    @property
    def name(self) -> str:
        if self.pretrain == "none":
            return "noalign"
        if self.instruct == "classify":
            return "classify"
        return f"enc-{self.encoder}_llm-{self.llm}_pretrain-{self.pretrain}"

    @property
    def aligned(self) -> str:
        """The name of the stage-1 run this arm starts from (classification data changes only
        instruction tuning, so that arm shares its twin's alignment)."""
        return dataclasses.replace(self, instruct="general").name

    def levels(self) -> dict[str, str]:
        return dataclasses.asdict(self)


def arms() -> list[Arm]:
    """The 2x2x2 grid, then the upgraded pair without alignment (finding 3) and with
    classification data in instruction tuning (finding 4, Zhang et al. 2024's remedy)."""
    grid = [Arm(*levels) for levels in itertools.product(*LEVELS.values())]
    return grid + [Arm("upgraded", "upgraded", "none"), Arm("upgraded", "upgraded", "trained", "classify")]  # fmt: skip


@dataclasses.dataclass(frozen=True)
class Unit:
    """One step of the study: `kind` "train", "eval", "filter" or "ceiling", its config and
    workdir, the stage it belongs to (for timings), a cost weight for the ETA (seconds on one
    CPU core with the default config; only the ratios matter), and the names of the units
    whose outputs it reads (`needs`: it starts only once they are done)."""

    name: str
    kind: str
    config: ml_collections.ConfigDict
    workdir: Path
    weight: float
    stage: str
    arm: Arm | None = None
    seed: int | None = None
    needs: tuple[str, ...] = ()

    def done(self) -> bool:
        if self.kind == "train":
            return native.is_native(export_dir(self.workdir))
        return (self.workdir / DONE[self.kind]).is_file()


DONE = {"eval": ".study-done", "filter": "kept.json", "ceiling": "ceiling.json"}
FILTER = "stage 0: filter the pool"


def component_name(which: str, level: str) -> str:
    """The unit name of a stage-0 component: which is "encoder" or "llm"."""
    return f"stage 0: {'encoder' if which == 'encoder' else 'language model'} ({level})"


@dataclasses.dataclass(frozen=True)
class Paths:
    root: Path
    tokenizer: Path
    vocab: int
    image_token: int

    @property
    def components(self) -> Path:
        return self.root / "components"

    def seed(self, seed: int) -> Path:
        return self.root / f"seed{seed}"


def _train(
    seed: int, steps: int, batch: int, lr: float, warmup: int, checkpoint_every: int,
    steps_per_call: int = 1,
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
    c.steps_per_call = steps_per_call
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


def _contrastive(
    study, p: Paths, name: str, stage: str, steps: int, source: dict, needs: tuple[str, ...] = ()
) -> Unit:
    e = study.encoder
    c = _train(study.component_seed, steps, e.batch_size, e.lr, 50, study.checkpoint_every,
               study.get("steps_per_call", 1))
    c.task, c.stage = "contrastive", None
    c.trainable = {"image": True, "text": True, "heads": True}
    c.model = dict(
        encoder=e.preset, encoder_overrides=dict(e.overrides),
        text={**dict(e.text), "vocab_size": p.vocab}, embed_dim=e.embed_dim,
    )  # fmt: skip
    c.data = dict(sources=[source], tokenizer=str(p.tokenizer), max_length=e.text.max_length,
                  preprocess=None)  # fmt: skip
    return Unit(name, "train", c, p.components / stage, steps * 0.12, "stage 0", needs=needs)


def filter_runs(study, p: Paths) -> list[Unit]:
    """The filtering network (trained on curated pairs) and the pool selection it makes."""
    f = study.filter
    curated = _specimens(study, "curated", split="validation", size=f.curated_size)
    train = _contrastive(study, p, "stage 0: filtering network", "filter", f.steps, curated)
    c = ml_collections.ConfigDict()
    c.model = f"run:{train.workdir}"
    c.tokenizer = str(p.tokenizer)
    c.pool = _specimens(study, "captions")
    c.keep_fraction = f.keep_fraction
    select = Unit(FILTER, "filter", c, p.components, 6.0, "stage 0", needs=(train.name,))
    return [train, select]


def encoder_runs(study, p: Paths) -> list[Unit]:
    """Same architecture and budget; the upgrade trains on the pairs the filter kept."""
    raw = _specimens(study, "captions")
    kept = _specimens(study, "captions", keep=str(p.components / DONE["filter"]))
    return [
        _contrastive(study, p, component_name("encoder", level), f"encoder-{level}",
                     study.encoder.steps, source, needs)
        for level, source, needs in (("base", raw, ()), ("upgraded", kept, (FILTER,)))
    ]  # fmt: skip


def llm_runs(study, p: Paths) -> list[Unit]:
    """Each LLM level its own complete run: the upgrade reads more text for longer."""
    m, units = study.llm, []
    for level in LEVELS["llm"]:
        own = m[level]
        c = _train(study.component_seed, own.steps, m.batch_size, m.lr, 30,
                   study.checkpoint_every, study.get("steps_per_call", 1))
        c.task, c.stage = "lm", None
        c.trainable = {"decoder": True}
        c.model = dict(decoder=m.preset, decoder_overrides={**dict(m.overrides), "vocab_size": p.vocab})
        c.data = dict(
            sources=[_specimens(study, "text", text_fraction=own.text_fraction)],
            tokenizer=str(p.tokenizer), template="plain", max_length=m.max_length,
        )  # fmt: skip
        units.append(Unit(component_name("llm", level), "train", c,
                          p.components / f"llm-{level}", own.steps * 0.15, "stage 0"))  # fmt: skip
    return units


def ceiling_run(study, p: Paths) -> Unit:
    c = ml_collections.ConfigDict()
    c.encoders = {level: f"run:{p.components / f'encoder-{level}'}" for level in LEVELS["encoder"]}
    c.tokenizer = str(p.tokenizer)
    c.train_size, c.resolution = study.eval.probe_train_size, study.resolution
    c.dataset = test_set(study)
    c.options_dir = str(p.root / "options")
    needs = tuple(component_name("encoder", level) for level in LEVELS["encoder"])
    return Unit("stage 0: probe ceilings", "ceiling", c, p.components, 8.0, "stage 0", needs=needs)


def _component(p: Paths, which: str, level: str) -> str:
    """The init source of a VLM component: the encoder is the contrastive model's image tower."""
    return f"run:{p.components / f'{which}-{level}'}" + ("#image" if which == "encoder" else "")


def _vlm_model(study, p: Paths) -> dict:
    e, m = study.encoder, study.llm
    return dict(
        encoder=e.preset, decoder=m.preset, projector=study.projector, image_token_id=p.image_token,
        encoder_overrides=dict(e.overrides), decoder_overrides={**dict(m.overrides), "vocab_size": p.vocab},
    )  # fmt: skip


def _components(p: Paths, arm: Arm) -> dict:
    return {"encoder": _component(p, "encoder", arm.encoder),
            "decoder": _component(p, "llm", arm.llm)}  # fmt: skip


def _component_needs(arm: Arm) -> tuple[str, ...]:
    return component_name("encoder", arm.encoder), component_name("llm", arm.llm)


def align_run(study, p: Paths, seed: int, arm: Arm) -> Unit:
    a = study.align
    c = _train(seed, a.steps, a.batch_size, a.lr, 20, study.checkpoint_every,
               a.get("steps_per_call", study.get("steps_per_call", 1)))
    c.task = "vlm"
    c.stage = "align" if arm.pretrain == "frozen" else "align_llm"
    c.loss_tokens_per_row = a.loss_tokens_per_row
    c.optim.lr_mults = {"decoder": a.llm_lr_mult}
    c.model = _vlm_model(study, p)
    c.init = _components(p, arm)
    c.data = dict(
        sources=[_specimens(study, "captions")], tokenizer=str(p.tokenizer), template="plain",
        max_length=a.max_length, preprocess=None,
    )  # fmt: skip
    weight = a.steps * (0.07 if arm.pretrain == "trained" else 0.05)
    return Unit(_align_name(seed, arm.name), "train", c, p.seed(seed) / "stage1" / arm.name,
                weight, "stage 1", arm, seed, _component_needs(arm))  # fmt: skip


def _align_name(seed: int, arm_name: str) -> str:
    return f"seed {seed}: align {arm_name}"


def _finetune_name(seed: int, arm: Arm) -> str:
    return f"seed {seed}: instruct {arm.name}"


def finetune_run(study, p: Paths, seed: int, arm: Arm) -> Unit:
    f = study.finetune
    c = _train(seed, f.steps, f.batch_size, f.lr, 20, study.checkpoint_every,
               f.get("steps_per_call", study.get("steps_per_call", 1)))
    c.task, c.stage = "vlm", "finetune"
    c.loss_tokens_per_row = f.loss_tokens_per_row
    c.model = _vlm_model(study, p)
    if arm.pretrain == "none":  # straight from the components: a fresh projector
        c.init, needs = _components(p, arm), _component_needs(arm)
    else:
        c.init = {"vlm": f"run:{p.seed(seed) / 'stage1' / arm.aligned}"}
        needs = (_align_name(seed, arm.aligned),)
    sources = [_specimens(study, "instruct")]
    if arm.instruct == "classify":
        sources = [{**sources[0], "weight": 1 - f.classify_weight},
                   _specimens(study, "classify", weight=f.classify_weight)]  # fmt: skip
    c.data = dict(
        sources=sources, tokenizer=str(p.tokenizer), template=study.template,
        system=study.system, max_length=f.max_length, preprocess=None,
    )  # fmt: skip
    return Unit(_finetune_name(seed, arm), "train", c, p.seed(seed) / "stage2" / arm.name,
                f.steps * 0.1, "stage 2", arm, seed, needs)  # fmt: skip


def test_set(study) -> dict:
    """The one fixed test set of every seed and arm."""
    return {"name": "specimens", "source": "specimens", "size": study.eval.size,
            "resolution": study.resolution}  # fmt: skip


def _benchmark(study, blank: bool) -> dict:
    return {"name": "blank" if blank else "benchmark", "source": "specimens", "split": "test",
            "size": study.eval.size, "resolution": study.resolution, "benchmark": True,
            "blank": blank}  # fmt: skip


READOUTS = {"letter": "letters", "cloze": "likelihood"}  # the study's names -> the evaluator's


def eval_run(study, p: Paths, seed: int, arm: Arm) -> Unit:
    ev = study.eval
    c = ml_collections.ConfigDict()
    c.job = "eval"
    c.model = f"run:{p.seed(seed) / 'stage2' / arm.name}"
    c.tokenizer, c.template, c.system = str(p.tokenizer), study.template, study.system
    c.batch_size, c.mesh, c.preprocess = ev.batch_size, {"data": -1}, None
    c.datasets = [test_set(study)]
    modes = list(READOUTS.values())
    c.protocols = {
        "multiple_choice": {"k": 5, "seed": 0, "answer_modes": modes},
        "general_qa": {"sources": [_benchmark(study, False), _benchmark(study, True)],
                       "answer_modes": modes},
    }  # fmt: skip
    c.negatives = {"miner": ev.miner}
    c.options_dir = str(p.root / "options")
    return Unit(f"seed {seed}: evaluate {arm.name}", "eval", c, p.seed(seed) / "eval" / arm.name,
                ev.size * 0.015, "evaluation", arm, seed, (_finetune_name(seed, arm),))  # fmt: skip


def components(study, p: Paths) -> list[Unit]:
    """Stage 0, shared by the seeds, in order."""
    return [*llm_runs(study, p), *filter_runs(study, p), *encoder_runs(study, p),
            ceiling_run(study, p)]  # fmt: skip


def seed_plan(study, p: Paths, seed: int) -> list[Unit]:
    """Every run of one seed, in order: align, instruct and evaluate each arm."""
    units = []
    for arm in arms():
        if arm.pretrain != "none" and arm.instruct == "general":  # classify reuses its twin's
            units.append(align_run(study, p, seed, arm))
        units += [finetune_run(study, p, seed, arm), eval_run(study, p, seed, arm)]
    return units


def seeds(study) -> range:
    """The study's seeds: first_seed .. first_seed + seeds - 1."""
    return range(int(study.first_seed), int(study.first_seed) + int(study.seeds))


def plan(study, p: Paths) -> list[Unit]:
    return components(study, p) + [u for seed in seeds(study) for u in seed_plan(study, p, seed)]
