"""Run by test_pipeline.py in each of several processes: iterate the training stream and the
evaluation batches, assemble global arrays, and write what every step saw as JSON."""

import json
import sys

import jax
import numpy as np
from jax.experimental import multihost_utils

from fgjax import distributed
from fgjax.data import pipeline


def main(
    out_path: str, num_examples: int, eval_examples: int, global_batch: int, steps: int
) -> None:
    distributed.initialize()
    mesh = jax.make_mesh((jax.device_count(),), ("data",), axis_types=(jax.sharding.AxisType.Auto,))
    sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("data"))

    def transform(i):
        return {"id": np.int32(i)}

    ds = pipeline.training_dataset(
        pipeline.IndexSource(num_examples), transform, global_batch_size=global_batch, seed=7
    )
    it = iter(ds)
    train = []
    for _ in range(steps):
        batch = pipeline.to_global(next(it), sharding)
        train.append(
            sorted(np.asarray(multihost_utils.process_allgather(batch["id"], tiled=True)).tolist())
        )

    evaluated = []
    for local in pipeline.evaluation_batches(
        pipeline.IndexSource(eval_examples), transform, global_batch_size=global_batch
    ):
        batch = pipeline.to_global(local, sharding)
        ids = np.asarray(multihost_utils.process_allgather(batch["id"], tiled=True))
        valid = np.asarray(multihost_utils.process_allgather(batch["valid"], tiled=True))
        evaluated.extend(ids[valid].tolist())
    if jax.process_index() == 0:
        with open(out_path, "w") as f:
            json.dump({"train": train, "eval": evaluated, "processes": jax.process_count()}, f)


if __name__ == "__main__":
    main(sys.argv[1], *map(int, sys.argv[2:]))
