"""Skipped training records: counted once per row, logged once, and a stream that keeps
skipping stopped with the reason.

Training reads a row once per epoch, from several threads, and a resumed run reads some rows
again; a bad row is still one bad row. `SkipCounter` counts distinct rows by reason.
`SkipGuard` watches a stream: MAX_IN_A_ROW skips in a row (every image corrupt, a max_length
that fits no conversation) raise `UnusableDataError` instead of a training loop waiting forever
for a batch that never fills.

In grain worker processes (data.worker_processes, data/worker_processes.py) the counters and
guards are copies: there, after `record_calls()`, they record their calls instead of acting,
each thread's calls travel with its element (`recorded()`), and the main process `replay`s
them on the originals in stream order -- the data report and the guard see what they would
see without worker processes.
"""

from __future__ import annotations

import collections
import logging
import threading
import uuid
import weakref
from collections.abc import Callable, Hashable

log = logging.getLogger(__name__)

_LIVE: weakref.WeakValueDictionary = weakref.WeakValueDictionary()  # id -> counter or guard
_recording = False  # True in a grain worker process (record_calls)
_calls = threading.local()  # this thread's recorded calls


def record_calls() -> None:
    """From now on the counters and guards of this process record their calls (a grain
    worker process: its copies of them are not the ones the data report reads)."""
    global _recording
    _recording = True


def recorded() -> list[tuple]:
    """The calls this thread recorded since the last time, as (id, method, args); clears them."""
    calls = getattr(_calls, "list", [])
    _calls.list = []
    return calls


def replay(calls: list[tuple]) -> None:
    """Makes recorded calls on the originals of this process (a guard's may raise)."""
    for uid, method, args in calls:
        target = _LIVE.get(uid)
        if target is not None:
            getattr(target, method)(*args)


class _Replayable:
    """Registered under an id that its pickled copies (in worker processes) keep."""

    def _register(self) -> None:
        self._uid = uuid.uuid4().hex
        _LIVE[self._uid] = self

    def _recorded(self, method: str, *args) -> bool:
        """True (the call is recorded, not made) in a process that records its calls."""
        if _recording:
            if not hasattr(_calls, "list"):
                _calls.list = []
            _calls.list.append((self._uid, method, args))
        return _recording


class BadInputError(ValueError):
    """Bad input met in strict mode, or input with nothing usable in it."""


class UnusableDataError(RuntimeError):
    """Nearly every record of a training stream is skipped."""


class SkipCounter(_Replayable):
    """Skipped rows by reason, each row counted and logged once; `strict` raises instead."""

    def __init__(self, name: str, strict: bool = False):
        self.name, self.strict = name, strict
        self._rows: dict[str, set] = collections.defaultdict(set)
        self._lock = threading.Lock()
        self._register()

    def __getstate__(self) -> dict:  # pickled into worker processes: a lock does not pickle
        return {k: v for k, v in self.__dict__.items() if k != "_lock"}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state, _lock=threading.Lock())

    def skip(self, reason: str, row: Hashable | None, detail: str) -> None:
        """Counts `row` (None: a row without an id, counted each time) as skipped."""
        where = "a row without an id" if row is None else f"row {row}"
        message = f"{self.name}: {reason} in {where}: {detail}"
        if self.strict:
            raise BadInputError(message + " (strict mode; pass strict=False to skip such rows)")
        if self._recorded("skip", reason, row, detail):
            return
        key = object() if row is None else row
        with self._lock:
            new = key not in self._rows[reason]
            self._rows[reason].add(key)
        if new:
            log.warning("skipping: %s", message)

    @property
    def counts(self) -> dict[str, int]:
        """{reason: distinct rows skipped for it}."""
        with self._lock:
            return {reason: len(rows) for reason, rows in self._rows.items() if rows}

    @property
    def total(self) -> int:
        return sum(self.counts.values())


class SkipGuard(_Replayable):
    """Counts skips in a row across a stream; MAX_IN_A_ROW of them raise, naming the last
    reason and `describe()` (e.g. the sources' reports)."""

    MAX_IN_A_ROW = 50

    def __init__(self, what: str, describe: Callable[[], str] = lambda: ""):
        self.what, self.describe = what, describe
        self._in_a_row = 0
        self._register()

    def skipped(self, reason: str) -> None:
        if self._recorded("skipped", reason):
            return
        self._in_a_row += 1
        if self._in_a_row >= self.MAX_IN_A_ROW:
            details = self.describe()
            raise UnusableDataError(
                f"{self._in_a_row} {self.what} in a row were skipped (last: {reason}); "
                "training stopped rather than wait for a batch that cannot fill. "
                + (f"Data report: {details}. " if details else "")
                + "Check config.data (paths, image_root, max_length, template) against the data."
            )

    def kept(self) -> None:
        if self._recorded("kept"):
            return
        self._in_a_row = 0
