"""Config-driven evaluation: one model, a list of datasets, a set of protocols.

    python -m fgjax.main --config=configs/eval/fine_grained.py:model=run:DIR --workdir=OUT

config (see configs/eval/ for complete files):
  job        "eval"
  model      "run:DIR" | "hf:DIR" (loading.py); tokenizer, template: override the recorded
             ones; system: replaces the template's system message when present
  batch_size global images per step; mesh {"data": -1}; preprocess: image mode or None;
             prompt_bucket: prompts are padded to a multiple of it (few compiled shapes)
  datasets   dataset specs (datasets.py): names or dicts; a dict's "protocols" list limits
             the protocols run on that dataset (e.g. ["probe"])
  protocols  {name: options}: likelihood, multiple_choice, open_world, closed_world, probe
             (per dataset) and general_qa {"sources": [question source specs]} (vqa.py);
             options are the fields of each protocol's config dataclass
  negatives  {"model": "run:DIR" of a ContrastiveModel or None (class-name text similarity),
             "tokenizer", "prompt"}, or {"miner": "taxonomy"} (specimens only); options_dir: where option sets are cached (default
             OUT/options -- point every model of a comparison at the same folder)
  synonyms   {dataset name: JSON file {class name: [synonyms]}} for generation matching
  overwrite  rerun protocols that already finished (default: a rerun skips them)

Outputs: OUT/<dataset>/<result>/{metrics.json, predictions.jsonl, per_class.json,
confusion.json}, OUT/general_qa/<source>/<result>/..., OUT/summary.json, TensorBoard scalars.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path

import jax
from clu import metric_writers

from fgjax import distributed
from fgjax.data.conversation import ConversationEncoder
from fgjax.evaluate import (
    choices,
    datasets,
    generation,
    likelihood,
    loading,
    negatives,
    probe,
    report,
    vqa,
)
from fgjax.evaluate.loop import Evaluator, process0
from fgjax.train import sharding
from fgjax.train.logging import setup_python_logging

PROTOCOL_CONFIGS = {
    "likelihood": likelihood.LikelihoodConfig,
    "multiple_choice": choices.MultipleChoiceConfig,
    "open_world": generation.GenerationConfig,
    "closed_world": generation.GenerationConfig,
    "probe": probe.ProbeConfig,
    "general_qa": vqa.QAConfig,
}


def protocol_config(name: str, options) -> object:
    """The protocol's config dataclass from a dict; unknown fields are an error."""
    if name not in PROTOCOL_CONFIGS:
        raise ValueError(f"unknown protocol {name!r}; available: {sorted(PROTOCOL_CONFIGS)}")
    cls = PROTOCOL_CONFIGS[name]
    options = dict(options or {})
    if name == "general_qa":
        options.pop("sources", None)
    fields = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(options) - fields)
    if unknown:
        raise ValueError(f"protocols.{name}: unknown options {unknown}; valid: {sorted(fields)}")
    return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in options.items()})


def make_miner(config, evaluator: Evaluator):
    spec = dict(config.get("negatives") or {})
    if spec.get("miner") == "taxonomy":
        return negatives.TaxonomyMiner()
    if not spec.get("model"):
        return negatives.TextMiner()
    loaded = loading.load_contrastive(
        spec["model"], tokenizer=spec.get("tokenizer"), mesh=evaluator.mesh
    )
    return negatives.ContrastiveMiner(
        loaded.model, loaded.tokenizer, source=spec["model"],
        prompt=spec.get("prompt", "a photo of a {}."), batch_size=evaluator.batch_size,
        mesh=evaluator.mesh,
    )  # fmt: skip


def run_protocol(name, cfg, evaluator, dataset, spec, config, workdir, miner_cache):
    """The Results of one protocol on one dataset."""
    synonyms = _synonyms(config, dataset.name)
    if name == "likelihood":
        return [likelihood.evaluate(evaluator, dataset, cfg)]
    if name == "open_world":
        return [generation.open_world(evaluator, dataset, cfg, synonyms)]
    if name == "closed_world":
        return [generation.closed_world(evaluator, dataset, cfg, synonyms)]
    if name == "multiple_choice":
        if "miner" not in miner_cache:
            miner_cache["miner"] = make_miner(config, evaluator)
        options_dir = config.get("options_dir") or workdir / "options"
        sets = choices.option_sets(dataset, miner_cache["miner"], cfg.k, cfg.seed, options_dir)
        return choices.evaluate(evaluator, dataset, sets, cfg)
    if name == "probe":
        return probe.evaluate(evaluator, datasets.from_spec(spec, split="train"), dataset, cfg)
    raise ValueError(f"protocol {name!r} does not apply to a dataset")


def evaluate(config, workdir: str) -> dict:
    """Runs every configured (dataset, protocol) not yet finished; returns the summary
    {dataset: {result: metrics}}."""
    distributed.initialize()
    setup_python_logging()
    workdir = Path(workdir).absolute()
    workdir.mkdir(parents=True, exist_ok=True)
    if jax.process_index() == 0:
        (workdir / "config.json").write_text(config.to_json_best_effort(indent=2))

    system = config.system if "system" in config else loading.KEEP
    mesh = sharding.make_mesh(dict(config.get("mesh") or {"data": -1}))
    loaded = loading.load_vlm(
        config.model, tokenizer=config.get("tokenizer"), template=config.get("template"),
        system=system, mesh=mesh,
    )  # fmt: skip
    encoder = ConversationEncoder.for_model(loaded.tokenizer, loaded.template, loaded.cfg)
    evaluator = Evaluator(
        loaded.model, encoder, batch_size=int(config.get("batch_size", 8)), mesh=mesh,
        preprocess_mode=config.get("preprocess"),
        prompt_bucket=int(config.get("prompt_bucket", 32)),
    )  # fmt: skip
    del loaded  # the evaluator holds the placed parameters
    writer = metric_writers.create_default_writer(
        str(workdir), just_logging=jax.process_index() > 0
    )
    protocols = {k: dict(v or {}) for k, v in dict(config.get("protocols") or {}).items()}
    configs = {k: protocol_config(k, v) for k, v in protocols.items()}
    overwrite = bool(config.get("overwrite", False))
    summary, miner_cache = _read_summary(workdir), {}

    def finish(group: str, protocol: str, results) -> None:
        for result in results:
            report.write(result, workdir / group / result.protocol, writer)
            summary.setdefault(group, {})[result.protocol] = dict(report.scalars(result.metrics))
            logging.info("%s %s: %s", group, result.protocol, _headline(result.metrics))
        _mark_done(workdir / group, protocol, [r.protocol for r in results])
        _write_summary(workdir, summary)

    for spec in list(config.get("datasets") or []):
        spec = spec if isinstance(spec, str) else dict(spec)
        dataset = datasets.from_spec(spec)
        logging.info("dataset %s (%s): %d examples, %d classes", dataset.name, dataset.split,
                     len(dataset), dataset.num_classes)  # fmt: skip
        wanted = None if isinstance(spec, str) else spec.get("protocols")
        for name, cfg in configs.items():
            if name == "general_qa" or (wanted is not None and name not in wanted):
                continue
            if not overwrite and _is_done(workdir / dataset.name, name):
                logging.info("%s %s: already done, skipped", dataset.name, name)
                continue
            results = run_protocol(
                name, cfg, evaluator, dataset, spec, config, workdir, miner_cache
            )
            finish(dataset.name, name, results)

    if "general_qa" in configs:
        for source in protocols["general_qa"].get("sources") or [{"source": "specimens"}]:
            source = dict(source)
            group = f"general_qa/{source.get('name', source.get('source', 'specimens'))}"
            if not overwrite and _is_done(workdir / group, "general_qa"):
                continue
            questions = vqa.load_questions(source)
            finish(
                group,
                "general_qa",
                vqa.evaluate(evaluator, questions, group, configs["general_qa"]),
            )
    writer.close()
    return summary


def _synonyms(config, dataset_name: str):
    path = dict(config.get("synonyms") or {}).get(dataset_name)
    return json.loads(Path(path).read_text()) if path else None


def _headline(metrics: dict) -> str:
    keys = ("accuracy", "exact_match", "vqa_accuracy", "unparseable", "unmatched")
    return ", ".join(f"{k}={metrics[k]:.4g}" for k in keys if k in metrics)


def _done_file(directory: Path, protocol: str) -> Path:
    return directory / f".done-{protocol}"


def _is_done(directory: Path, protocol: str) -> bool:
    """Whether a protocol finished earlier, as process 0 sees it (all processes agree)."""
    return process0(_done_file(directory, protocol).is_file())


def _mark_done(directory: Path, protocol: str, results: list[str]) -> None:
    if jax.process_index() == 0:
        directory.mkdir(parents=True, exist_ok=True)
        _done_file(directory, protocol).write_text(json.dumps(results))


def _read_summary(workdir: Path) -> dict:
    path = workdir / "summary.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def _write_summary(workdir: Path, summary: dict) -> None:
    if jax.process_index() == 0:
        (workdir / "summary.json").write_text(json.dumps(summary, indent=2))
