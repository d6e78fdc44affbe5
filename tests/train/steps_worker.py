"""Run by the training tests in a fresh process (so it can have 8 fake CPU devices): trains a
few steps of the tiny VLM on each mesh given and writes losses and final parameters.

    python steps_worker.py DATA_DIR OUT.npz MESH_JSON [MESH_JSON ...]
"""

import json
import sys
from pathlib import Path

import numpy as np

from fgjax import distributed

distributed.initialize()

import jax  # noqa: E402

from fgjax.data import pipeline  # noqa: E402
from fgjax.models.partitioning import activation_sharding  # noqa: E402
from fgjax.train import data as train_data  # noqa: E402
from fgjax.train import experiment, init, optim, trainer  # noqa: E402

sys.path.insert(0, str(Path(__file__).parents[2]))
from tests.train import helpers  # noqa: E402


def run(data: dict, mesh: dict, steps: int, stage: str, params=None):
    config = helpers.tiny_config(data, stage=stage, steps=steps, mesh=mesh)
    if "num_devices" in mesh:
        config.num_devices = mesh.pop("num_devices")
        config.mesh = mesh
    tokenizer = train_data.tokenizer_for(config.data, image_token=True)
    config.model.image_token_id = tokenizer.token_to_id("<image>")
    exp = experiment.build(config)
    ds, _, _ = train_data.train_dataset(
        config, exp.model_cfg, tokenizer, pipeline.HostShard.current()
    )
    it = iter(ds)
    if params is None:  # the first mesh initializes; the others start from the same weights
        params = jax.device_get(
            init.random_params(exp.model_cfg, exp.param_shardings, int(config.seed))
        )
    state, frozen = trainer.fresh_state(exp, params)
    losses = []
    with activation_sharding(exp.mesh, exp.rules):
        for _ in range(steps):
            state, metrics = exp.step(
                state, frozen, pipeline.to_global(next(it), exp.batch_sharding)
            )
            losses.append(float(metrics["loss"]))
    return losses, jax.device_get(optim.merge(state.params, frozen)), params


def main(data_dir: str, out: str, stage: str, *meshes: str) -> None:
    data = json.loads((Path(data_dir) / "data_info.json").read_text())
    results, initial = {}, None
    for i, mesh in enumerate(meshes):
        losses, final, initial = run(data, json.loads(mesh), 3, stage, initial)
        results[f"{i}/losses"] = np.asarray(losses)
        results.update({f"{i}/params/{k}": v for k, v in optim.flatten(final).items()})
    np.savez(out, **results)


if __name__ == "__main__":
    main(*sys.argv[1:])
