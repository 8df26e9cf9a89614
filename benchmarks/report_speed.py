"""Wall time of `archbench report RUN_DIR` (it writes into a copy of RUN_DIR, never into RUN_DIR).

    python benchmarks/report_speed.py RUN_DIR [--repeat 3] [--src A/src --src B/src]

Each run is a fresh process (imports included, as a user's `archbench report` pays them). With
--src, each source tree is put first on PYTHONPATH and the trees' runs are interleaved, so a
before/after pair on a shared machine sees the same load; without it, the installed archbench runs.
Prints each run's wall and CPU (user + system) seconds and their medians per source tree: on a
shared machine the CPU time moves less with the load than the wall time does.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run_dir", type=Path)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--src", action="append", default=[], help="a source tree (its src/ folder) to time")
    args = p.parse_args()
    srcs = args.src or [""]
    times: dict[str, list[float]] = {s: [] for s in srcs}
    cpu: dict[str, list[float]] = {s: [] for s in srcs}
    with tempfile.TemporaryDirectory(prefix="report_speed_") as tmp:
        for i in range(args.repeat):
            for s in srcs:
                run = Path(tmp) / f"run{i}_{srcs.index(s)}"
                shutil.copytree(args.run_dir, run)
                env = dict(os.environ)
                if s:
                    env["PYTHONPATH"] = os.pathsep.join([str(Path(s).resolve()), env.get("PYTHONPATH", "")])
                before = resource.getrusage(resource.RUSAGE_CHILDREN)
                start = time.perf_counter()
                subprocess.run([sys.executable, "-m", "archbench", "report", str(run)], env=env, check=True,
                               stdout=subprocess.DEVNULL)
                times[s].append(time.perf_counter() - start)
                after = resource.getrusage(resource.RUSAGE_CHILDREN)
                cpu[s].append(after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime)
                print(f"{s or 'installed'}: {times[s][-1]:.2f} s wall, {cpu[s][-1]:.2f} s CPU", flush=True)
    for s, ts in times.items():
        print(f"{s or 'installed'}: median {statistics.median(ts):.2f} s wall ({', '.join(f'{t:.2f}' for t in ts)}), "
              f"{statistics.median(cpu[s]):.2f} s CPU ({', '.join(f'{t:.2f}' for t in cpu[s])})")


if __name__ == "__main__":
    main()
