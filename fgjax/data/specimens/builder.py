"""The TFDS builder "specimens": no download, examples from the numpy fast path.

Registered configs: "64" (default) and "32", seed 0, DEFAULT_SIZES examples per split. Any
other resolution, seed or size: `Specimens(config=config(resolution=32, seed=3, train=500))`
(the config's name encodes its values, so different datasets never share a data_dir folder).
"""

from __future__ import annotations

import dataclasses

import tensorflow_datasets as tfds

from fgjax.data.specimens import examples, taxonomy


@dataclasses.dataclass(eq=False)
class SpecimensConfig(tfds.core.BuilderConfig):
    resolution: int = 64
    seed: int = 0
    train_size: int = examples.DEFAULT_SIZES["train"]
    validation_size: int = examples.DEFAULT_SIZES["validation"]
    test_size: int = examples.DEFAULT_SIZES["test"]

    def sizes(self) -> dict[str, int]:
        return {
            "train": self.train_size,
            "validation": self.validation_size,
            "test": self.test_size,
        }


def config(
    resolution: int = 64,
    seed: int = 0,
    train: int = examples.DEFAULT_SIZES["train"],
    validation: int = examples.DEFAULT_SIZES["validation"],
    test: int = examples.DEFAULT_SIZES["test"],
) -> SpecimensConfig:
    """A builder config; the registered one when the values match one, else a custom one."""
    for registered in Specimens.BUILDER_CONFIGS:
        values = (registered.resolution, registered.seed, *registered.sizes().values())
        if values == (resolution, seed, train, validation, test):
            return registered
    return SpecimensConfig(
        name=f"{resolution}px_seed{seed}_{train}-{validation}-{test}",
        description=f"{resolution}x{resolution} px, seed {seed}, custom split sizes",
        resolution=resolution,
        seed=seed,
        train_size=train,
        validation_size=validation,
        test_size=test,
    )


class Specimens(tfds.core.GeneratorBasedBuilder):
    """Procedurally drawn specimens: 100 fine-grained classes in 10 families, with alt-text
    captions and general question-answer pairs. Deterministic given the config's seed."""

    VERSION = tfds.core.Version("1.1.0")
    RELEASE_NOTES = {
        "1.0.0": "First release.",
        "1.1.0": "caption_kind: whether the caption names the class, the family, the scene or "
        "nothing.",
    }
    BUILDER_CONFIGS = [
        SpecimensConfig(name="64", description="64x64 px, seed 0", resolution=64),
        SpecimensConfig(name="32", description="32x32 px, seed 0", resolution=32),
    ]
    DEFAULT_CONFIG_NAME = "64"

    def _info(self) -> tfds.core.DatasetInfo:
        res = self.builder_config.resolution
        families = taxonomy.family_names()
        return tfds.core.DatasetInfo(
            builder=self,
            description=__doc__,
            features=tfds.features.FeaturesDict(
                {
                    "id": tfds.features.Text(),
                    "image": tfds.features.Image(shape=(res, res, 3)),
                    "label": tfds.features.ClassLabel(names=taxonomy.class_names()),
                    "class_name": tfds.features.Text(),
                    "family": tfds.features.ClassLabel(names=families),
                    "family_name": tfds.features.Text(),
                    "caption": tfds.features.Text(),
                    "caption_kind": tfds.features.Text(),
                    "questions": tfds.features.Sequence(tfds.features.Text()),
                    "answers": tfds.features.Sequence(tfds.features.Text()),
                    # each entry: the possible answers joined by specimens.OPTION_SEP ("|")
                    "options": tfds.features.Sequence(tfds.features.Text()),
                }
            ),
            supervised_keys=("image", "label"),
            disable_shuffling=True,  # stored in index order: record i is example i
            homepage="https://github.com/fgjax/fgjax/blob/main/docs/specimens.md",
        )

    def _split_generators(self, dl_manager):
        del dl_manager  # nothing to download
        sizes = self.builder_config.sizes()
        return {split: self._generate_examples(split, n) for split, n in sizes.items()}

    def _generate_examples(self, split: str, n: int):
        cfg = self.builder_config
        for batch in examples.generate_batches(split, n, cfg.resolution, cfg.seed):
            for i, key in enumerate(batch["id"]):
                yield key, {name: values[i] for name, values in batch.items()}
