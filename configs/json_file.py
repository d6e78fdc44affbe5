"""Loads a config saved as JSON, e.g. a run's own `WORKDIR/config.json`:

python -m fgjax.main --config=configs/json_file.py:WORKDIR/config.json --workdir=WORKDIR
"""

import json

import ml_collections


def get_config(path: str) -> ml_collections.ConfigDict:
    with open(path) as f:
        return ml_collections.ConfigDict(json.load(f))
