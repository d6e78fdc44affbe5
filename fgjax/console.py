"""Python logging for fgjax's commands: INFO level, with the chatter of libraries that log
every checkpoint step filtered out."""

from __future__ import annotations

import logging


class _QuietLibraries(logging.Filter):
    """Drops INFO chatter of Orbax and grain (they log every save step) and of fsspec/gcsfs
    (every file opened in a bucket); keeps warnings."""

    NOISY = ("/orbax/", "/grain/", "/tensorstore/", "/fsspec/", "/gcsfs/")

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.WARNING or not any(
            p in record.pathname for p in self.NOISY
        )


def setup_python_logging() -> None:
    """INFO-level logs, library chatter filtered, once."""
    root = logging.getLogger()
    if not root.handlers:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    root.setLevel(logging.INFO)
    for handler in root.handlers:
        if not any(isinstance(f, _QuietLibraries) for f in handler.filters):
            handler.addFilter(_QuietLibraries())
