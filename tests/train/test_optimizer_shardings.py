"""Adam's moments are sharded like their parameters (optax.tree_utils.tree_map_params), also
with per-group learning rates, whose masked states hold MaskedNodes; counts are replicated."""

from __future__ import annotations

import subprocess
import sys

from tests.train import helpers

CHECK = r"""
import sys, tempfile, pathlib
import jax
from jax.sharding import PartitionSpec
from fgjax import distributed
distributed.initialize()
from fgjax.train import experiment
from tests.train import helpers

data = helpers.write_dataset(pathlib.Path(tempfile.mkdtemp()), num_rows=8)
for stage in ("align", "full"):
    config = helpers.tiny_config(data, stage=stage, mesh={"fsdp": 8})
    config.model.image_token_id = 3
    config.optim.lr_mults = {"projector": 2.0}
    exp = experiment.build(config)
    params = {jax.tree_util.keystr(p): s for p, s in
              jax.tree_util.tree_flatten_with_path(exp.state_shardings.trainable)[0]}
    moments = sharded = 0
    for path, s in jax.tree_util.tree_flatten_with_path(exp.state_shardings.opt_state)[0]:
        key = jax.tree_util.keystr(path)
        match = [p for p in params if key.endswith(p)]  # a moment's path ends with its parameter's
        if match:
            assert s == params[max(match, key=len)], (key, s)
            moments += 1
            sharded += s.spec != PartitionSpec()
        else:
            assert s.spec == PartitionSpec(), (key, s)  # counts, scalars
    assert moments >= 2 * len(params) and sharded > 0, (moments, len(params), sharded)
    print(stage, "moments", moments, "sharded over fsdp", sharded)
"""


def test_adam_moments_take_their_parameters_shardings():
    out = subprocess.run(
        [sys.executable, "-c", CHECK],
        env={**helpers.env(), "FGJAX_LOCAL_DEVICE_COUNT": "8"},
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    print(out.stdout)
    assert "full moments" in out.stdout
