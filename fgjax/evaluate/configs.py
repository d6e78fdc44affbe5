"""Building evaluation configs from the `key=value,...` argument of a config file
(configs/eval/*.py):

    --config=configs/eval/fine_grained.py:model=run:/runs/stage2,datasets=oxford_flowers102+cars196

Keys: model (required: "run:DIR" or "hf:DIR"), tokenizer, template, system ("none" drops the
template's system message), datasets and protocols ("+"-separated), max_examples,
negatives (a contrastive model "run:DIR" for mining; default: class-name text similarity),
options_dir, data_dir, batch_size, k (multiple-choice options), preprocess (an image mode, or
"none" for the tower's default; absent: the run's own, as in training and the export).
Everything can also be overridden by flags (--config.batch_size=16,
--config.protocols.likelihood.alphas=...).
"""

from __future__ import annotations

import ml_collections

from fgjax.config_utils import parse_arg
from fgjax.evaluate import protocols as registry

# the options config files give each protocol (fields of its options dataclass; the registry,
# fgjax/evaluate/protocols.py, says which protocols exist and their other defaults)
PROTOCOLS = {
    "likelihood": {"alphas": [0.5, 1.5, 2.0], "no_image_prior": True, "primary": "sum"},
    "multiple_choice": {"k": 5, "seed": 0, "answer_modes": ["letters", "generate"]},
    "open_world": {"max_new_tokens": 64},
    "closed_world": {"max_new_tokens": 64, "seed": 0},
    "probe": {"features": ["vision_patch_mean", "vision_cls", "vlm_last", "vlm_mean"]},
    "general_qa": {"sources": [{"source": "specimens", "split": "test", "size": 500}]},
}
# the fine-grained TFDS datasets that need no manual download (configs/eval/fine_grained.py,
# compare.py); fgvc_aircraft and imagenet2012 can be added with datasets=...
FINE_GRAINED = (
    "oxford_flowers102", "oxford_iiit_pet", "food101", "cars196", "caltech_birds2011",
    "stanford_dogs", "dtd",
)  # fmt: skip
KEYS = (
    "model", "tokenizer", "template", "system", "datasets", "protocols", "max_examples",
    "max_train_examples", "negatives", "options_dir", "data_dir", "batch_size", "k", "preprocess",
)  # fmt: skip


def parse_args(arg: str | None) -> dict[str, str]:
    """ "a=1,b=x+y" -> {"a": "1", "b": "x+y"}: the given keys, as text (config_utils.parse_arg)."""
    parsed = parse_arg(arg, **{key: "" for key in KEYS})
    return {key: value for key, value in parsed.items() if value != ""}


def build(
    arg: str | None, *, datasets, protocols, dataset_fields=None
) -> ml_collections.ConfigDict:
    """An eval config: the `arg` values over the given default dataset names and protocols.

    dataset_fields: extra fields of every dataset spec (e.g. {"source": "specimens"}).
    """
    args = parse_args(arg)
    if "model" not in args:
        raise ValueError("give the model to evaluate: ...py:model=run:DIR or model=hf:DIR")
    chosen = args["protocols"].split("+") if "protocols" in args else list(protocols)
    for name in chosen:
        registry.get(name)  # an unknown protocol names the closest one
    names = args["datasets"].split("+") if "datasets" in args else list(datasets)
    spec = dict(dataset_fields or {})
    for key in ("max_examples", "max_train_examples"):
        if key in args:
            spec[key] = int(args[key])
    if "data_dir" in args:
        spec["data_dir"] = args["data_dir"]

    c = ml_collections.ConfigDict()
    c.job = "eval"
    c.model = args["model"]
    c.tokenizer = _optional(args.get("tokenizer"))
    c.template = _optional(args.get("template"))
    if "system" in args:
        c.system = None if args["system"].lower() == "none" else args["system"]
    c.batch_size = int(args.get("batch_size", 8))
    c.mesh = {"data": -1}
    if "preprocess" in args:  # else the run's own preprocessing (runner.preprocess_mode)
        c.preprocess = None if args["preprocess"].lower() == "none" else args["preprocess"]
    c.prompt_bucket = 32
    c.datasets = [{"name": name, **spec} for name in names]
    c.protocols = {name: dict(protocols.get(name, PROTOCOLS.get(name, {}))) for name in chosen}
    if "k" in args and "multiple_choice" in c.protocols:
        c.protocols.multiple_choice.k = int(args["k"])
    c.negatives = ml_collections.ConfigDict(
        {"model": _optional(args.get("negatives")), "tokenizer": _optional(None),
         "prompt": "a photo of a {}."}
    )  # fmt: skip
    c.options_dir = _optional(args.get("options_dir"))
    c.synonyms = {}
    c.overwrite = False
    return c


def _optional(value: str | None):
    """A string field that may stay None yet can be set by a flag (--config.tokenizer=...)."""
    return ml_collections.config_dict.placeholder(str) if value is None else value
