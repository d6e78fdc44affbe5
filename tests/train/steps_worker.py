"""Run by the training tests in a fresh process (so it can have 8 fake CPU devices): trains a
few steps of the tiny VLM on each mesh given, in float64, and writes losses and final
parameters.

    python steps_worker.py DATA_DIR OUT.npz STAGE [--plant=BUG] MESH_JSON [MESH_JSON ...]

Float64 because a mesh changes the order of floating-point sums: in float32 three Adam steps
turn that order into parameter differences of 1e-5, as large as a small real bug, and
different on every CPU; in float64 they are 1e-9 times smaller. `--plant=f32_gradients`
plants a sharding-sized bug in every mesh but the first -- gradients rounded to float32, as a
reduction carried out in lower precision on the sharded path would -- for the test to catch.
"""

import json
import sys
from pathlib import Path

import numpy as np

from fgjax import distributed, trees
from fgjax.data.tokenizer import tokenizer_for

distributed.initialize()

import jax  # noqa: E402

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
from flax import nnx  # noqa: E402

from fgjax.data import pipeline  # noqa: E402
from fgjax.models.partitioning import activation_sharding  # noqa: E402
from fgjax.train import experiment, init, trainer  # noqa: E402
from fgjax.train import inputs as train_inputs  # noqa: E402
from fgjax.train.step import make_train_step  # noqa: E402

sys.path.insert(0, str(Path(__file__).parents[2]))
from tests.train import helpers  # noqa: E402


@jax.custom_vjp
def _round_gradient(x):
    return x


_round_gradient.defvjp(
    lambda x: (x, None), lambda _, g: (g.astype(jnp.float32).astype(g.dtype),)
)


def f32_gradients(exp):
    """The step of `exp`, its parameter gradients rounded to float32."""
    loss_fn = exp.task.loss_fn(exp.flags)

    def planted(model, batch):
        params = nnx.state(model, nnx.Param)
        nnx.update(model, jax.tree.map(_round_gradient, params))
        return loss_fn(model, batch)

    return experiment.with_step(exp, make_train_step(exp.graphdef, planted, exp.tx))


def run(data: dict, mesh: dict, steps: int, stage: str, params=None, plant=None):
    config = helpers.tiny_config(data, stage=stage, steps=steps, mesh=mesh)
    config.model.dtype = "float64"
    for part in ("encoder_overrides", "decoder_overrides"):
        config.model[part] = {**config.model.get(part, {}), "param_dtype": "float64"}
    if "num_devices" in mesh:
        config.num_devices = mesh.pop("num_devices")
        config.mesh = mesh
    tokenizer = tokenizer_for(config.data.tokenizer, image_token=True)
    config.model.image_token_id = tokenizer.token_to_id("<image>")
    exp = experiment.build(config)
    if plant == "f32_gradients":
        exp = f32_gradients(exp)
    elif plant is not None:
        raise ValueError(f"unknown planted bug {plant!r}")
    ds, _, _ = train_inputs.train_dataset(
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
    return losses, jax.device_get(trees.merge(state.trainable, frozen)), params


def main(data_dir: str, out: str, stage: str, *args: str) -> None:
    plants = [a.split("=", 1)[1] for a in args if a.startswith("--plant=")]
    meshes = [a for a in args if not a.startswith("--plant=")]
    data = json.loads((Path(data_dir) / "data_info.json").read_text())
    results, initial = {}, None
    for i, mesh in enumerate(meshes):
        plant = plants[0] if plants and i > 0 else None
        losses, final, initial = run(data, json.loads(mesh), 3, stage, initial, plant)
        results[f"{i}/losses"] = np.asarray(losses)
        results.update({f"{i}/params/{k}": v for k, v in trees.flatten(final).items()})
    np.savez(out, **results)


if __name__ == "__main__":
    main(*sys.argv[1:])
