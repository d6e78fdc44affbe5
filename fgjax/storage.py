"""Where runs, data and weights live -- a local path or a gs:// URI, through one path type --
room on disk for a large write, checked before it starts, and small files written atomically.

Every path fgjax reads or writes goes through `path()`, an `etils.epath.Path` (the type Orbax
uses): local paths as pathlib, `gs://bucket/...` through gcsfs. gs:// uses gcsfs even where
TensorFlow is installed (epath would otherwise pick TensorFlow's client): one client for every
gs:// path, and one that honours STORAGE_EMULATOR_HOST, so the tests run the same code against
a GCS emulator on localhost. Orbax writes the checkpoint arrays through TensorStore's own GCS
driver (TENSORSTORE_GCS_HTTP_URL points it at an emulator).

Atomicity: a GCS object appears whole or not at all, so a small file written to a bucket is
never seen half-written; a local one is written next to its place and renamed over it.
Directories (checkpoints, exports) have commit markers written last: Orbax's own, and
fgjax.native's fgjax_model.json.

A checkpoint that fills the disk half-way fails deep inside Orbax's writer threads, with
pages of tracebacks from every thread and a half-written temporary directory. Checking the
free space first turns the common case -- the run's own checkpoints filling the disk -- into
one message that says what to do.
"""

from __future__ import annotations

import errno
import json
import math
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import jax
import numpy as np
from etils import epath

from fgjax import distributed

# before any gs:// path is used (epath reads it at each access); a user's explicit choice stands
os.environ.setdefault("EPATH_USE_TF", "false")
REMOTE_SCHEMES = ("gs://",)


def is_remote(location: str | os.PathLike) -> bool:
    """Whether `location` names an object store (gs://) rather than a local file system."""
    return os.fspath(location).startswith(REMOTE_SCHEMES)


def path(location: str | os.PathLike) -> epath.Path:
    """`location` as an epath.Path: gs:// URIs unchanged, local paths made absolute (Orbax
    needs absolute paths, and a run's records then work from any directory)."""
    if is_remote(location):
        return epath.Path(os.fspath(location))
    return epath.Path(os.path.abspath(os.fspath(location)))


class DiskFullError(OSError):
    """Not enough free space for a checkpoint or export."""

    def __init__(self, message: str):
        super().__init__(errno.ENOSPC, message)

    def __str__(self) -> str:
        return self.strerror


def bytes_to_write(tree: Any) -> int:
    """Bytes this process writes for `tree`: the first replica of each shard it holds."""
    total = 0
    for leaf in jax.tree.leaves(tree):
        if isinstance(leaf, jax.Array):
            total += sum(s.data.nbytes for s in leaf.addressable_shards if s.replica_id == 0)
        else:
            total += np.asarray(leaf).nbytes
    return total


def free_bytes(directory: str | os.PathLike) -> float:
    """Free bytes on the file system of `directory` (or of its nearest existing parent); an
    object store has no such limit (inf)."""
    if is_remote(directory):
        return math.inf
    local = Path(directory).absolute()
    while not local.exists():
        local = local.parent
    return shutil.disk_usage(local).free


def check_room(directory: str | Path, tree: Any, what: str, advice: str = "") -> None:
    """Raises DiskFullError, in every process, if the file system of `directory` cannot hold
    this process's share of `tree`'s arrays in some process (a collective)."""
    needed, free = bytes_to_write(tree), free_bytes(directory)
    advice = advice or "Free space or choose another directory, then rerun."
    if not distributed.everywhere(needed <= free):
        if needed > free:
            raise DiskFullError(
                f"no space left on device for {what} in {directory}: it needs about "
                f"{needed / 2**20:.1f} MiB and {free / 2**20:.1f} MiB are free. {advice}"
            )
        raise DiskFullError(f"another process has no room for {what} in {directory}. {advice}")


def write_atomic(file: str | os.PathLike, data: str | bytes) -> None:
    """Writes a small file so that readers see the old file or the new one, never half of one:
    an object is uploaded whole; a local file is written next to it, then renamed over it."""
    file = path(file)
    data = data.encode() if isinstance(data, str) else data
    if is_remote(file):
        file.write_bytes(data)
        return
    tmp = file.with_name(file.name + ".tmp")
    tmp.write_bytes(data)
    tmp.replace(file)


def relative_files(location: str | os.PathLike) -> list[str]:
    """The files under the directory `location` (local or gs://), as sorted posix paths
    relative to it; a bucket is listed by prefix, a page of names per request."""
    root = path(location)
    base = os.fspath(root).removeprefix("gs://").rstrip("/")
    out = []
    for folder, _, names in root.walk():
        folder = os.fspath(folder).removeprefix("gs://").rstrip("/")  # walk drops the scheme
        out += [f"{folder}/{name}".removeprefix(base + "/") for name in names]
    return sorted(out)


def move(source: str | os.PathLike, destination: str | os.PathLike) -> None:
    """Moves a directory: a rename on a local file system; in a bucket, which has no rename,
    a copy of every object, then the source deleted."""
    source, destination = path(source), path(destination)
    if not is_remote(source):
        destination.parent.mkdir(parents=True, exist_ok=True)
        source.rename(destination)
        return
    for name in relative_files(source):
        _copy_file(source / name, destination / name)
    source.rmtree()


def local_copy(location: str | os.PathLike) -> str:
    """A local directory holding the files of `location`: itself when local; for gs://, a copy
    under $FGJAX_CACHE (default ~/.cache/fgjax), made on first use. A file is copied again when
    its object changed since (GCS's generation number, which every write renews, and size):
    a model re-exported to the same bucket path, same shapes and so same sizes, must not load
    the old weights. For readers that memory-map files (safetensors)."""
    if not is_remote(location):
        return os.fspath(location)
    remote = path(location)
    cache = Path(os.environ.get("FGJAX_CACHE", Path.home() / ".cache" / "fgjax"))
    local = cache / "gs" / os.fspath(remote).removeprefix("gs://")
    record_file = local / SOURCES_RECORD
    try:
        copied = json.loads(record_file.read_text())
    except (OSError, ValueError):  # no copy yet, or a record cut short: copy everything
        copied = {}
    for name in relative_files(remote):
        source, target = remote / name, local / name
        version = _object_version(source)
        if not target.is_file() or copied.get(name) != version:
            target.parent.mkdir(parents=True, exist_ok=True)
            partial = target.with_name(target.name + ".partial")
            _copy_file(source, partial)
            partial.replace(target)  # a killed copy leaves no file of the right name
            copied[name] = version
            write_atomic(record_file, json.dumps(copied, indent=1))
    return os.fspath(local)


SOURCES_RECORD = ".fgjax-sources.json"  # in a local copy: the object version of each file


def _object_version(source: epath.Path) -> list:
    """[size, generation] of a GCS object (the generation changes with every write of it;
    an emulator without generations falls back to the MD5 hash)."""
    import fsspec

    info = fsspec.filesystem("gs").info(os.fspath(source))
    return [int(info["size"]), str(info.get("generation") or info.get("md5Hash") or "")]


def upload_tree(local: str | os.PathLike, location: str | os.PathLike, last=()) -> None:
    """Copies the files under the local directory `local` to `location` (local or gs://),
    the names in `last` (commit markers such as config.json) after every other file, so that
    a directory with them is complete."""
    local, target = Path(local), path(location)
    files = sorted(f for f in local.rglob("*") if f.is_file())
    files.sort(key=lambda f: f.relative_to(local).as_posix() in last)  # stable: markers last
    for file in files:
        destination = target / file.relative_to(local).as_posix()
        destination.parent.mkdir(parents=True, exist_ok=True)
        _copy_file(epath.Path(file), destination)


def _copy_file(source, destination, chunk_bytes: int = 16 * 2**20) -> None:
    """Streams one file between file systems (local <-> gs://) without holding it in memory."""
    with source.open("rb") as reader, destination.open("wb") as writer:
        shutil.copyfileobj(reader, writer, chunk_bytes)


class Mirror:
    """A local staging directory mirrored to a remote workdir (process 0 uploads), for
    writers that need a local file system (TensorBoard's, the profiler's) or append to a file
    (metrics.jsonl). Starts with the workdir's metrics.jsonl, so a resumed run appends to its
    records."""

    def __init__(self, workdir: str | os.PathLike):
        self.remote = path(workdir)
        self.local = Path(tempfile.mkdtemp(prefix="fgjax-logs-"))
        self.uploaded: dict[str, int] = {}
        self.active = jax.process_index() == 0
        if self.active and (self.remote / "metrics.jsonl").exists():
            data = (self.remote / "metrics.jsonl").read_bytes()
            (self.local / "metrics.jsonl").write_bytes(data)
            self.uploaded["metrics.jsonl"] = len(data)

    def sync(self) -> None:
        """Uploads every staged file that is new or changed size (each object whole)."""
        if not self.active:
            return
        for file in sorted(self.local.rglob("*")):
            name = file.relative_to(self.local).as_posix()
            if file.is_file() and self.uploaded.get(name) != file.stat().st_size:
                data = file.read_bytes()
                target = self.remote / name
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(data)
                self.uploaded[name] = len(data)

    def remove(self) -> None:
        shutil.rmtree(self.local, ignore_errors=True)
