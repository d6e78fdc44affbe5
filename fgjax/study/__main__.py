"""python -m fgjax.study --workdir=DIR [--seeds=N] [--first_seed=K] [--workers=W] [--config=configs/study/mini.py[:args]]

The miniature study (see fgjax/study/run.py); equivalent to
`python -m fgjax.main --config=configs/study/mini.py:seeds=N,first_seed=K --workdir=DIR`.
"""

import sys

from absl import app, flags
from ml_collections import config_flags

from fgjax.study import DEFAULT_CONFIG

_CONFIG = config_flags.DEFINE_config_file(
    "config", DEFAULT_CONFIG, "Study config file.", lock_config=False
)
_WORKDIR = flags.DEFINE_string(
    "workdir", None, "Where the study's runs and results go.", required=True
)
_SEEDS = flags.DEFINE_integer("seeds", None, "How many seeds train every arm (default 3).")
_FIRST_SEED = flags.DEFINE_integer(
    "first_seed", None, "The first of the seeds (seeds first_seed .. first_seed + seeds - 1)."
)

_WORKERS = flags.DEFINE_integer(
    "workers", None, "Worker processes, one per CPU core each (default: every usable core, up "
    "to 8); the results do not depend on it."
)


def main(argv) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments {argv[1:]}")
    config = _CONFIG.value
    if _SEEDS.value is not None:
        config.seeds = _SEEDS.value
    if _FIRST_SEED.value is not None:
        config.first_seed = _FIRST_SEED.value
    if _WORKERS.value is not None:
        config.workers = _WORKERS.value
    from fgjax.study import run

    run.run(config, _WORKDIR.value)


if __name__ == "__main__":
    app.run(main, argv=sys.argv)
