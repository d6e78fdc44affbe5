"""The planted test: a tiny VLM trained on a fixed image -> answer mapping (planted.py) scores
near perfectly under every protocol, an untrained one stays near chance, and both answer the
very same multiple-choice questions.

One test function on purpose: training is the slow part, and pytest-xdist would train once
per worker if several tests shared it.
"""

from __future__ import annotations

import dataclasses
import json

import numpy as np
from PIL import Image

from fgjax import models
from fgjax.evaluate import Evaluator, choices, generation, likelihood, negatives, probe, vqa
from fgjax.evaluate.datasets import ArraySource
from fgjax.evaluate.matching import LETTERS
from fgjax.evaluate.prompts import QUESTION
from tests.evaluate import planted

TRAIN_STEPS = 300


def write_questions(directory, dataset) -> list[dict]:
    """General questions about the planted images as JSONL: a short answer (the class name)
    and a multiple choice whose correct option sits at the image's marked letter."""
    letters = planted.answer_letters(dataset.labels(), 0)
    lines = []
    for i in range(len(dataset)):
        record = dataset[i]
        Image.fromarray(record["image"]).save(directory / f"{i}.png")
        name = planted.CLASSES[record["label"]]
        others = [c for c in planted.CLASSES if c != name][i % 4 : i % 4 + 4]
        others.insert(int(letters[i]), name)
        lines.append(
            {"image": f"{i}.png", "question": "What is this?", "answers": [name], "type": "what"}
        )
        lines.append({"image": f"{i}.png", "question": QUESTION, "options": others,
                      "answer": name, "id": f"choice-{i}"})  # fmt: skip
    (directory / "questions.jsonl").write_text("\n".join(json.dumps(x) for x in lines))
    return vqa.load_questions({"source": "jsonl", "path": str(directory / "questions.jsonl")})


def evaluate_all(model, encoder, test_set, probe_sets, questions, options_dir) -> tuple[dict, dict]:
    """Every protocol's headline metric, and the multiple-choice records. probe_sets:
    {name: (train split, test split)}."""
    evaluator = Evaluator(model, encoder, batch_size=8, prompt_bucket=64, progress=False)
    generate = generation.GenerationConfig(max_new_tokens=8)
    scores = {}
    result = likelihood.evaluate(evaluator, test_set)
    for key in ("sum/top1", "mean/top1", "mean+prior@1.5/top1", "sum+no_image@2/top1"):
        scores[f"likelihood {key}"] = result.metrics[key]
    assert result.metrics["sum/top5"] >= result.metrics["sum/top1"]
    sets = choices.option_sets(test_set, negatives.TextMiner(), planted.K, 0, options_dir)
    mc_config = choices.MultipleChoiceConfig(max_new_tokens=8)
    records = {}
    for result in choices.evaluate(evaluator, test_set, sets, mc_config):
        scores[result.protocol] = result.metrics["accuracy"]
        records[result.protocol] = result.records
    scores["open_world"] = generation.open_world(evaluator, test_set, generate).metrics["accuracy"]
    scores["closed_world"] = generation.closed_world(evaluator, test_set, generate).metrics[
        "accuracy"
    ]
    for result in vqa.evaluate(
        evaluator, questions, "planted-qa", vqa.QAConfig(max_new_tokens=8, shuffle_options=False)
    ):
        scores[f"qa {result.protocol}"] = result.metrics.get(
            "accuracy", result.metrics.get("exact_match")
        )
    for name, (train, test) in probe_sets.items():
        for result in probe.evaluate(evaluator, train, test, probe.ProbeConfig(steps=200)):
            scores[f"{name} {result.protocol[len('probe_') :]}"] = result.metrics["accuracy"]
    return scores, records


def test_trained_model_scores_high_and_random_model_near_chance_under_every_protocol(tmp_path):
    tok = planted.tokenizer()
    cfg = planted.model_config(tok)
    encoder = planted.encoder(tok, cfg)
    trained, loss = planted.train(models.build(cfg, seed=0), encoder, TRAIN_STEPS)
    assert loss < 0.1, f"the planted model did not learn its mapping (final loss {loss:.3f})"
    test_set = planted.dataset(24, seed=123)
    # probes: unmarked images (the class colour only) to train on and to test; random features
    # separate colours too, so the random model's near-chance control shuffles the train labels
    train, test = planted.dataset(48, 7, marked=False), planted.dataset(24, 8, marked=False)
    shuffled = np.random.default_rng(0).permutation(train.labels())
    images = [train[i]["image"] for i in range(len(train))]
    shuffled_train = dataclasses.replace(train, source=ArraySource(images, shuffled))
    probe_sets = {"probe": (train, test)}
    questions = write_questions(tmp_path, planted.dataset(16, seed=99, name="qa"))
    options_dir = tmp_path / "options"
    good, good_records = evaluate_all(
        trained, encoder, test_set, probe_sets, questions, options_dir
    )
    probe_sets["shuffled-label probe"] = (shuffled_train, test)
    bad, bad_records = evaluate_all(
        models.build(cfg, seed=1), encoder, test_set, probe_sets, questions, options_dir
    )
    table = "\n".join(f"{k:40s} trained {good.get(k, -1):.3f}  random {bad[k]:.3f}" for k in bad)
    print(table)  # shown with pytest -s
    chance = {
        "likelihood": 0.35,  # 8 classes
        "multiple_choice": 0.45,  # 5 letters
        "open_world": 0.2,  # a constant answer naming one class scores 1/8
        "closed_world": 0.2,
        "qa short": 0.1,
        "qa choice": 0.45,
        "shuffled-label probe": 0.35,
    }
    for key, value in good.items():
        assert value >= 0.9, f"{key}: the trained model should be near perfect\n{table}"
    for key, value in bad.items():
        if key.startswith("probe"):  # random features separate colours too: no chance bound
            continue
        limit = next(v for prefix, v in chance.items() if key.startswith(prefix))
        assert value <= limit, f"{key}: the random model should be near chance\n{table}"
    # both models answered the same questions: identical options and correct letters
    for mode in good_records:
        same = [(r["options"], r["answer"]) for r in good_records[mode]]
        assert same == [(r["options"], r["answer"]) for r in bad_records[mode]]
    # and the planted letters are the ones the option sets assigned
    answers = [LETTERS.index(r["answer"]) for r in good_records["multiple_choice_letters"]]
    np.testing.assert_array_equal(answers, planted.answer_letters(test_set.labels(), 0))
