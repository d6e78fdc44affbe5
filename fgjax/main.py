"""The entry point for every config-driven job.

    python -m fgjax.main --config=configs/<file>.py[:args] --workdir=DIR [--config.x=y ...]

A config file defines `get_config(arg)`; `config.job` picks the job ("train" by default,
"eval", "compare", "study"). Rerunning a command resumes where it stopped.
"""

from __future__ import annotations

import sys

from absl import app, flags
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Config file (optionally with :args).", lock_config=False
)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for checkpoints, logs and results.")


def run(config, workdir: str):
    job = config.get("job", "train")
    if job == "train":
        from fgjax.evaluate import during_training
        from fgjax.train import trainer

        # config.eval.evaluators, checked before training starts (fgjax.train cannot build them)
        return trainer.train(config, workdir, evaluators=during_training.build(config))
    if job == "eval":
        from fgjax.evaluate import runner

        return runner.evaluate(config, workdir)
    if job == "compare":
        from fgjax.evaluate import compare

        return compare.run(config, workdir)
    if job == "study":
        from fgjax.study import run as study

        return study.run(config, workdir)
    raise ValueError(f"unknown job {job!r}; use 'train', 'eval', 'compare' or 'study'")


def main(argv) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments {argv[1:]}")
    if _CONFIG.value is None or not _WORKDIR.value:
        raise app.UsageError("both --config and --workdir are required")
    run(_CONFIG.value, _WORKDIR.value)


if __name__ == "__main__":
    app.run(main, argv=sys.argv)
