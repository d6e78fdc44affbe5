"""Orbax checkpoints that resume exactly: parameters, optimizer state, step, RNG and the data
iterator's position, saved asynchronously every N steps and at the end, keeping the last K.

Orbax writes each checkpoint into a temporary directory and renames it when complete, so an
interrupted save is never listed as a step. If the newest listed checkpoint still cannot be
read, `restore_latest` warns and falls back to the one before.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import grain
import jax
import orbax.checkpoint as ocp

STATE, DATA = "state", "data"


class Checkpointer:
    def __init__(
        self, directory: str | Path, *, every_steps: int, keep: int = 2, asynchronous: bool = True
    ):
        self.directory = Path(directory).absolute()
        self.every_steps = every_steps
        options = ocp.CheckpointManagerOptions(
            max_to_keep=keep,
            save_interval_steps=max(every_steps, 1),
            enable_async_checkpointing=asynchronous,
            create=True,
        )
        self.manager = ocp.CheckpointManager(self.directory, options=options)

    def steps(self) -> list[int]:
        return sorted(self.manager.all_steps())

    def save(self, step: int, state: Any, data_iterator=None, *, force: bool = False) -> bool:
        """Saves if `step` is due (or `force`); returns whether a save started."""
        items = {STATE: ocp.args.StandardSave(state)}
        if data_iterator is not None:
            items[DATA] = grain.checkpoint.CheckpointSave(data_iterator)
        return self.manager.save(step, args=ocp.args.Composite(**items), force=force)

    def restore(self, step: int, abstract_state: Any, data_iterator=None) -> Any:
        """The state at `step`, with arrays placed as `abstract_state`'s shardings; the data
        iterator (if given) is moved to its saved position."""
        items = {STATE: ocp.args.StandardRestore(abstract_state)}
        if data_iterator is not None:
            items[DATA] = grain.checkpoint.CheckpointRestore(data_iterator)
        return self.manager.restore(step, args=ocp.args.Composite(**items))[STATE]

    def restore_latest(self, abstract_state: Any, data_iterator=None) -> tuple[int, Any] | None:
        """(step, state) of the newest readable checkpoint, or None when there is none."""
        for step in reversed(self.steps()):
            try:
                return step, self.restore(step, abstract_state, data_iterator)
            except Exception as e:  # noqa: BLE001 - any failure means this checkpoint is unusable
                logging.warning("checkpoint at step %d in %s is unreadable (%s: %s); trying the previous one",
                                step, self.directory, type(e).__name__, str(e)[:300])  # fmt: skip
        return None

    def wait(self) -> None:
        self.manager.wait_until_finished()

    def close(self) -> None:
        self.manager.wait_until_finished()
        self.manager.close()


def abstract_like(tree: Any) -> Any:
    """ShapeDtypeStructs (with shardings) of a pytree of arrays, for restoring into."""
    return jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=getattr(x, "sharding", None)),
        tree,
    )
