"""Generation speed of the specimens dataset (numpy fast path) against its one-minute budget.

The target: 20,000 examples at 64 px in under a minute on 2 cores. One process; reports
wall and CPU seconds for `--num` examples (CPU time is what an idle core would need, so it
is the fair figure on a shared machine), examples/s and the ratio of wall time to the budget.

    .venv/bin/python -m benchmarks.specimens_speed [--num 20000] [--resolutions 32,64]

Writes benchmarks/results/specimens_speed.json.
"""

from __future__ import annotations

import argparse
import os
import time

from benchmarks.common import report
from fgjax.data import specimens

BUDGET_S_PER_20K = 60.0


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num", type=int, default=20_000)
    parser.add_argument("--resolutions", default="32,64")
    args = parser.parse_args()
    rows = []
    for res in map(int, args.resolutions.split(",")):
        start, cpu_start = time.perf_counter(), time.process_time()
        data = specimens.generate("train", args.num, resolution=res)
        seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start
        assert data["image"].shape == (args.num, res, res, 3)
        budget = BUDGET_S_PER_20K * args.num / 20_000
        rows.append(
            {"resolution": res, "examples": args.num, "seconds": seconds, "cpu s": cpu_seconds,
             "examples/s": args.num / seconds, "budget s": budget, "ratio": seconds / budget}
        )  # fmt: skip
    report("specimens_speed", rows, {"load_average": os.getloadavg()})


if __name__ == "__main__":
    main()
