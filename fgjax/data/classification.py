"""Fine-grained image classification datasets: a registry of TFDS datasets and their class names.

    info = classification.info("cars196")       # class names, splits, number of classes
    ds = classification.load("cars196")         # the eval split: tf.data of {image, label}
    ds = classification.load("cars196", info.train_split, data_dir=..., decode=False)

Each entry names its TFDS builder, clean human-readable class names in label order (data files
in fgjax/data/classnames/, each stating its source), the split used for evaluation and the split
a linear probe trains on. Datasets: oxford_flowers102, oxford_iiit_pet, food101,
caltech_birds2011, cars196, stanford_dogs, dtd, imagenet2012 and fgvc_aircraft (built by
fgjax.data.aircraft; imagenet2012 and fgvc_aircraft need a manual download). Other datasets
(e.g. the procedural "specimens") add themselves with `register(ClassificationInfo(...))`.

ImageNet names are the curated ones of CLIP's zero-shot evaluation. That list already splits
WordNet's double "crane" ("crane bird" / "construction crane") and "maillot" ("tights" /
"one-piece bathing suit"), but repeats two others: "missile" (n03773504 missile and n04008634
projectile, missile) and "sunglasses" (n04355933 sunglass and n04356056 sunglasses). Every class
carrying a repeated name is renamed to the first WordNet lemma of its synset
(IMAGENET_DUPLICATE_LEMMAS): "missile" / "projectile", "sunglass" / "sunglasses". Stanford Dogs
uses the same curated names for its 120 ImageNet synsets.
"""

from __future__ import annotations

import collections
import dataclasses
import os
import re
from collections.abc import Sequence

import tensorflow as tf
import tensorflow_datasets as tfds

from fgjax.data import aircraft  # noqa: F401  (registers the "fgvc_aircraft" TFDS builder)

CLASSNAMES_DIR = os.path.join(os.path.dirname(__file__), "classnames")

IMAGENET_DUPLICATE_LEMMAS = {
    "n03773504": "missile",
    "n04008634": "projectile",
    "n04355933": "sunglass",
    "n04356056": "sunglasses",
}


@dataclasses.dataclass(frozen=True)
class ClassificationInfo:
    """A labelled image dataset as the evaluation code sees it.

    tfds_name: the TFDS builder ("name", "name:1.*.*" or "name/config:1.0.0").
    class_names: one per label, in label order. splits: the TFDS split names it has.
    eval_split / train_split: TFDS split expressions for evaluation and for fitting probes.
    manual_download: the data must be fetched by hand (TFDS then reads it from manual_dir).
    """

    name: str
    tfds_name: str
    class_names: tuple[str, ...]
    splits: tuple[str, ...]
    eval_split: str
    train_split: str
    manual_download: bool = False
    image_key: str = "image"
    label_key: str = "label"
    source: str = ""

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def __post_init__(self):
        if len(set(self.class_names)) != len(self.class_names):
            repeats = [n for n, c in collections.Counter(self.class_names).items() if c > 1]
            raise ValueError(f"{self.name}: class names repeat: {repeats}")
        for split in (self.eval_split, self.train_split):
            check_split(self, split)


_REGISTRY: dict[str, ClassificationInfo] = {}


def register(dataset: ClassificationInfo, *, overwrite: bool = False) -> ClassificationInfo:
    """Adds a dataset to the registry (an existing name is an error unless overwrite)."""
    if dataset.name in _REGISTRY and not overwrite:
        raise ValueError(f"dataset {dataset.name!r} is already registered; pass overwrite=True")
    _REGISTRY[dataset.name] = dataset
    return dataset


def names() -> tuple[str, ...]:
    """The registered dataset names, sorted."""
    return tuple(sorted(_REGISTRY))


def info(name: str) -> ClassificationInfo:
    """The registry entry for `name`; an unknown name lists the available ones."""
    if name not in _REGISTRY:
        raise ValueError(
            f"unknown classification dataset {name!r}; available: {', '.join(names())}"
        )
    return _REGISTRY[name]


def check_split(dataset: ClassificationInfo, split: str) -> str:
    """Validates a TFDS split expression ("test", "train[:10%]+validation") for `dataset`."""
    for part in split.split("+"):
        base = re.sub(r"\[.*\]$", "", part.strip())
        if base not in dataset.splits:
            raise ValueError(
                f"{dataset.name} has no split {base!r} (in {split!r}); "
                f"its splits are {', '.join(dataset.splits)}"
            )
    return split


def builder(name: str, data_dir: str | None = None) -> tfds.core.DatasetBuilder:
    """The TFDS builder of a registered dataset."""
    return tfds.builder(info(name).tfds_name, data_dir=data_dir)


def prepare(
    name: str,
    data_dir: str | None = None,
    manual_dir: str | None = None,
    file_format: str = "array_record",
) -> tfds.core.DatasetBuilder:
    """Downloads (or reads from manual_dir) and prepares a dataset; returns its builder.

    The default array_record format serves both `load` (tf.data) and `data_source` (random
    access, for grain).
    """
    dataset_builder = builder(name, data_dir)
    dataset_builder.download_and_prepare(
        download_config=tfds.download.DownloadConfig(manual_dir=manual_dir),
        file_format=file_format,
    )
    return dataset_builder


def load(
    name: str,
    split: str | None = None,
    data_dir: str | None = None,
    *,
    manual_dir: str | None = None,
    download: bool = True,
    decode: bool = True,
    shuffle_files: bool = False,
    read_config: tfds.ReadConfig | None = None,
) -> tf.data.Dataset:
    """A split as tf.data of {"image", "label"}; split None is the dataset's eval split.

    image: uint8[H, W, 3], or the encoded bytes (tf.string) when decode=False -- use that with
    fgjax.data.images.preprocess to get exactly transformers' preprocessing (PIL decoding).
    label: int64 in [0, num_classes). download: prepare the dataset first if needed.
    """
    dataset = info(name)
    split = check_split(dataset, split or dataset.eval_split)
    dataset_builder = prepare(name, data_dir, manual_dir) if download else builder(name, data_dir)
    decoders = None if decode else {dataset.image_key: tfds.decode.SkipDecoding()}
    ds = dataset_builder.as_dataset(
        split=split, shuffle_files=shuffle_files, decoders=decoders, read_config=read_config
    )
    image_key, label_key = dataset.image_key, dataset.label_key
    return ds.map(
        lambda ex: {"image": ex[image_key], "label": tf.cast(ex[label_key], tf.int64)},
        num_parallel_calls=tf.data.AUTOTUNE,
    )


def as_numpy(name: str, split: str | None = None, data_dir: str | None = None, **kwargs):
    """`load` as an iterable of numpy dicts."""
    return tfds.as_numpy(load(name, split, data_dir, **kwargs))


class DataSource(Sequence):
    """Random access to a prepared split (array_record format), for grain.

    item i: {"image": uint8[H, W, 3] or encoded bytes, "label": int}.
    """

    def __init__(self, name: str, split: str | None = None, data_dir=None, decode=True):
        self.dataset = info(name)
        split = check_split(self.dataset, split or self.dataset.eval_split)
        decoders = None if decode else {self.dataset.image_key: tfds.decode.SkipDecoding()}
        self._source = tfds.data_source(
            self.dataset.tfds_name, split=split, data_dir=data_dir, decoders=decoders
        )

    def __len__(self) -> int:
        return len(self._source)

    def __getitem__(self, index: int) -> dict:
        example = self._source[index]
        return {
            "image": example[self.dataset.image_key],
            "label": int(example[self.dataset.label_key]),
        }


# -- class names ----------------------------------------------------------------------------


def read_class_names(file_name: str) -> tuple[str, ...]:
    """One name per line from fgjax/data/classnames/<file_name>; '#' lines are comments."""
    return tuple(aircraft.read_lines(os.path.join(CLASSNAMES_DIR, file_name)))


def disambiguate(
    class_names: Sequence[str], ids: Sequence[str], replacements: dict[str, str]
) -> tuple[str, ...]:
    """Renames every class whose name repeats to replacements[its id]; result is unique."""
    counts = collections.Counter(class_names)
    out = []
    for class_name, class_id in zip(class_names, ids, strict=True):
        if counts[class_name] > 1:
            if class_id not in replacements:
                raise ValueError(f"{class_name!r} ({class_id}) repeats and has no replacement")
            class_name = replacements[class_id]
        out.append(class_name)
    return tuple(out)


def imagenet_class_names() -> tuple[str, ...]:
    """CLIP's 1000 curated ImageNet names, made unique (see the module docstring)."""
    return disambiguate(
        read_class_names("imagenet.txt"), imagenet_wnids(), IMAGENET_DUPLICATE_LEMMAS
    )


def imagenet_wnids() -> tuple[str, ...]:
    return read_class_names("imagenet_wnids.txt")


def stanford_dogs_class_names() -> tuple[str, ...]:
    """Curated ImageNet names of the 120 Stanford Dogs synsets, in TFDS (sorted-id) order."""
    by_wnid = dict(zip(imagenet_wnids(), imagenet_class_names(), strict=True))
    return tuple(by_wnid[wnid] for wnid in sorted(read_class_names("stanford_dogs_wnids.txt")))


CLIP_NAMES = "CLIP zero-shot class names (openai/CLIP data/prompts.md)"


def _builtin(name, tfds_name, splits, eval_split, train_split, **fields) -> ClassificationInfo:
    """A built-in entry; class names default to classnames/<name>.txt from CLIP's lists."""
    if "class_names" not in fields:
        fields["class_names"] = read_class_names(f"{name}.txt")
    fields.setdefault("source", CLIP_NAMES)
    return ClassificationInfo(
        name, tfds_name, splits=splits, eval_split=eval_split, train_split=train_split, **fields
    )


def _register_builtin() -> None:
    three, two = ("train", "validation", "test"), ("train", "test")
    for dataset in (
        _builtin("oxford_flowers102", "oxford_flowers102:2.*.*", three, "test", "train+validation"),
        _builtin("oxford_iiit_pet", "oxford_iiit_pet:4.*.*", two, "test", "train"),
        _builtin("food101", "food101:2.*.*", ("train", "validation"), "validation", "train"),
        _builtin("cars196", "cars196:2.*.*", two, "test", "train"),
        _builtin("dtd", "dtd:3.*.*", three, "test", "train+validation"),
        _builtin(
            "caltech_birds2011", "caltech_birds2011:0.*.*", two, "test", "train",
            source="the official CUB-200-2011 classes.txt",
        ),
        _builtin(
            "fgvc_aircraft", "fgvc_aircraft:1.*.*", three, "test", "train+validation",
            manual_download=True,
        ),
        _builtin(
            "stanford_dogs", "stanford_dogs:0.2.*", two, "test", "train",
            class_names=stanford_dogs_class_names(),
            source="CLIP's curated ImageNet names of the same WordNet ids",
        ),
        _builtin(
            "imagenet2012", "imagenet2012:5.*.*", ("train", "validation"), "validation", "train",
            class_names=imagenet_class_names(), manual_download=True,
            source="CLIP's curated ImageNet names (openai/CLIP notebooks/imagenet_data.json)",
        ),
    ):  # fmt: skip
        register(dataset)


_register_builtin()
