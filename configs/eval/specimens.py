"""The built-in procedural dataset (fgjax.data.specimens): its 100 fine-grained classes under
every protocol, and its general questions -- the CPU-scale version of the study.

    python -m fgjax.main --workdir=OUT --config=configs/eval/specimens.py:model=run:/runs/stage2

The test split's first 1,000 examples at 64 px (seed 0) are evaluated by default; probes train
on 5,000 train examples.
"""

from fgjax.evaluate import configs


def get_config(arg: str = ""):
    config = configs.build(
        arg,
        datasets=("specimens",),
        protocols=configs.PROTOCOLS,
        dataset_fields={"source": "specimens", "size": 1000, "train_size": 5000, "resolution": 64},
    )
    return config
