"""Run by the training tests in a fresh process, to be killed: writes a parameters export,
says so on stdout, then rewrites it again and again.

    python export_worker.py EXPORT_DIR
"""

import sys

import numpy as np

from fgjax import native
from fgjax.models import presets


def main(path: str) -> None:
    cfg = presets.vlm("tiny_clip", "tiny_llama")
    params = {"w": np.random.default_rng(0).standard_normal((64, 2**18), np.float32)}  # 64 MiB
    native.save(path, cfg, params)
    print("first export written", flush=True)
    while True:
        native.save(path, cfg, params)


if __name__ == "__main__":
    main(*sys.argv[1:])
