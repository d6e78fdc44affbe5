"""Evaluation protocols on a training run's current parameters (config.eval.evaluators), run
by the trainer every config.eval.every_steps steps (fgjax/train/evaluation.py). fgjax.main
builds them here and passes them to the trainer, since fgjax.train cannot import this package.

Each entry is an evaluation config (schema.DURING_TRAINING: the fields of schema.FIELDS less
those the run fixes -- model, tokenizer, mesh, job, overwrite) with a `name`:

    {"name": "mc5", "datasets": [{"name": "specimens", "source": "specimens", "size": 100}],
     "protocols": {"multiple_choice": {"k": 5, "answer_modes": ["letters"]}},
     "negatives": {"miner": "taxonomy"}, "batch_size": 8}

The model is the run's VLM at the current step with the run's tokenizer; the template, system
message, image preprocessing and tuned prompt are the run's (config.data) unless the entry sets
them, as when the exported run is evaluated (runner.py). Every scalar metric of every result is
logged as eval/<name>/<dataset>/<result>/<metric>, e.g.
eval/mc5/specimens/multiple_choice_letters/accuracy. Option sets are mined once and cached in
WORKDIR/evaluations/<name>/options (or options_dir), so each evaluation asks the same questions.

`build(config)` checks every entry -- its fields, protocols, their options and answer modes,
and its datasets, which it reads -- before training starts; each error names the entry's field.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable

import jax
from flax import nnx

from fgjax import sharding, storage
from fgjax.data.conversation import ConversationEncoder
from fgjax.data.templates import get_template
from fgjax.evaluate import choices, datasets, protocols, report, runner, schema
from fgjax.evaluate.evaluator import Evaluator
from fgjax.models.config import VLMConfig


def build(config) -> list[TrainingEvaluator]:
    """One evaluator factory per entry of config.eval.evaluators (a training config, before
    or after schema.resolve), each checked; for trainer.train(config, workdir, evaluators=...)."""
    entries = list((config.get("eval") or {}).get("evaluators") or [])
    data = dict(config.get("data") or {})
    built = [
        TrainingEvaluator(entry, data, f"config.eval.evaluators[{i}]")
        for i, entry in enumerate(entries)
    ]
    names = [e.name for e in built]
    for name in sorted({n for n in names if names.count(n) > 1}):
        raise ValueError(f"config.eval.evaluators: two entries are named {name!r}; rename one")
    return built


class TrainingEvaluator:
    """One checked entry. Called with the run's Setup (train/evaluation.py), it returns
    evaluate(step, params) -> {"<name>/<dataset>/<result>/<metric>": value}."""

    def __init__(self, entry, data: dict, where: str):
        self.where = where
        self.config = schema.resolve_during_training(entry, where)
        self.name = self.config.get("name")
        if not isinstance(self.name, str) or not re.fullmatch(r"[A-Za-z0-9_.-]+", self.name):
            raise ValueError(
                f"{where}.name={self.name!r}: give each evaluator a name of letters, digits, "
                "'_', '.' or '-' (its metrics are eval/<name>/...)"
            )
        if not self.config.protocols:
            raise ValueError(f"{where}.protocols is empty; name one (e.g. multiple_choice)")
        tuned = runner.tuned_prompt(data)
        self.entries, self.protocols = {}, {}  # name -> its config entry; (Protocol, options)
        for name, options in dict(self.config.protocols).items():
            try:
                protocol = protocols.get(name)
                self.entries[name] = runner.with_run_prompt(name, dict(options or {}), tuned)
                self.protocols[name] = (protocol, protocols.options(name, self.entries[name]))
            except (TypeError, ValueError) as error:
                raise ValueError(f"{where}.protocols: {error}") from None
            modes = getattr(self.protocols[name][1], "answer_modes", ())
            for mode in modes:
                if mode not in choices.ANSWER_MODES:
                    raise ValueError(
                        f"{where}.protocols.{name}.answer_modes holds {mode!r}; use some of "
                        f"{', '.join(map(repr, choices.ANSWER_MODES))}"
                    )
        self.datasets = []
        for i, spec in enumerate(self.config.datasets):
            spec = spec if isinstance(spec, str) else dict(spec)
            try:
                self.datasets.append((datasets.from_spec(spec), spec))
            except (KeyError, ValueError, FileNotFoundError) as error:
                raise ValueError(f"{where}.datasets[{i}]: {error}") from None
        if not self.datasets and any(p.per_dataset for p, _ in self.protocols.values()):
            raise ValueError(f"{where}.datasets is empty; name the (small) dataset to evaluate")
        self.inputs = {
            name: list(protocol.sources(self.entries[name]))
            for name, (protocol, _) in self.protocols.items()
            if not protocol.per_dataset
        }
        template_name = self.config.get("template") or data.get("template")
        if not template_name:
            raise ValueError(f"{where}.template: the run has no config.data.template; set one")
        self.template = get_template(template_name)
        if "system" in self.config or "system" in data:
            self.template = self.template.with_system(self.config.get("system", data.get("system")))
        self.preprocess = runner.preprocess_mode(self.config, data)

    def __call__(self, setup) -> Callable[[int, dict], dict]:
        """Binds to the run (checks that its model and mesh fit) before anything compiles;
        returns `evaluate`."""
        if not isinstance(setup.model_cfg, VLMConfig):
            raise ValueError(f"{self.where}: evaluators need a VLM (task vlm) to evaluate")
        cfg = setup.model_cfg
        self.encoder = ConversationEncoder.for_model(setup.tokenizer, self.template, cfg)
        dp = sharding.data_parallel_size(setup.mesh)
        batch = self.config.batch_size
        processes = jax.process_count()
        if not isinstance(batch, int) or batch < 1 or batch % dp or batch % processes:
            raise ValueError(
                f"{self.where}.batch_size={batch!r} must be a multiple of the data-parallel size "
                f"{dp} and of the {processes} processes"
            )
        self.setup, self.context = setup, None
        self.workdir = storage.path(setup.workdir) / "evaluations" / self.name  # or gs://
        return self.evaluate

    def evaluate(self, step: int, params: dict) -> dict:
        """Every (dataset, protocol) on the model with `params` (the full parameters, placed by
        their logical axes on the run's mesh): {"<dataset>/<result>/<metric>" under the name}."""
        if self.context is None:  # the parameters stay where training placed them
            evaluator = Evaluator(
                nnx.merge(self.setup.graphdef, params), self.encoder, mesh=self.setup.mesh,
                rules=self.setup.rules, batch_size=self.config.batch_size,
                preprocess_mode=self.preprocess, prompt_bucket=self.config.prompt_bucket,
                progress=False,
            )  # fmt: skip
            self.context = protocols.Context(evaluator, self.config, self.workdir)
        else:  # the same graph (so nothing compiles again) with the current parameters
            _, self.context.evaluator.state = nnx.split(nnx.merge(self.setup.graphdef, params))
            self.context.evaluator.memo.clear()  # scores of the previous parameters
        out = {}

        def finish(group: str, results) -> None:
            for result in results:
                for key, value in report.scalars(result.metrics):
                    out[f"{self.name}/{group}/{result.protocol}/{key}"] = float(value)
                logging.info("step %d %s %s %s: %s", step, self.name, group, result.protocol,
                             runner._headline(result.metrics))  # fmt: skip

        for dataset, spec in self.datasets:
            wanted = None if isinstance(spec, str) else spec.get("protocols")
            for name, (protocol, cfg) in self.protocols.items():
                if protocol.per_dataset and (wanted is None or name in wanted):
                    finish(dataset.name, protocol.run(self.context, cfg, dataset, spec))
        for name, sources in self.inputs.items():  # protocols of their own inputs (general_qa)
            protocol, cfg = self.protocols[name]
            for group, source in sources:
                finish(group, protocol.run(self.context, cfg, group, source))
        return out

    def __repr__(self) -> str:
        return f"TrainingEvaluator({self.name!r})"
