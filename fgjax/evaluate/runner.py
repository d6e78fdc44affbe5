"""Config-driven evaluation: one model, a list of datasets, a set of protocols.

    python -m fgjax.main --config=configs/eval/fine_grained.py:model=run:DIR --workdir=OUT

config (see configs/eval/ for complete files):
  job        "eval"
  model      "run:DIR" | "hf:DIR" (loading.py); tokenizer, template: override the recorded
             ones; system: replaces the template's system message when present
  batch_size global images per step; mesh {"data": -1}; preprocess: image mode or None;
             prompt_bucket: prompts are padded to a multiple of it (few compiled shapes);
             image_size: variable-resolution VLMs (LLaVA-NeXT, OneVision, Qwen2.5-VL,
             InternVL) see every image at this one side (image_inputs.py)
  datasets   dataset specs (datasets.py): names or dicts; a dict's "protocols" list limits
             the protocols run on that dataset (e.g. ["probe"])
  protocols  {name: options}, by the registry (protocols.py): likelihood, multiple_choice,
             open_world, closed_world, probe
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

from fgjax import distributed, rundir, sharding, storage
from fgjax.console import setup_python_logging
from fgjax.data.conversation import ConversationEncoder
from fgjax.evaluate import datasets, image_inputs, loading, prompts, protocols, report, schema
from fgjax.evaluate.evaluator import Evaluator, process0


def preprocess_mode(config, recorded: dict):
    """The image preprocessing of an evaluation: the run's own (what training and the export
    use) unless config.preprocess says otherwise, which is warned about when it differs."""
    run_mode = recorded.get("preprocess")
    if "preprocess" not in config:
        logging.info("image preprocessing: %r, the run's", run_mode)
        return run_mode
    chosen = config["preprocess"]
    if "preprocess" in recorded and chosen != run_mode:
        logging.warning(
            "image preprocessing %r differs from the run's %r: images are prepared unlike in "
            "training (drop config.preprocess to use the run's)", chosen, run_mode,
        )  # fmt: skip
    return chosen


PROMPT_FIELDS = ("question", "lead_in")


def tuned_prompt(recorded: dict) -> dict:
    """The prompt a run was instruction-tuned with, when its data records one: a folder
    source of classification questions ({"question": its question, "lead_in": None}: the
    class name is the reply). {} otherwise (the protocols' defaults apply)."""
    for source in recorded.get("sources") or []:
        source = dict(source)
        if source.get("name") == "folder" and source.get("kind") == "classify":
            return {"question": source.get("question", prompts.QUESTION), "lead_in": None}
    return {}


def with_run_prompt(name: str, options: dict, tuned: dict) -> dict:
    """A protocol's options with the run's prompt for each prompt field the evaluation config
    does not set itself (and that the protocol has)."""
    fields = {f.name for f in dataclasses.fields(protocols.get(name).options)}
    filled = {k: v for k, v in tuned.items() if k in fields and k not in options}
    return {**filled, **options}


def evaluate(config, workdir: str) -> dict:
    """Runs every configured (dataset, protocol) not yet finished; returns the summary
    {dataset: {result: metrics}}."""
    distributed.initialize()
    setup_python_logging()
    config = schema.resolve(config)  # a checked copy with every default: the caller's is kept
    workdir = storage.path(workdir)  # a local directory or gs://
    workdir.mkdir(parents=True, exist_ok=True)
    if jax.process_index() == 0:
        rundir.write_configs(workdir, config)

    system = config.system if "system" in config else loading.KEEP
    mesh = sharding.make_mesh(dict(config.get("mesh") or {"data": -1}))
    image_size = config.get("image_size")
    loaded = loading.load_vlm(
        config.model, tokenizer=config.get("tokenizer"), template=config.get("template"),
        system=system, mesh=mesh, image_size=image_size,
    )  # fmt: skip
    with config.unlocked():
        config.preprocess = preprocess_mode(config, loaded.recorded)
    images = image_inputs.for_model(loaded.cfg, mode=config.preprocess, image_size=image_size)
    encoder = ConversationEncoder.for_model(loaded.tokenizer, loaded.template, images)
    evaluator = Evaluator(
        loaded.model, encoder, batch_size=int(config.get("batch_size", 8)), mesh=mesh,
        preprocess_mode=config.preprocess, image_size=image_size,
        prompt_bucket=int(config.get("prompt_bucket", 32)),
    )  # fmt: skip
    tuned = tuned_prompt(loaded.recorded)
    del loaded  # the evaluator holds the placed parameters
    # TensorBoard writes through TensorFlow's file system: to a bucket via a local mirror
    mirror = storage.Mirror(workdir) if storage.is_remote(workdir) else None
    writer = metric_writers.create_default_writer(
        str(mirror.local if mirror else workdir), just_logging=jax.process_index() > 0
    )
    wanted_protocols = {
        k: with_run_prompt(k, dict(v or {}), tuned)
        for k, v in dict(config.get("protocols") or {}).items()
    }
    configs = {k: protocols.options(k, v) for k, v in wanted_protocols.items()}
    for name, cfg in configs.items():
        used = {f: getattr(cfg, f) for f in PROMPT_FIELDS if hasattr(cfg, f)}
        logging.info("%s prompt: %s%s", name, used, " (the run's)" if tuned else "")
    with config.unlocked():  # recorded: the options each protocol ran with
        config.protocols = {k: dataclasses.asdict(c) for k, c in configs.items()}
        for name, entry in wanted_protocols.items():
            for key in protocols.get(name).inputs:
                if key in entry:
                    config.protocols[name][key] = entry[key]
    if jax.process_index() == 0:
        rundir.write_configs(workdir, config)
    chosen = {k: protocols.get(k) for k in configs}
    overwrite = bool(config.get("overwrite", False))
    summary = _read_summary(workdir)
    context = protocols.Context(evaluator, config, workdir)

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
            if not chosen[name].per_dataset or (wanted is not None and name not in wanted):
                continue
            if not overwrite and _is_done(workdir / dataset.name, name):
                logging.info("%s %s: already done, skipped", dataset.name, name)
                continue
            finish(dataset.name, name, chosen[name].run(context, cfg, dataset, spec))

    for name, cfg in configs.items():  # protocols of their own inputs: general_qa's sources
        if chosen[name].per_dataset:
            continue
        for group, source in chosen[name].sources(wanted_protocols[name]):
            if not overwrite and _is_done(workdir / group, name):
                continue
            finish(group, name, chosen[name].run(context, cfg, group, source))
    writer.close()
    if mirror is not None:
        mirror.sync()
        mirror.remove()
    return summary


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
        storage.write_atomic(_done_file(directory, protocol), json.dumps(results))


def _read_summary(workdir: Path) -> dict:
    path = workdir / "summary.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def _write_summary(workdir: Path, summary: dict) -> None:
    if jax.process_index() == 0:
        storage.write_atomic(workdir / "summary.json", json.dumps(summary, indent=2))
