"""Reading and writing Hugging Face checkpoint directories: config.json plus one safetensors
file or several shards with `model.safetensors.index.json`.

Tensors are read one at a time (safetensors memory-maps the files), so a loader never needs
the whole checkpoint in host memory.
"""

from __future__ import annotations

import json
import os

import ml_dtypes  # noqa: F401  registers numpy's "bfloat16" so safetensors can return bf16
import numpy as np
from safetensors import SafetensorError, safe_open
from safetensors.numpy import save_file

from fgjax import storage

INDEX_NAME = "model.safetensors.index.json"


class CheckpointError(ValueError):
    """A checkpoint directory that cannot be read as asked: missing, incomplete or corrupt."""


def check_directory(path) -> str:
    """`path` (local or gs://, then copied to a local cache once: safetensors memory-maps its
    files) as a local directory name, checked to exist."""
    if storage.is_remote(path):
        if not storage.path(path).is_dir():
            raise CheckpointError(f"{path!r} does not exist; pass a Hugging Face model directory")
        path = storage.local_copy(path)
    path = os.fspath(path)
    if not os.path.exists(path):
        raise CheckpointError(f"{path!r} does not exist; pass a Hugging Face model directory")
    if not os.path.isdir(path):
        raise CheckpointError(
            f"{path!r} is a file; pass the directory holding config.json and the safetensors"
        )
    return path


def read_config(path) -> dict:
    """The config.json of a model directory as a dict."""
    file = os.path.join(check_directory(path), "config.json")
    if not os.path.isfile(file):
        raise CheckpointError(
            f"no config.json in {path!r} (found: {sorted(os.listdir(path))[:10]}); "
            "is this a Hugging Face model directory?"
        )
    try:
        with open(file) as f:
            return json.load(f)
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{file} is not valid JSON: {e}") from None


class Checkpoint:
    """The tensors of a model directory, by key. Use as a context manager.

    keys(); shape(key) -> tuple and dtype(key) -> str read headers only; read(key) -> np.ndarray.
    """

    def __init__(self, path):
        self.path = check_directory(path)
        index_file = os.path.join(self.path, INDEX_NAME)
        if os.path.isfile(index_file):
            with open(index_file) as f:
                weight_map = json.load(f).get("weight_map", {})
            files = sorted(set(weight_map.values()))
            absent = [f for f in files if not os.path.isfile(os.path.join(self.path, f))]
            if absent:
                raise CheckpointError(
                    f"{INDEX_NAME} in {self.path!r} lists shard(s) that are not there: {absent}"
                )
        else:
            files = sorted(f for f in os.listdir(self.path) if f.endswith(".safetensors"))
            weight_map = None
        if not files:
            others = [f for f in os.listdir(self.path) if f.endswith((".bin", ".pt", ".pth"))]
            hint = f" (found {others}: convert them to safetensors first)" if others else ""
            raise CheckpointError(f"no *.safetensors weights in {self.path!r}{hint}")
        self._handles = {f: self._open(f) for f in files}
        self._file_of = {}
        for name, handle in self._handles.items():
            for key in handle.keys():
                if key in self._file_of:
                    raise CheckpointError(
                        f"tensor {key!r} is stored twice, in {self._file_of[key]} and {name}"
                    )
                self._file_of[key] = name
        if weight_map is not None:
            wrong = [k for k, f in weight_map.items() if self._file_of.get(k) != f]
            if wrong:
                raise CheckpointError(
                    f"{INDEX_NAME} does not match the shards for {len(wrong)} tensor(s), e.g. "
                    f"{wrong[:5]}; the download is probably incomplete"
                )

    def _open(self, name):
        file = os.path.join(self.path, name)
        try:
            return safe_open(file, framework="numpy")
        except (SafetensorError, OSError) as e:
            raise CheckpointError(
                f"cannot read {file}: {e}. The file is truncated or corrupt; download it again"
            ) from None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._handles.clear()

    def keys(self) -> list[str]:
        return list(self._file_of)

    def __contains__(self, key) -> bool:
        return key in self._file_of

    def shape(self, key) -> tuple[int, ...]:
        return tuple(self._handles[self._file_of[key]].get_slice(key).get_shape())

    def read(self, key) -> np.ndarray:
        try:
            return self._handles[self._file_of[key]].get_tensor(key)
        except SafetensorError as e:
            raise CheckpointError(
                f"cannot read tensor {key!r} of {self._file_of[key]}: {e}"
            ) from None


def write_checkpoint(path, tensors, *, max_shard_bytes: int = 5 * 2**30, metadata=None) -> list:
    """Writes (key, np.ndarray) pairs as safetensors shards into directory `path`: one
    `model.safetensors`, or `model-0000i-of-0000n.safetensors` plus the index when they
    exceed `max_shard_bytes`. Holds at most one shard in memory. Returns the file names."""
    os.makedirs(path, exist_ok=True)
    metadata = {"format": "pt", **(metadata or {})}
    shards, current, size, total = [], {}, 0, 0
    temp_names = []

    def flush():
        name = f"shard-{len(temp_names):05d}.tmp"
        save_file(current, os.path.join(path, name), metadata=metadata)
        temp_names.append(name)
        shards.append(list(current))

    for key, array in tensors:
        array = np.ascontiguousarray(array)
        if current and size + array.nbytes > max_shard_bytes:
            flush()
            current, size = {}, 0
        current[key] = array
        size += array.nbytes
        total += array.nbytes
    if current or not shards:
        flush()
    n = len(temp_names)
    names = ["model.safetensors"] if n == 1 else [
        f"model-{i + 1:05d}-of-{n:05d}.safetensors" for i in range(n)
    ]  # fmt: skip
    for temp, name in zip(temp_names, names):
        os.replace(os.path.join(path, temp), os.path.join(path, name))
    if n > 1:
        weight_map = {key: name for keys, name in zip(shards, names) for key in keys}
        with open(os.path.join(path, INDEX_NAME), "w") as f:
            json.dump({"metadata": {"total_size": total}, "weight_map": weight_map}, f, indent=2)
    return names
