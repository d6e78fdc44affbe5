"""Labelled image sets for evaluation: random access to {"image", "label", "id"} plus the class
names, from TFDS (fgjax.data.classification), the built-in specimens, a JSONL file or arrays.

    dataset = datasets.from_spec("oxford_flowers102")                   # its eval split
    dataset = datasets.from_spec({"name": "cars196", "max_examples": 1000})
    dataset = datasets.from_spec({"source": "jsonl", "name": "mine", "path": "test.jsonl"})
    train = datasets.from_spec(spec, split="train")                      # for linear probes

A spec is a registered dataset name or a dict with `name` and optionally `source` ("tfds"
(default for registered names), "specimens", "jsonl", "folder"), `split`, `train_split`, `data_dir`,
`max_examples` and `subset_seed` (a seeded random subset, sorted, e.g. the 1,000 images per
dataset of Zhang et al.), and for JSONL `path` / `train_path`, `image_root`, `class_names`.
JSONL lines: {"image": path (relative to image_root, default the file's folder),
"label": class name or integer index, "id": optional, unique}. The whole file is checked when
it is read -- JSON, labels, unique ids, image files present -- so that a bad row fails before
a model is loaded, with its line number. A folder (`path` / `train_path`) holds one folder of
images per class, named after it (`class_names` may fix their order).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from fgjax import storage
from fgjax.data.folders import list_image_folder


@dataclasses.dataclass
class ClassificationSet:
    """name; split; class_names (label order); source: item i -> {"image": encoded bytes, a
    uint8 array or a PIL image, "label": int, "id": str}."""

    name: str
    split: str
    class_names: tuple[str, ...]
    source: Sequence

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, index: int) -> dict:
        return self.source[index]

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def labels(self) -> np.ndarray:
        """i32[N] every label (reads every record of sources without a fast path)."""
        fast = getattr(self.source, "labels", None)
        if fast is not None:
            return np.asarray(fast(), np.int32)
        return np.asarray([self.source[i]["label"] for i in range(len(self))], np.int32)

    def ids(self) -> list[str]:
        """Every record's id."""
        fast = getattr(self.source, "record_ids", None)
        if fast is not None:
            return list(fast())
        return [str(self.source[i]["id"]) for i in range(len(self))]


class ArraySource:
    """Records from in-memory arrays: images u8[N, H, W, 3] (or a list), labels int[N]."""

    def __init__(self, images, labels, ids: Sequence[str] | None = None, prefix: str = "item"):
        if len(images) != len(labels):
            raise ValueError(f"{len(images)} images but {len(labels)} labels")
        self.images, self._labels = images, np.asarray(labels, np.int64)
        self._ids = list(ids) if ids is not None else [f"{prefix}-{i}" for i in range(len(labels))]

    def __len__(self) -> int:
        return len(self._labels)

    def __getitem__(self, index: int) -> dict:
        return {
            "image": self.images[index],
            "label": int(self._labels[index]),
            "id": self._ids[index],
        }

    def labels(self) -> np.ndarray:
        return self._labels

    def record_ids(self) -> list[str]:
        return self._ids


class Subset:
    """The records of `source` at `indices` (in that order)."""

    def __init__(self, source: Sequence, indices: Sequence[int]):
        self.source, self.indices = source, np.asarray(indices, np.int64)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, index: int) -> dict:
        return self.source[int(self.indices[index])]

    def labels(self) -> np.ndarray:
        fast = getattr(self.source, "labels", None)
        if fast is None:
            return np.asarray([self[i]["label"] for i in range(len(self))])
        return np.asarray(fast())[self.indices]

    def record_ids(self) -> list[str]:
        fast = getattr(self.source, "record_ids", None)
        if fast is None:
            return [str(self[i]["id"]) for i in range(len(self))]
        ids = fast()
        return [ids[i] for i in self.indices]


class _TfdsRecords:
    """classification.DataSource with string ids."""

    def __init__(self, name: str, split: str, data_dir: str | None):
        from fgjax.data import classification

        self.name, self.split = name, split
        self._source = classification.DataSource(name, split, data_dir, decode=False)

    def __len__(self) -> int:
        return len(self._source)

    def __getitem__(self, index: int) -> dict:
        return {**self._source[index], "id": f"{self.name}/{self.split}/{index}"}

    def record_ids(self) -> list[str]:
        return [f"{self.name}/{self.split}/{i}" for i in range(len(self))]


def subset(dataset: ClassificationSet, max_examples: int | None, seed: int = 0):
    """A seeded random subset of at most `max_examples` records, in dataset order."""
    if max_examples is None or max_examples >= len(dataset):
        return dataset
    picked = np.sort(np.random.default_rng(seed).choice(len(dataset), max_examples, replace=False))
    return dataclasses.replace(dataset, source=Subset(dataset.source, picked))


def from_spec(spec: str | dict, split: str | None = None) -> ClassificationSet:
    """The dataset a spec describes (see the module docstring); `split` "train" asks for the
    split linear probes train on (a registered dataset's train_split)."""
    spec = {"name": spec} if isinstance(spec, str) else dict(spec)
    name = spec["name"]
    source = spec.get("source") or ("specimens" if name == "specimens" else "tfds")
    want_train = split == "train"
    if source == "tfds":
        dataset = _tfds(spec, want_train)
    elif source == "specimens":
        dataset = _specimens(spec, want_train)
    elif source == "jsonl":
        dataset = _jsonl(spec, want_train)
    elif source == "folder":
        dataset = _folder(spec, want_train)
    else:
        raise ValueError(
            f"dataset {name!r}: unknown source {source!r}; use tfds, specimens, jsonl or folder"
        )
    if want_train:
        return subset(dataset, spec.get("max_train_examples"), int(spec.get("subset_seed", 0)))
    return subset(dataset, spec.get("max_examples"), int(spec.get("subset_seed", 0)))


OWN_DATA = (
    'for your own images use {"name": NAME, "source": "folder", "path": DIR} (one subfolder '
    'of images per class; the folder names are the class names) or {"name": NAME, "source": '
    '"jsonl", "path": FILE} (lines {"image": PATH, "label": CLASS})'
)


def _tfds(spec: dict, want_train: bool) -> ClassificationSet:
    from fgjax.data import classification

    try:
        info = classification.info(spec["name"])
    except ValueError as error:
        raise ValueError(f"{error}; {OWN_DATA}") from None
    split = (
        spec.get("train_split", info.train_split)
        if want_train
        else spec.get("split", info.eval_split)
    )
    records = _TfdsRecords(info.name, split, spec.get("data_dir"))
    return ClassificationSet(info.name, split, info.class_names, records)


def _specimens(spec: dict, want_train: bool) -> ClassificationSet:
    from fgjax.data import specimens

    split = spec.get("train_split", "train") if want_train else spec.get("split", "test")
    default = specimens.DEFAULT_SIZES[split]
    size = int(spec.get("train_size" if want_train else "size", default))
    data = specimens.generate(
        split, size, resolution=int(spec.get("resolution", 64)), seed=int(spec.get("seed", 0))
    )
    source = ArraySource(data["image"], data["label"], data["id"])
    return ClassificationSet("specimens", split, tuple(specimens.class_names()), source)


def _jsonl(spec: dict, want_train: bool) -> ClassificationSet:
    key = "train_path" if want_train else "path"
    if key not in spec:
        raise ValueError(f"JSONL dataset {spec['name']!r} needs {key!r}")
    path = storage.path(spec[key])
    rows = read_jsonl_rows(path, required=("image", "label"))
    class_names = spec.get("class_names")
    if class_names is None:
        names = {r["label"] for _, r in rows if isinstance(r["label"], str)}
        if len(names) != len({r["label"] for _, r in rows}):
            raise ValueError(f"{path}: integer labels need `class_names` in the dataset spec")
        class_names = sorted(names)
    class_names = tuple(class_names)
    index = {n: i for i, n in enumerate(class_names)}
    root = storage.path(spec.get("image_root") or path.parent)
    labels, images, ids = [], [], []
    for number, (where, row) in enumerate(rows):
        label = row["label"]
        if isinstance(label, str):
            if label not in index:
                raise ValueError(f"{where}: label {label!r} is not a class name")
            label = index[label]
        elif isinstance(label, bool) or not isinstance(label, int):
            raise ValueError(
                f"{where}: label {label!r} must be a class name or an integer index"
            )
        elif not 0 <= label < len(class_names):
            raise ValueError(
                f"{where}: label {label} is outside the {len(class_names)} classes (0 to "
                f"{len(class_names) - 1})"
            )
        labels.append(label)
        images.append(LazyImage(root / row["image"]))
        ids.append(str(row.get("id", f"{spec['name']}/{number}")))
    check_rows(rows, ids, images)
    split = "train" if want_train else spec.get("split", "test")
    return ClassificationSet(spec["name"], split, class_names, ArraySource(images, labels, ids))


def _folder(spec: dict, want_train: bool) -> ClassificationSet:
    """An image folder: DIR/<class name>/<images> (fgjax.data.folders), listed whole before a
    model loads."""
    key = "train_path" if want_train else "path"
    if key not in spec:
        raise ValueError(f"folder dataset {spec['name']!r} needs {key!r}: a folder of class folders")
    class_names, files, labels = list_image_folder(
        spec[key], spec.get("class_names"), f"folder dataset {spec['name']!r}"
    )
    ids = [f"{spec['name']}/{f.parent.name}/{f.name}" for f in files]
    split = "train" if want_train else spec.get("split", "test")
    images = [LazyImage(f) for f in files]
    return ClassificationSet(spec["name"], split, class_names, ArraySource(images, labels, ids))


def read_jsonl_rows(path: Path, required: Sequence[str]) -> list[tuple[str, dict]]:
    """[("FILE:LINE", row)] of a JSONL file, each row an object with the `required` keys."""
    if not path.is_file():
        raise FileNotFoundError(f"no file {path}")
    rows = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{path}:{number}"
        try:
            row = json.loads(line)
        except json.JSONDecodeError as error:
            raise ValueError(f"{where}: not valid JSON ({error}); one object per line") from None
        if not isinstance(row, dict):
            raise ValueError(f"{where}: expected a JSON object, got {type(row).__name__}")
        missing = [k for k in required if k not in row]
        if missing:
            raise ValueError(f"{where}: missing {missing}")
        rows.append((where, row))
    if not rows:
        raise ValueError(f"{path} has no rows")
    return rows


def check_rows(rows: Sequence[tuple[str, dict]], ids: Sequence[str], images: Sequence) -> None:
    """Raises if two rows share an id or an image file is missing (naming the lines)."""
    first: dict[str, str] = {}
    for (where, _), row_id in zip(rows, ids):
        if row_id in first:
            raise ValueError(f"{where}: id {row_id!r} is also the id of {first[row_id]}")
        first[row_id] = where
    missing = [(where, im.path) for (where, _), im in zip(rows, images) if not im.path.is_file()]
    if missing:
        listed = "; ".join(f"{where}: {file}" for where, file in missing[:5])
        raise FileNotFoundError(
            f"{len(missing)} image files do not exist ({listed}); check image_root"
        )


class LazyImage:
    """An image file read when the record is fetched (its encoded bytes)."""

    def __init__(self, path: Path):
        self.path = path

    def read(self) -> bytes:
        if not self.path.is_file():
            raise FileNotFoundError(f"image {self.path} does not exist")
        return self.path.read_bytes()


def read_image(image: Any):
    """Resolves lazily read images to something fgjax.data.images.preprocess accepts."""
    return image.read() if isinstance(image, LazyImage) else image


def describe_image(image: Any) -> str:
    """Where an image comes from, for error messages."""
    return f"file {image.path}" if isinstance(image, LazyImage) else "an in-memory image"
