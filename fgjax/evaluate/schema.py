"""Every field of an evaluation config, declared once: its default and what it does.

`resolve(config)` is the first thing an evaluation does with a config: an unknown key is an
error naming the closest field, and the result is a copy with every default filled in (the
caller's config is kept), which the evaluation records in its config.json. The options of
each protocol are its options dataclass (protocols.py); dataset specs are checked by
datasets.from_spec.

DURING_TRAINING declares an evaluator of a training run (config.eval.evaluators,
during_training.py): a name and the fields above less those the run fixes (RUN_FIXED).
"""

from __future__ import annotations

import ml_collections

from fgjax.config_utils import ABSENT, REQUIRED, Field
from fgjax.config_utils import resolve as _resolve_fields

F = Field
FIELDS: dict[str, Field] = {
    "job": F("eval", "what fgjax.main runs: train, eval or study"),
    "model": F(REQUIRED, "'run:DIR[@STEP]' (an fgjax run or export) or 'hf:DIR'"),
    "tokenizer": F(None, "replaces the run's tokenizer"),
    "template": F(None, "replaces the run's chat template"),
    "system": F(ABSENT, "replaces the template's system message (None: none); absent: keep"),
    "batch_size": F(8, "global images per step"),
    "mesh": F({"data": -1}, "{axis: size} of the device mesh"),
    "preprocess": F(
        ABSENT, "image preprocessing mode (None: the tower's default); absent: the run's"
    ),
    "prompt_bucket": F(32, "prompts padded to a multiple of it (few compiled shapes)"),
    "image_size": F(
        None,
        "LLaVA-NeXT, OneVision, Qwen-VL, InternVL: the one side images are brought to "
        "(image_inputs.py)",
    ),
    "datasets": F([], "dataset specs (datasets.py): names or dicts"),
    "protocols": F({}, "{protocol: options} (protocols.py)"),
    "negatives": F({}, "the multiple-choice miner: {'miner': 'taxonomy'} or {'model', ...}"),
    "options_dir": F(None, "where option sets are cached; None: WORKDIR/options"),
    "synonyms": F({}, "{dataset: JSON file of class-name synonyms} for generation matching"),
    "overwrite": F(False, "rerun protocols that already finished"),
}


def resolve(config) -> ml_collections.ConfigDict:
    """A checked copy of `config` with every default filled in."""
    return _resolve_fields(config, FIELDS, "evaluation config")


RUN_FIXED = ("job", "model", "tokenizer", "mesh", "overwrite")  # the training run's own
DURING_TRAINING: dict[str, Field] = {
    "name": F(REQUIRED, "names its metrics: eval/<name>/<dataset>/<result>/<metric>"),
    **{key: field for key, field in FIELDS.items() if key not in RUN_FIXED},
}


def resolve_during_training(entry, where: str) -> ml_collections.ConfigDict:
    """A checked copy of one config.eval.evaluators entry (`where` names it in errors)."""
    return _resolve_fields(entry, DURING_TRAINING, "evaluator", where)
