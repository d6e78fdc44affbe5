"""Runs the export command line in this process and reports the host memory it took:
`python memory_worker.py ARGS...` (the arguments of `python -m fgjax.export`) prints one JSON
line {"before": bytes, "peak": bytes}: the resident set before the export and its peak during
it (Linux: the peak is reset through /proc/self/clear_refs just before). A first export into a
scratch directory starts the reader's threads and fills the import caches, so that what is
measured is what grows with the model."""

from __future__ import annotations

import json
import sys


def status_bytes(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"no {field} in /proc/self/status")


def main(argv: list[str]) -> None:
    from fgjax import export

    out = next(a.split("=", 1)[1] for a in argv if a.startswith("--out="))
    export.main([a for a in argv if not a.startswith("--out=")] + [f"--out={out}.warm-up"])
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # resets the peak resident set (VmHWM) to the current one
    before = status_bytes("VmRSS")
    export.main(argv)
    print(json.dumps({"before": before, "peak": status_bytes("VmHWM")}))


if __name__ == "__main__":
    main(sys.argv[1:])
