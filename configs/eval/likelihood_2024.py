"""The zero-shot protocols of Zhang et al. (2024) on 1,000 images per dataset: likelihood
ranking (sum and mean of token log-probs, with the prior and no-image calibrations swept over
alpha), open- and closed-world generation, and linear probes on the vision features and the
VLM's hidden states. ImageNet-1K needs a manual download.

    python -m fgjax.main --workdir=OUT --config=configs/eval/likelihood_2024.py:model=run:/runs/stage2
"""

from fgjax.evaluate import configs

DATASETS = ("imagenet2012", "oxford_flowers102", "cars196")
PROTOCOLS = {
    "likelihood": {**configs.PROTOCOLS["likelihood"], "alphas": [0.25, 0.5, 0.75, 1.25, 1.5, 2.0]},
    "open_world": configs.PROTOCOLS["open_world"],
    "closed_world": configs.PROTOCOLS["closed_world"],
    "probe": configs.PROTOCOLS["probe"],
}


def get_config(arg: str = ""):
    arg = arg if "max_examples=" in arg else ",".join(filter(None, [arg, "max_examples=1000"]))
    return configs.build(arg, datasets=DATASETS, protocols=PROTOCOLS)
