"""The evaluation loop: a VLM placed on a device mesh once, and sharded passes over datasets.

`Evaluator.run(dataset, compute, prompts)` reads this process's share of the dataset with
`fgjax.data.pipeline.evaluation_batches` (padded rows marked invalid), preprocesses images,
tokenizes each row's prompt on the host, assembles global batches split over the mesh's data
axes, runs the jitted `compute`, gathers its outputs on every process and returns them in
dataset order -- after checking that every example was evaluated exactly once.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import jax
import numpy as np
from flax import nnx
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec
from tqdm import tqdm

from fgjax import sharding
from fgjax.data import images as image_ops
from fgjax.data import pipeline
from fgjax.data.conversation import ConversationEncoder
from fgjax.evaluate import image_inputs
from fgjax.evaluate.datasets import describe_image, read_image
from fgjax.evaluate.prompts import Prompter, pad_prompts
from fgjax.models.partitioning import DEFAULT_RULES, activation_sharding

Batch = dict[str, jax.Array]
PromptFn = Callable[[np.ndarray], list[np.ndarray]]  # dataset indices i32[b] -> one prompt each


def place(tree, shardings):
    """Host or single-device arrays -> global arrays with `shardings` (same on every process)."""

    def put(x, target):
        if isinstance(x, jax.Array) and x.sharding.is_equivalent_to(target, x.ndim):
            return x  # already placed (e.g. restored with these shardings)
        if jax.process_count() == 1:
            return jax.device_put(x, target)
        host = np.asarray(x)
        return jax.make_array_from_callback(host.shape, target, lambda index: host[index])

    return jax.tree.map(put, tree, shardings)


def place_model(model, mesh: Mesh, rules=DEFAULT_RULES):
    """(graphdef, state) of an NNX model with every parameter placed by its logical axes."""
    graphdef, state = nnx.split(model)
    shardings = sharding.state_shardings(state, mesh, rules)
    pure = place(nnx.to_pure_dict(state), shardings)
    nnx.replace_by_pure_dict(state, pure)
    return graphdef, state


def gather(tree) -> dict:
    """Global arrays -> numpy arrays holding every process's rows."""
    if jax.process_count() == 1:
        return jax.device_get(tree)
    return jax.device_get(multihost_utils.process_allgather(tree, tiled=True))


def process0(flag: bool) -> bool:
    """Process 0's value of `flag` on every process (decisions that must agree, e.g. whether
    a cached file exists)."""
    if jax.process_count() == 1:
        return bool(flag)
    return bool(multihost_utils.broadcast_one_to_all(np.int32(flag)))


def agree_max(value: int) -> int:
    """The maximum of `value` over processes."""
    if jax.process_count() == 1:
        return int(value)
    return int(np.max(multihost_utils.process_allgather(np.int32(value))))


class DatasetRunner:
    """Sharded passes over image datasets: `run(dataset, compute, prompts)`.

    preprocess: the image preprocessing (a PreprocessConfig, or a tuple of them for a fused
    encoder), or a function image -> the example's f32 array (image_inputs.py); batch_size:
    the global batch, a multiple of the data-parallel size and of the process count.
    """

    def __init__(
        self,
        preprocess,
        *,
        batch_size: int = 8,
        mesh: Mesh | None = None,
        rules=DEFAULT_RULES,
        prompt_bucket: int = 32,
        progress: bool = True,
    ):
        self.mesh = mesh if mesh is not None else sharding.make_mesh({"data": -1})
        self.rules = tuple(rules)
        dp = sharding.data_parallel_size(self.mesh)
        if batch_size % dp or batch_size % jax.process_count():
            raise ValueError(
                f"batch_size={batch_size} must be a multiple of the data-parallel size {dp} and "
                f"of the {jax.process_count()} processes"
            )
        self.batch_size = batch_size
        self.preprocess = preprocess
        self.num_towers = len(preprocess) if isinstance(preprocess, (tuple, list)) else 0
        self.batch_sharding = sharding.batch_sharding(self.mesh)
        self.replicated = NamedSharding(self.mesh, PartitionSpec())
        self.prompt_bucket = prompt_bucket
        self.progress = progress

    def images(self, batch: Batch):
        """The image input from a batch: f32[B, S, S, 3], or a tuple per tower when fused."""
        if self.num_towers:
            return tuple(batch[f"image{i}"] for i in range(self.num_towers))
        return batch["image"]

    def constant(self, value):
        """A host array replicated over the mesh (chunks, candidate ids, ...)."""
        return place(np.asarray(value), self.replicated)

    def _transform(self, dataset, with_images: bool):
        def transform(index: int) -> dict:
            record = dataset[index]
            example = {"index": np.int32(index), "label": np.int32(record["label"])}
            if with_images:
                try:
                    image = read_image(record["image"])
                    arrays = (self.preprocess(image) if callable(self.preprocess)
                              else image_ops.preprocess(image, self.preprocess))  # fmt: skip
                except Exception as error:
                    raise ValueError(
                        f"evaluation example {record.get('id')!r}: cannot read its image "
                        f"({describe_image(record['image'])}): {type(error).__name__}: {error}"
                    ) from error
                if self.num_towers:
                    example.update({f"image{i}": a for i, a in enumerate(arrays)})
                else:
                    example["image"] = arrays
            return example

        return transform

    def _global(self, local: dict, prompts: PromptFn | None) -> Batch:
        if prompts is not None:
            rows = prompts(local["index"])
            length = max(len(r) for r in rows)
            bucket = self.prompt_bucket
            length = agree_max(bucket * math.ceil(length / bucket))
            local["tokens"], local["mask"] = pad_prompts(rows, length, bucket)
        return pipeline.to_global(local, self.batch_sharding)

    def run(
        self,
        dataset: Sequence,
        compute: Callable[[Batch], dict],
        prompts: PromptFn | None = None,
        *,
        with_images: bool = True,
        desc: str = "eval",
    ) -> dict[str, np.ndarray]:
        """compute(batch) -> {name: [B, ...] arrays} over every example of `dataset`.

        batch holds index i32[B], label i32[B], valid bool[B], the images, and with `prompts`
        tokens i32[B, T] / mask bool[B, T] (right-padded). Returns {name: [N, ...]} in dataset
        order, with "index" and "label"; raises unless each example was evaluated exactly once.
        """
        total = len(dataset)
        if total == 0:
            raise ValueError(f"{desc}: the dataset is empty")
        batches = pipeline.evaluation_batches(
            pipeline.IndexSource(total),
            self._transform(dataset, with_images),
            global_batch_size=self.batch_size,
            shard=pipeline.HostShard.current(),
        )
        show = self.progress and jax.process_index() == 0
        num_batches = math.ceil(total / self.batch_size)
        bar = tqdm(total=num_batches, desc=desc, unit="batch", disable=not show)
        collected, pending = [], None
        with activation_sharding(self.mesh, self.rules):
            for local in batches:
                batch = self._global(local, prompts)
                # dispatched asynchronously: the next batch is read while this one runs
                outputs = compute(batch)
                if pending is not None:
                    collected.append(gather(pending))
                    bar.update(1)
                keep = {"index": batch["index"], "label": batch["label"], "valid": batch["valid"]}
                pending = {**outputs, **keep}
        collected.append(gather(pending))
        bar.update(1)
        bar.close()
        return _in_dataset_order(collected, total, desc)


class Evaluator(DatasetRunner):
    """A VLM placed on the mesh once, with its prompt encoder and image preprocessing.

    model: an fgjax VLM (parameters on any device; placed here by their logical axes);
    preprocess_mode: image mode, None for the tower's default; image_size: the side images
    are brought to for an any-resolution model (image_inputs.py); other arguments as
    DatasetRunner.
    """

    def __init__(
        self,
        model,
        encoder: ConversationEncoder,
        *,
        preprocess_mode: str | None = None,
        image_size: int | None = None,
        **runner_kwargs,
    ):
        self.image_input = image_inputs.for_model(
            model.cfg, mode=preprocess_mode, image_size=image_size
        )
        super().__init__(self.image_input.preprocess, **runner_kwargs)
        encoder.check_model(self.image_input)
        self.cfg = model.cfg
        self.graphdef, self.state = place_model(model, self.mesh, self.rules)
        self.prompter = Prompter(encoder)
        # protocols that score the same continuations after the same prompt (the likelihood
        # ranking and the cloze multiple choice) share one pass: key -> scores
        self.memo: dict = {}

    def images(self, batch: Batch):
        """The model's image input from a batch (image_inputs.py)."""
        return self.image_input.to_model(super().images(batch))

    def call(self, fn, *args, **kwargs):
        """Runs a jitted inference function on this model with activation sharding active."""
        with activation_sharding(self.mesh, self.rules):
            return fn(self.graphdef, self.state, *args, **kwargs)


def _in_dataset_order(collected: list[dict], total: int, desc: str) -> dict[str, np.ndarray]:
    merged = {k: np.concatenate([np.asarray(c[k]) for c in collected]) for k in collected[0]}
    valid = merged.pop("valid").astype(bool)
    merged = {k: v[valid] for k, v in merged.items()}
    order = np.argsort(merged["index"], kind="stable")
    merged = {k: v[order] for k, v in merged.items()}
    if not np.array_equal(merged["index"], np.arange(total)):
        counts = np.bincount(merged["index"], minlength=total)
        raise RuntimeError(
            f"{desc}: {int((counts == 0).sum())} examples were never evaluated and "
            f"{int((counts > 1).sum())} more than once (of {total}); the evaluation batches are "
            "inconsistent across processes"
        )
    return merged
