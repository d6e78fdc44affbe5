"""Orbax checkpoints that resume exactly: parameters, optimizer state, step, RNG and the data
iterator's position, saved asynchronously every N steps and at the end, keeping the last K.

Orbax writes each checkpoint into a temporary directory and renames it when complete, so an
interrupted save is never listed as a step (its leftovers are removed at start-up). Each
checkpoint also holds fingerprints of its arrays and of every process's data position
(fgjax.integrity), checked on restore, so one that restores with other values than were
saved counts as unreadable too.

`restore_latest` tries the newest checkpoint first. One that cannot be read is moved aside to
`<directory>.unreadable/<step>` (kept for inspection, out of Orbax's way, so that training can
write that step again) and the one before is tried. When none can be read, every one is moved
aside and the caller starts from scratch. Checkpoints written for another model or optimizer
(their arrays have other shapes) are not damage but a changed config: they stop the run with
an `IncompatibleCheckpointError`, and nothing is moved.
"""

from __future__ import annotations

import collections
import errno
import json
import logging
import zlib
from pathlib import Path
from typing import Any

import grain
import jax
import numpy as np
import orbax.checkpoint as ocp
from etils import epath
from jax.experimental import multihost_utils

from fgjax import distributed, integrity, storage

STATE, DATA, CHECKSUMS = "state", "data", "checksums"


class CorruptCheckpointError(RuntimeError):
    """A checkpoint restored with other values than were saved."""


class IncompatibleCheckpointError(ValueError):
    """The checkpoints in a directory hold arrays of other shapes than the config needs."""


class Checkpointer:
    def __init__(
        self,
        directory: str | Path,
        *,
        every_steps: int,
        keep: int | None = 2,
        asynchronous: bool = True,
    ):
        if not (isinstance(every_steps, int) and every_steps >= 1):
            raise ValueError(f"checkpoint every_steps={every_steps!r} must be an integer >= 1")
        if keep is not None and not (isinstance(keep, int) and keep >= 1):
            raise ValueError(
                f"checkpoint keep={keep!r} must be an integer >= 1 (None keeps every checkpoint): "
                "with none kept, a stopped run cannot resume"
            )
        self.directory = storage.path(directory)
        self.every_steps = every_steps
        options = ocp.CheckpointManagerOptions(
            max_to_keep=keep,
            save_interval_steps=every_steps,
            enable_async_checkpointing=asynchronous,
            cleanup_tmp_directories=True,
            create=True,
        )
        handlers = {  # declared up front, so that metadata is readable before any restore
            STATE: ocp.StandardCheckpointHandler(),
            DATA: grain.checkpoint.CheckpointHandler(),
            CHECKSUMS: ocp.JsonCheckpointHandler(),
        }
        self.manager = ocp.CheckpointManager(
            self.directory, options=options, item_handlers=handlers
        )
        self._closed = False

    @property
    def unreadable_directory(self) -> epath.Path:
        """Where unreadable checkpoints are moved."""
        return self.directory.with_name(self.directory.name + ".unreadable")

    def steps(self) -> list[int]:
        return sorted(self.manager.all_steps())

    def save(self, step: int, state: Any, data_iterator=None, *, force: bool = False) -> bool:
        """Saves if `step` is due (or `force`); returns whether a save started."""
        if not force and not self.manager.should_save(step):
            return False
        self._wait()  # the save before must be on disk (or fail) before we measure the room
        storage.check_room(self.directory, state, f"the checkpoint of step {step}",
                           self._resume_advice())  # fmt: skip
        checksums = {"arrays": integrity.fingerprint(state)}
        items = {STATE: ocp.args.StandardSave(state)}
        if data_iterator is not None:
            checksums["data"] = distributed.gather(_position_hash(data_iterator))
            items[DATA] = grain.checkpoint.CheckpointSave(data_iterator)
        items[CHECKSUMS] = ocp.args.JsonSave(checksums)
        return self.manager.save(step, args=ocp.args.Composite(**items), force=force)

    def restore(self, step: int, abstract_state: Any, data_iterator=None) -> Any:
        """The state at `step`, with arrays placed as `abstract_state`'s shardings; the data
        iterator (if given) is moved to its saved position. Raises
        `IncompatibleCheckpointError` if the saved arrays do not fit `abstract_state`,
        `CorruptCheckpointError` if they restore with other values than were saved."""
        self._check_compatible(step, abstract_state)
        items = {STATE: ocp.args.StandardRestore(abstract_state)}
        if data_iterator is not None:
            items[DATA] = grain.checkpoint.CheckpointRestore(data_iterator)
        has_checksums = (self.directory / str(step) / CHECKSUMS).exists()
        if has_checksums:
            items[CHECKSUMS] = ocp.args.JsonRestore()
        else:
            logging.warning("checkpoint %d in %s has no checksums (an older fgjax wrote it); "
                            "its values cannot be verified", step, self.directory)  # fmt: skip
        restored = self.manager.restore(step, args=ocp.args.Composite(**items))
        if has_checksums:
            self._verify(step, restored[STATE], restored[CHECKSUMS], data_iterator)
        return restored[STATE]

    def restore_latest(self, abstract_state: Any, data_iterator=None) -> tuple[int, Any] | None:
        """(step, state) of the newest readable checkpoint, or None when there is none; newer
        unreadable ones are moved aside (see the module docstring). After None, a given data
        iterator may have been moved by a failed attempt: start a fresh one."""
        failed: dict[int, Exception] = {}
        found = None
        for step in reversed(self.steps()):
            try:
                state, error = self.restore(step, abstract_state, data_iterator), None
            except Exception as e:  # noqa: BLE001 - any failure means this checkpoint is unusable
                state, error = None, e
            if distributed.everywhere(error is None):  # every process resumes from the same step
                found = step, state
                break
            failed[step] = error = error or RuntimeError("unreadable in another process")
            logging.warning("checkpoint at step %d in %s is unreadable (%s: %s)", step,
                            self.directory, type(error).__name__, str(error)[:300])  # fmt: skip
        incompatible = [s for s, e in failed.items() if isinstance(e, IncompatibleCheckpointError)]
        if found is None and incompatible:
            raise failed[max(incompatible)]
        for step in sorted(failed):
            self._move_aside(step)
        return found

    def close(self) -> None:
        """Waits for the save in flight (raising its error, if it failed) and closes; once."""
        if self._closed:
            return
        self._closed = True
        try:
            self._wait()
        finally:
            self.manager.close()

    def __enter__(self) -> Checkpointer:
        return self

    def __exit__(self, kind, error, traceback) -> None:
        """Closes; when leaving by an exception, without letting a failed save replace it."""
        if kind is None:
            self.close()
        else:
            self.close_after_failure()

    def close_after_failure(self) -> None:
        """For a run that is failing: finishes or abandons the save in flight without raising,
        so the run's own error is the one reported; a failed save is logged."""
        try:
            self.close()
        except Exception as e:  # noqa: BLE001 - the run's error takes precedence
            logging.error("the checkpoint being saved when the run failed was not written "
                          "(%s: %s)", type(e).__name__, str(e)[:300])  # fmt: skip

    # ------------------------------------------------------------------------- internals

    def _wait(self) -> None:
        """Waits for the save in flight; a full disk raises `storage.DiskFullError`."""
        try:
            self.manager.wait_until_finished()
        except Exception as error:
            if not _disk_full(error):
                raise
            raise storage.DiskFullError(
                f"no space left on device while writing a checkpoint in {self.directory} "
                f"({str(error).splitlines()[0][:300]}). {self._resume_advice()}"
            ) from None

    def _resume_advice(self) -> str:
        steps = self.steps()
        last = f"step {steps[-1]} is the newest complete checkpoint" if steps else "none is saved yet"
        return (
            f"Free space (or lower config.checkpoint.keep), then rerun the same command to "
            f"resume ({last})."
        )

    def _check_compatible(self, step: int, abstract_state: Any) -> None:
        data = self.directory / str(step) / DATA
        ours = f"process_{jax.process_index()}-of-{jax.process_count()}.json"
        written = sorted(p.name for p in data.glob("process_*-of-*.json")) if data.is_dir() else []
        if written and ours not in written:
            raise IncompatibleCheckpointError(
                f"the checkpoint at step {step} in {self.directory} was written by "
                f"{written[0].split('-of-')[1].removesuffix('.json')} processes (data positions "
                f"{written}); this run has {jax.process_count()}. Resume with as many processes "
                "as wrote it, or use a new workdir."
            )
        try:
            metadata = self.manager.item_metadata(step)[STATE]
        except Exception:  # noqa: BLE001 - unreadable metadata: the restore will say why
            return
        saved = _shapes(getattr(metadata, "tree", metadata))
        needed = _shapes(abstract_state)
        if saved and saved != needed:
            only_saved = sorted((saved - needed).elements())[:3]
            only_needed = sorted((needed - saved).elements())[:3]
            raise IncompatibleCheckpointError(
                f"the checkpoint at step {step} in {self.directory} holds {saved.total()} arrays of "
                f"other shapes than this config's {needed.total()} (only in the checkpoint: "
                f"{only_saved}; only in the config: {only_needed}): it was written with another "
                "model, stage or optimizer. Resume with the config that wrote it, or use a new workdir."
            )

    def _verify(self, step: int, state: Any, checksums: dict, data_iterator) -> None:
        bad = integrity.mismatches(checksums["arrays"], state)
        if bad:
            raise CorruptCheckpointError(
                f"checkpoint {step} in {self.directory}: {len(bad)} arrays restored with other "
                f"values than were saved ({', '.join(bad[:5])})"
            )
        saved = checksums.get("data")
        if data_iterator is not None and saved and len(saved) == jax.process_count():
            if _position_hash(data_iterator) != saved[jax.process_index()]:
                raise CorruptCheckpointError(
                    f"checkpoint {step} in {self.directory}: the data position of process "
                    f"{jax.process_index()} restored with another value than was saved"
                )

    def _move_aside(self, step: int) -> None:
        if jax.process_index() == 0:
            target, copy = self.unreadable_directory / str(step), 1
            while target.exists():
                target, copy = self.unreadable_directory / f"{step}.{copy}", copy + 1
            storage.move(self.directory / str(step), target)
            logging.warning("moved the unreadable checkpoint %d to %s (delete it once inspected)",
                            step, target)  # fmt: skip
        multihost_utils.sync_global_devices(f"fgjax: checkpoint {step} moved aside")
        self.manager.reload()


def _disk_full(error: BaseException | None) -> bool:
    """Whether `error` or one of its causes is a full disk (Orbax reports TensorStore's
    ENOSPC as a ValueError naming the OS error)."""
    while error is not None:
        if getattr(error, "errno", None) == errno.ENOSPC or "No space left on device" in str(error):
            return True
        error = error.__cause__ or error.__context__
    return False


def _shapes(tree: Any) -> collections.Counter:
    """How many arrays of each (shape, dtype) `tree` holds."""
    leaves = jax.tree.leaves(tree, is_leaf=lambda x: hasattr(x, "shape") and hasattr(x, "dtype"))
    return collections.Counter(
        (tuple(x.shape), np.dtype(x.dtype).name) for x in leaves if hasattr(x, "shape")
    )


def _position_hash(data_iterator) -> int:
    return zlib.crc32(json.dumps(data_iterator.get_state(), sort_keys=True, default=str).encode())
