"""fgjax's own parameters-only format, for any model (also ones transformers cannot represent):

    DIR/fgjax_model.json   {"format": "fgjax-params-v1", "config": <fgjax config as a dict>,
                            "checksums": fingerprints of the parameters (fgjax.integrity)}
    DIR/params/            the parameters, an Orbax checkpoint (sharded arrays, multi-host safe)

`save(path, cfg, params)` writes it; `load(path)` returns `(model, cfg)` like `fgjax.hf.load`.
fgjax_model.json is the commit marker: written last, atomically, and removed first when an
export is rewritten, so a directory that has it holds a complete export, and an export killed
half-way is never taken for one. Loading checks the parameters against the fingerprints.
"""

from __future__ import annotations

import json
import os

import jax
import orbax.checkpoint as ocp
from flax import nnx
from jax.experimental import multihost_utils

from fgjax import integrity, models, storage
from fgjax.models import config as model_config

FORMAT = "fgjax-params-v1"
META = "fgjax_model.json"


def is_native(path: str | os.PathLike) -> bool:
    return (storage.path(path) / META).is_file()


class CorruptExportError(ValueError):
    """An export whose parameters load with other values than were saved."""


def save(path: str | os.PathLike, cfg, params: dict) -> None:
    """Writes `params` (a pure nested dict of arrays, as `nnx.to_pure_dict(nnx.state(model))`),
    committing the export with fgjax_model.json last."""
    path = storage.path(path)
    storage.check_room(path, params, "the parameters export")
    if jax.process_index() == 0:
        path.mkdir(parents=True, exist_ok=True)
        (path / META).unlink(missing_ok=True)  # uncommitted until rewritten in full
    multihost_utils.sync_global_devices(f"fgjax export {path}: started")
    checksums = integrity.fingerprint(params)
    with ocp.StandardCheckpointer() as ckptr:
        ckptr.save(path / "params", params, force=True)
        ckptr.wait_until_finished()
    if jax.process_index() == 0:
        meta = {"format": FORMAT, "config": model_config.to_dict(cfg), "checksums": checksums}
        storage.write_atomic(path / META, json.dumps(meta, indent=2))
    multihost_utils.sync_global_devices(f"fgjax export {path}: committed")


def _read_meta(path: str | os.PathLike) -> dict:
    meta_path = storage.path(path) / META
    if not meta_path.is_file():
        raise FileNotFoundError(
            f"{path} is not an fgjax parameters export (no {META}: none was written there, or "
            "writing it did not finish); export one with fgjax.native.save"
        )
    meta = json.loads(meta_path.read_text())
    if meta.get("format") != FORMAT:
        raise ValueError(
            f"{meta_path} has format {meta.get('format')!r}; this fgjax reads {FORMAT!r}"
        )
    return meta


def read_config(path: str | os.PathLike):
    return model_config.from_dict(_read_meta(path)["config"])


def load_params(path: str | os.PathLike, cfg=None, shardings=None) -> dict:
    """The parameters as a pure dict, placed as `shardings` (a matching dict) if given, else
    on this process's first device -- whatever mesh wrote them (a pod's export loads on a
    laptop)."""
    cfg = cfg or read_config(path)
    abstract = nnx.to_pure_dict(nnx.state(models.abstract(cfg), nnx.Param))
    if shardings is None:
        local = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
        shardings = jax.tree.map(lambda _: local, abstract)
    abstract = jax.tree.map(
        lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), abstract, shardings
    )
    with ocp.StandardCheckpointer() as ckptr:
        params = ckptr.restore(storage.path(path) / "params", abstract)
    checksums = _read_meta(path).get("checksums")
    bad = integrity.mismatches(checksums, params) if checksums is not None else []
    if bad:
        raise CorruptExportError(
            f"the parameters in {path} load with other values than were saved ({len(bad)} "
            f"arrays: {', '.join(bad[:5])}): the files were damaged; export them again"
        )
    return params


def load(path: str | os.PathLike):
    """(model, cfg) from an fgjax parameters export."""
    cfg = read_config(path)
    graphdef, _ = nnx.split(models.abstract(cfg))
    return nnx.merge(graphdef, load_params(path, cfg)), cfg
