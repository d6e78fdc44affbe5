"""Evaluation: zero-shot fine-grained classification under every protocol the field uses,
general questions, and linear-probe baselines, on any fgjax VLM.

From a config (runner.py):
    python -m fgjax.main --config=configs/eval/fine_grained.py:model=run:DIR --workdir=OUT

From Python:
    from fgjax.evaluate import Evaluator, choices, datasets, generation, likelihood, negatives
    evaluator = Evaluator(model, ConversationEncoder.for_model(tok, "vicuna_v1", model.cfg))
    dataset = datasets.from_spec({"name": "oxford_flowers102", "max_examples": 1000})
    result = likelihood.evaluate(evaluator, dataset)            # report.Result
    sets = choices.option_sets(dataset, negatives.TextMiner(), k=5, seed=0, options_dir="opts")
    letters, generated = choices.evaluate(evaluator, dataset, sets)
    report.write(result, "OUT/flowers/likelihood")

Modules: inference (the jitted model functions: shared-prefix scoring, greedy decoding,
letter probabilities, features), loop (sharded passes over datasets, exactly once), prompts,
matching, likelihood, choices + negatives (K-way multiple choice), generation (open/closed
world), vqa (general questions), probe (linear probes), datasets, report, loading, runner,
during_training (the protocols of a config, run on a training run's current parameters).
"""

from fgjax.evaluate.evaluator import DatasetRunner, Evaluator

__all__ = ["DatasetRunner", "Evaluator"]
