"""fgjax's own parameters-only format, for any model (also ones transformers cannot represent):

    DIR/fgjax_model.json   {"format": "fgjax-params-v1", "config": <fgjax config as a dict>}
    DIR/params/            the parameters, an Orbax checkpoint (sharded arrays, multi-host safe)

`save(path, cfg, params)` writes it; `load(path)` returns `(model, cfg)` like `fgjax.hf.load`.
"""

from __future__ import annotations

import json
from pathlib import Path

import jax
import orbax.checkpoint as ocp
from flax import nnx

from fgjax import models
from fgjax.models import config as model_config

FORMAT = "fgjax-params-v1"
META = "fgjax_model.json"


def is_native(path: str | Path) -> bool:
    return (Path(path) / META).is_file()


def save(path: str | Path, cfg, params: dict) -> None:
    """Writes `params` (a pure nested dict of arrays, as `nnx.to_pure_dict(nnx.state(model))`)."""
    path = Path(path).absolute()
    path.mkdir(parents=True, exist_ok=True)
    with ocp.StandardCheckpointer() as ckptr:
        ckptr.save(path / "params", params, force=True)
        ckptr.wait_until_finished()
    if jax.process_index() == 0:
        (path / META).write_text(
            json.dumps({"format": FORMAT, "config": model_config.to_dict(cfg)}, indent=2)
        )


def read_config(path: str | Path):
    meta_path = Path(path) / META
    if not meta_path.is_file():
        raise FileNotFoundError(
            f"{path} is not an fgjax parameters export (no {META}); export one with fgjax.native.save"
        )
    meta = json.loads(meta_path.read_text())
    if meta.get("format") != FORMAT:
        raise ValueError(
            f"{meta_path} has format {meta.get('format')!r}; this fgjax reads {FORMAT!r}"
        )
    return model_config.from_dict(meta["config"])


def load_params(path: str | Path, cfg=None, shardings=None) -> dict:
    """The parameters as a pure dict, placed as `shardings` (a matching dict) if given."""
    cfg = cfg or read_config(path)
    abstract = nnx.to_pure_dict(nnx.state(models.abstract(cfg), nnx.Param))
    if shardings is not None:
        abstract = jax.tree.map(
            lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), abstract, shardings
        )
    with ocp.StandardCheckpointer() as ckptr:
        return ckptr.restore(Path(path).absolute() / "params", abstract)


def load(path: str | Path):
    """(model, cfg) from an fgjax parameters export."""
    cfg = read_config(path)
    graphdef, _ = nnx.split(models.abstract(cfg))
    return nnx.merge(graphdef, load_params(path, cfg)), cfg
