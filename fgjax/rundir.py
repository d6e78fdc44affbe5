"""The layout of a run directory (a workdir), in one place: training writes it through these
names, and evaluation, export, initialization and the study read it through them.

A workdir written by `fgjax.train.trainer` holds

    config.json          the run's ml_collections config (task, data.tokenizer, data.template...)
    model_config.json    the fgjax model config (`fgjax.models.config.to_dict`)
    metrics.jsonl        one line per logged step
    checkpoints/<step>/  Orbax steps; item "state" = {"state": TrainState, "frozen": params}
    params_export/       the final parameters (`fgjax.native`), once the run has finished
    params_export_step<N>/  parameters at the steps of config.export_steps (kept after the
                         checkpoint of that step is deleted)

An evaluation workdir holds its own config.json beside its reports.

`Run.open(workdir)` checks all that and says what is missing; `run.params(step)` is a
read-only mapping {fgjax parameter path "a/b/c": np.ndarray} whose values are restored from
disk on access, one parameter at a time (small ones together; Orbax partial restores), so a
7B export never holds the whole model in host memory. `run_export("DIR[@STEP]")` is the
parameters export a "run:" source names.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
from collections.abc import Mapping
from pathlib import Path

import jax
import numpy as np
import orbax.checkpoint as ocp
from etils import epath
from flax import nnx, traverse_util

from fgjax import models, native, storage, trees
from fgjax.models import config as model_config

CONFIG = "config.json"
MODEL_CONFIG = "model_config.json"
METRICS = "metrics.jsonl"
CHECKPOINTS = "checkpoints"
PARAMS_EXPORT = "params_export"  # a run's final parameters
_UNFINISHED = re.compile(r"^(\d+)\.orbax-checkpoint-tmp")
_STEP_EXPORT = re.compile(rf"^{PARAMS_EXPORT}_step(\d+)$")


class RunError(ValueError):
    """A workdir that cannot be read as asked: missing, incomplete or corrupt."""


class RunMismatchError(RunError, trees.ParameterMismatchError):
    """A run's stored parameters are not those of its model_config.json."""


def export_dir(workdir, step: int | None = None) -> epath.Path:
    """Where a run's parameters exports live: the final one, or the one at `step`
    (config.export_steps)."""
    return storage.path(workdir) / (PARAMS_EXPORT if step is None else f"{PARAMS_EXPORT}_step{step}")


def run_export(path: str) -> epath.Path:
    """The parameters export a "run:" source names: "DIR" (the run's final export, or DIR if it
    is an export itself) or "DIR@STEP" (the export that run wrote at STEP)."""
    path, _, step = path.partition("@")
    if step and not step.isdigit():
        raise ValueError(f"run:{path}@{step}: the part after '@' must be a step number")
    candidates = [export_dir(path, int(step))] if step else [export_dir(path), storage.path(path)]
    target = next((c for c in candidates if native.is_native(c)), None)
    if target is None:
        raise FileNotFoundError(
            f"no parameters export at {' or '.join(map(str, candidates))}; finish that run first "
            "(or add the step to its config.export_steps), or point at another source"
        )
    return target


def read_config(workdir) -> dict:
    """A workdir's config.json as a dict; {} when it has none (e.g. a bare parameters export)."""
    file = storage.path(workdir) / CONFIG
    return json.loads(file.read_text()) if file.is_file() else {}


SOURCE_PATH_KEYS = ("path", "image_root", "keep", "data_dir")  # of data source specs


def absolute_paths(config) -> None:
    """Makes the paths a training config names absolute, in place: the tokenizer, the data
    sources' files and folders, and "run:"/"hf:" init sources, each when it names something
    that exists relative to the working directory. A run then records paths that work from any
    directory (its config.json is read by evaluation and export, maybe elsewhere)."""

    def absolute(value):
        if (isinstance(value, str) and value and not storage.is_remote(value)
                and not os.path.isabs(value) and os.path.exists(value)):  # fmt: skip
            return os.path.abspath(value)
        return value

    data = config.data
    data.tokenizer = absolute(data.get("tokenizer"))
    sources = []
    for source in data.get("sources") or []:
        source = dict(source)
        for key in SOURCE_PATH_KEYS:
            if key in source:
                source[key] = absolute(source[key])
        sources.append(source)
    data.sources = sources
    if config.get("init"):
        init = {}
        for component, source in dict(config.init).items():
            kind, sep, rest = str(source or "").partition(":")
            path, hash_, subtree = rest.partition("#")
            path, at, step = path.partition("@")
            init[component] = (
                f"{kind}:{absolute(path)}{at}{step}{hash_}{subtree}" if sep and kind in ("run", "hf")
                else source
            )  # fmt: skip
        config.init = init


def write_configs(workdir, config, model_cfg=None) -> None:
    """config.json (the ml_collections config) and, for a training run, model_config.json."""
    workdir = storage.path(workdir)
    storage.write_atomic(workdir / CONFIG, config.to_json_best_effort(indent=2))
    if model_cfg is not None:
        model_json = json.dumps(model_config.to_dict(model_cfg), indent=2)
        storage.write_atomic(workdir / MODEL_CONFIG, model_json)


def _listing(path: epath.Path) -> str:
    try:
        names = sorted(p.name for p in path.iterdir())
    except OSError:
        return "(unreadable)"
    shown = ", ".join(names[:20]) + (f", ... ({len(names)} entries)" if len(names) > 20 else "")
    return f"[{shown}]" if names else "(empty)"


class ParamStore(Mapping):
    """{fgjax path: np.ndarray} over one Orbax item directory, restored from disk on access.

    roots: key prefixes inside the item under which the parameters live, e.g.
    (("state", "trainable"), ("frozen",)) for a training checkpoint, ((),) for a native export.
    `shape(path)` and `dtype(path)` read metadata only. Each Orbax restore costs ~0.1 s, so
    small parameters are read together: accessing a parameter also reads the ones after it
    in iteration order, up to `read_ahead_bytes` in all, and keeps them until they are
    accessed (once). Reading in iteration order thus holds at most one parameter or
    `read_ahead_bytes`, whichever is larger.
    """

    def __init__(self, directory: Path, roots, *, what: str, read_ahead_bytes: int = 16 * 2**20):
        self.directory, self.what = storage.path(directory), what  # Orbax needs absolute paths
        self.read_ahead_bytes = read_ahead_bytes
        try:
            with ocp.PyTreeCheckpointer() as ckptr:
                tree = ckptr.metadata(self.directory).item_metadata.tree
        except Exception as e:  # noqa: BLE001 - any failure means the metadata is unusable
            raise RunError(
                f"{what} in {self.directory} is unreadable ({type(e).__name__}: {str(e)[:300]}); "
                f"it holds {_listing(self.directory)}"
            ) from None
        self._keys = {}  # fgjax path -> full key tuple inside the item
        self._meta = {}
        for key, meta in traverse_util.flatten_dict(tree).items():
            for root in roots:
                if key[: len(root)] == tuple(root):
                    path = "/".join(key[len(root) :])
                    self._keys[path], self._meta[path] = key, meta
        if not self._keys:
            raise RunError(f"{what} in {self.directory} holds no parameters under {list(roots)}")
        self._order = list(self._keys)
        self._ahead = {}  # parameters read ahead, not yet accessed

    def __iter__(self):
        return iter(self._order)

    def __len__(self) -> int:
        return len(self._keys)

    def __contains__(self, path) -> bool:
        return path in self._keys

    def shape(self, path: str) -> tuple[int, ...]:
        return tuple(self._meta[path].shape)

    def dtype(self, path: str) -> np.dtype:
        return np.dtype(self._meta[path].dtype)

    def nbytes(self, path: str) -> int:
        return int(np.prod(self.shape(path))) * self.dtype(path).itemsize

    def __getitem__(self, path: str) -> np.ndarray:
        if path in self._ahead:
            return self._ahead.pop(path)
        batch, size = [path], self.nbytes(path)
        for following in self._order[self._order.index(path) + 1 :]:
            size += self.nbytes(following)
            if size > self.read_ahead_bytes:
                break
            batch.append(following)
        values = self._restore(batch)
        self._ahead.update((p, values[p]) for p in batch[1:])
        return values[path]

    def _restore(self, paths: list[str]) -> dict:
        """{path: np.ndarray} of `paths`, in one Orbax partial restore."""
        item, restore_args = {}, {}
        for path in paths:
            *parents, leaf = self._keys[path]
            node, args = item, restore_args
            for part in parents:
                node, args = node.setdefault(part, {}), args.setdefault(part, {})
            node[leaf] = jax.ShapeDtypeStruct(self.shape(path), self.dtype(path))
            args[leaf] = ocp.RestoreArgs(restore_type=np.ndarray)
        try:
            with ocp.PyTreeCheckpointer() as ckptr:
                out = ckptr.restore(
                    self.directory,
                    args=ocp.args.PyTreeRestore(
                        item=item, restore_args=restore_args, partial_restore=True
                    ),
                )
        except Exception as e:  # noqa: BLE001 - a missing or corrupt data file
            raise RunError(
                f"cannot read {paths[0]!r}{' and the parameters after it' if len(paths) > 1 else ''} "
                f"from {self.what} in {self.directory} ({type(e).__name__}: {str(e)[:300]}); "
                "the checkpoint is incomplete or corrupt"
            ) from None
        values = {}
        for path in paths:
            value = out
            for part in self._keys[path]:
                value = value[part]
            values[path] = np.asarray(value)
        return values

    def check(self, cfg) -> None:
        """Raises RunError unless the parameters are exactly those of the model `cfg`."""
        abstract = nnx.to_pure_dict(nnx.state(models.abstract(cfg), nnx.Param))
        want = {path: leaf.shape for path, leaf in trees.flatten(abstract).items()}
        problems = trees.mismatches(want, {path: self.shape(path) for path in self})
        if problems:
            raise RunMismatchError(
                f"{self.what} in {self.directory} does not match the run's model_config.json:\n  "
                + "\n  ".join(problems[:30])
            )


@dataclasses.dataclass(frozen=True)
class Run:
    """A training workdir, checked on `open`."""

    workdir: epath.Path
    config: dict  # config.json as a dict
    model_cfg: object  # the fgjax model config
    steps: tuple[int, ...]  # complete checkpoint steps, oldest first
    unfinished: tuple[int, ...]  # steps whose checkpoint was never finished writing
    has_export: bool  # params_export/ is there (the run finished)
    export_steps: tuple[int, ...]  # steps with a parameters export (config.export_steps)

    @classmethod
    def open(cls, workdir) -> Run:
        workdir = storage.path(workdir)  # a run read from any working directory
        if not workdir.is_dir():
            raise RunError(f"workdir {str(workdir)!r} is not a directory")
        config_file = workdir / CONFIG
        if not config_file.is_file():
            raise RunError(
                f"no config.json in {workdir} (it holds {_listing(workdir)}); is this an fgjax "
                "training workdir? The trainer writes config.json when it starts"
            )
        try:
            config = json.loads(config_file.read_text())
        except json.JSONDecodeError as e:
            raise RunError(f"{config_file} is not valid JSON: {e}") from None
        model_cfg = cls._model_config(workdir)
        steps, unfinished = [], []
        ckpt_dir = workdir / CHECKPOINTS
        if ckpt_dir.is_dir():
            for name in (p.name for p in ckpt_dir.iterdir()):
                if name.isdigit() and (ckpt_dir / name).is_dir():
                    steps.append(int(name))
                elif match := _UNFINISHED.match(name):
                    unfinished.append(int(match.group(1)))
        has_export = native.is_native(export_dir(workdir))
        export_steps = sorted(
            int(match.group(1))
            for name in (p.name for p in workdir.iterdir())
            if (match := _STEP_EXPORT.match(name)) and native.is_native(workdir / name)
        )
        if not steps and not has_export and not export_steps:
            found = f"{CHECKPOINTS}/ holds {_listing(ckpt_dir)}" if ckpt_dir.is_dir() else (
                f"there is no {CHECKPOINTS}/ directory")  # fmt: skip
            partial = (
                f"; step(s) {sorted(unfinished)} were never finished writing" if unfinished else ""
            )
            raise RunError(
                f"{workdir} has no complete checkpoint and no {PARAMS_EXPORT}/: {found}{partial}. "
                f"The workdir holds {_listing(workdir)}; train at least until the first checkpoint"
            )
        return cls(workdir, config, model_cfg, tuple(sorted(steps)), tuple(sorted(unfinished)),
                   has_export, tuple(export_steps))  # fmt: skip

    @staticmethod
    def _model_config(workdir: epath.Path):
        file = workdir / MODEL_CONFIG
        if file.is_file():
            try:
                return model_config.from_dict(json.loads(file.read_text()))
            except (json.JSONDecodeError, KeyError, TypeError) as e:
                raise RunError(f"{file} is not a valid fgjax model config: {e}") from None
        if native.is_native(workdir / PARAMS_EXPORT):
            return native.read_config(workdir / PARAMS_EXPORT)
        raise RunError(
            f"no model_config.json in {workdir} (it holds {_listing(workdir)}); the trainer "
            "writes it with config.json when it starts"
        )

    def describe_steps(self) -> str:
        parts = [f"complete checkpoint steps {list(self.steps)}" if self.steps else
                 "no complete checkpoint"]  # fmt: skip
        if self.unfinished:
            parts.append(f"unfinished (partial) steps {list(self.unfinished)}")
        if self.export_steps:
            parts.append(f"parameters exports at steps {list(self.export_steps)}")
        parts.append(f"{PARAMS_EXPORT}/ " + ("present" if self.has_export else "absent"))
        return ", ".join(parts)

    def params(self, step: int | None = None) -> tuple[ParamStore, str]:
        """(the parameters of checkpoint `step`, a description). step None: the final
        parameters export when the run finished, else the newest checkpoint. A step whose
        checkpoint is gone reads its parameters export (config.export_steps) if there is one."""
        if step is None and self.has_export:
            return self._export_params(None)
        if step is None:
            step = self.steps[-1] if self.steps else self.export_steps[-1]
        if step not in self.steps and step in self.export_steps:
            return self._export_params(step)
        if step not in self.steps:
            why = " (its checkpoint was never finished writing)" if step in self.unfinished else ""
            raise RunError(f"no checkpoint at step {step}{why} in {self.workdir}; it has "
                           f"{self.describe_steps()}")  # fmt: skip
        item = self.workdir / CHECKPOINTS / str(step) / "state"
        if not item.is_dir():
            raise RunError(
                f"checkpoint step {step} in {self.workdir / CHECKPOINTS} is incomplete: no "
                f"'state' item (it holds {_listing(item.parent)}); the run has "
                f"{self.describe_steps()}"
            )
        store = ParamStore(item, [("state", "trainable"), ("frozen",)], what=f"checkpoint step {step}")
        store.check(self.model_cfg)
        return store, f"checkpoint step {step}"

    def _export_params(self, step: int | None) -> tuple[ParamStore, str]:
        directory = export_dir(self.workdir, step)
        what = f"the parameters export {directory.name}" + (" (final)" if step is None else "")
        store = ParamStore(directory / "params", [()], what=what)
        store.check(self.model_cfg)
        return store, what
