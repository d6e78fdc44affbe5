"""Shared helpers for the benchmark scripts: timing, machine description, result tables."""

from __future__ import annotations

import json
import os
import platform
import statistics
import time
from pathlib import Path

# tests point this elsewhere so they never overwrite the recorded results
RESULTS_DIR = Path(os.environ.get("FGJAX_BENCHMARK_RESULTS", Path(__file__).parent / "results"))


def time_call(fn, *, warmup: int = 2, repeats: int = 5) -> float:
    """Median seconds per call of `fn()` (which must block until its result is ready)."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def machine() -> dict:
    import jax

    return {
        "cpu": platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
        "jax_backend": jax.default_backend(),
        "jax_devices": [str(d) for d in jax.devices()],
    }


def report(name: str, rows: list[dict], extra: dict | None = None) -> None:
    """Prints rows as an aligned table and writes them to benchmarks/results/<name>.json."""
    columns = list(rows[0])
    widths = [max(len(str(c)), *(len(_fmt(r[c])) for r in rows)) for c in columns]
    print("  ".join(str(c).ljust(w) for c, w in zip(columns, widths)))
    for r in rows:
        print("  ".join(_fmt(r[c]).ljust(w) for c, w in zip(columns, widths)))
    RESULTS_DIR.mkdir(exist_ok=True)
    out = {"benchmark": name, "machine": machine(), "rows": rows, **(extra or {})}
    path = RESULTS_DIR / f"{name}.json"
    path.write_text(json.dumps(out, indent=2))
    print(f"wrote {path}")


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:,.3f}" if abs(v) < 100 else f"{v:,.0f}"
    return str(v)
