"""Evaluate a VLM on your own labelled images: how much it knows against a linear probe.

    python -m fgjax.main --config=configs/own/eval.py:model=run:runs/instruct,folder=TEST_DIR,train_folder=TRAIN_DIR --workdir=evals/own

model           run:DIR (an fgjax run, e.g. configs/own/train.py's) or hf:DIR (a LLaVA model)
folder          the test images, one folder per class, named after the class
train_folder    the images the linear probe trains on (same classes); without it, no probe
protocols       "+"-separated (default likelihood+multiple_choice+probe): likelihood ranks
                every class name; multiple_choice asks five-way lettered questions whose
                negatives are the most similar class names (answers by letter and cloze);
                probe trains logistic regression on frozen features
question        replaces the question the run was tuned with (a configs/own/train.py run records
                its own: "What type of object is in this photo?"), or the protocols' default
lead_in         the text after which class names are scored: "none" scores the name as the
                reply, as configs/own/train.py tunes it (the run's own, by default); a general
                chat model's is the protocols' default "The photo features a"
batch_size, max_examples, k (options per multiple-choice question)

The run's template, tokenizer and image preprocessing are used (fgjax/evaluate/schema.py).
"""

import ml_collections

from fgjax.config_utils import parse_arg


def get_config(arg=None):
    a = parse_arg(
        arg, model="", folder="", train_folder="", protocols="likelihood+multiple_choice+probe",
        question="", lead_in="", batch_size=8, max_examples=0, k=5,
    )  # fmt: skip
    if not a.model or not a.folder:
        raise ValueError("give model=run:DIR (or hf:DIR) and folder=TEST_DIR")
    prompt = {}  # absent: the run's prompt, else the protocols' default (evaluate/runner.py)
    if a.question:
        prompt["question"] = a.question
    if a.lead_in:
        prompt["lead_in"] = None if a.lead_in.lower() == "none" else a.lead_in
    chosen = a.protocols.split("+")
    if "probe" in chosen and not a.train_folder:
        raise ValueError("the probe trains on train_folder=DIR; give it or drop probe from protocols")
    c = ml_collections.ConfigDict()
    c.job, c.model, c.batch_size = "eval", a.model, a.batch_size
    dataset = {"name": "own", "source": "folder", "path": a.folder}
    if a.train_folder:
        dataset["train_path"] = a.train_folder
    if a.max_examples:
        dataset["max_examples"] = a.max_examples
    c.datasets = [dataset]
    options = {
        "likelihood": {**prompt, "alphas": [0.5, 1.5]},
        "multiple_choice": {**prompt, "k": a.k, "answer_modes": ["letters", "likelihood"]},
        "probe": {k: v for k, v in prompt.items() if k == "question"},
        "open_world": {k: v for k, v in prompt.items() if k == "question"},
    }
    unknown = [p for p in chosen if p not in options]
    if unknown:
        raise ValueError(f"protocols {unknown}; use {'+'.join(options)}")
    c.protocols = {p: options[p] for p in chosen}
    return c
