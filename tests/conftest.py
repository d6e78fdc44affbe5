"""Test-wide settings, applied before JAX initializes (also inherited by test subprocesses).

- XLA's backend optimization level 0: tests run tiny models, where compiling dominates and
  LLVM's optimizations cost 5x more time than they save. Numerics are unchanged to test
  tolerances; benchmarks do not import this file and run fully optimized.
- JAX on the CPU only, even where libtpu is installed (the fit check's TPU compilation asks
  for libtpu explicitly).
- A persistent compilation cache shared by the test processes of one machine, so the
  processes of multi-process tests and repeated runs reuse compiled programs.
- The tests marked `slow` run first: pytest-xdist hands out tests in collection order, and a
  five-minute test collected last keeps one worker busy while the others sit idle.
"""

import os
import tempfile

os.environ.setdefault("XLA_FLAGS", "--xla_backend_optimization_level=0")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault(
    "JAX_COMPILATION_CACHE_DIR", os.path.join(tempfile.gettempdir(), "fgjax-test-xla-cache")
)
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.5")


def pytest_collection_modifyitems(config, items):
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)  # stable: slow first
