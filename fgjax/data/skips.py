"""Skipped training records: counted once per row, logged once, and a stream that keeps
skipping stopped with the reason.

Training reads a row once per epoch, from several threads, and a resumed run reads some rows
again; a bad row is still one bad row. `SkipCounter` counts distinct rows by reason.
`SkipGuard` watches a stream: MAX_IN_A_ROW skips in a row (every image corrupt, a max_length
that fits no conversation) raise `UnusableDataError` instead of a training loop waiting forever
for a batch that never fills.
"""

from __future__ import annotations

import collections
import logging
import threading
from collections.abc import Callable, Hashable

log = logging.getLogger(__name__)


class BadInputError(ValueError):
    """Bad input met in strict mode, or input with nothing usable in it."""


class UnusableDataError(RuntimeError):
    """Nearly every record of a training stream is skipped."""


class SkipCounter:
    """Skipped rows by reason, each row counted and logged once; `strict` raises instead."""

    def __init__(self, name: str, strict: bool = False):
        self.name, self.strict = name, strict
        self._rows: dict[str, set] = collections.defaultdict(set)
        self._lock = threading.Lock()

    def skip(self, reason: str, row: Hashable | None, detail: str) -> None:
        """Counts `row` (None: a row without an id, counted each time) as skipped."""
        where = "a row without an id" if row is None else f"row {row}"
        message = f"{self.name}: {reason} in {where}: {detail}"
        if self.strict:
            raise BadInputError(message + " (strict mode; pass strict=False to skip such rows)")
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


class SkipGuard:
    """Counts skips in a row across a stream; MAX_IN_A_ROW of them raise, naming the last
    reason and `describe()` (e.g. the sources' reports)."""

    MAX_IN_A_ROW = 50

    def __init__(self, what: str, describe: Callable[[], str] = lambda: ""):
        self.what, self.describe = what, describe
        self._in_a_row = 0

    def skipped(self, reason: str) -> None:
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
        self._in_a_row = 0
