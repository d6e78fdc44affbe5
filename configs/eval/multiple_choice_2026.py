"""The evaluation of Ghosh, Zhang & Schmidt (2026): five-way multiple choice whose four wrong
options are hard negatives mined with a contrastive image-text model, on ImageNet-1K,
Flowers-102, Oxford-IIIT Pets and Food-101, answered through the letters' probabilities and
through generated text. Option sets are cached in options_dir: give every model of a
comparison the same options_dir so that all answer the same questions.

    python -m fgjax.main --workdir=OUT --config=configs/eval/multiple_choice_2026.py:model=run:/runs/stage2,negatives=run:/runs/contrastive,options_dir=/shared/options

Without negatives=..., class-name text similarity mines the negatives (recorded in the
outputs). imagenet2012 needs a manual download; drop it with datasets=... if absent.
"""

from fgjax.evaluate import configs

DATASETS = ("imagenet2012", "oxford_flowers102", "oxford_iiit_pet", "food101")


def get_config(arg: str = ""):
    return configs.build(
        arg, datasets=DATASETS, protocols={"multiple_choice": configs.PROTOCOLS["multiple_choice"]}
    )
