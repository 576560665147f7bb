"""The default report, serial against a two-worker Dask run (``nclsm run --workers N``).

Each run is ``nclsm run`` in a fresh interpreter with its own folders under ``--out``:

* ``cold`` (default): nothing exists yet; the run writes the synthetic default data, trains
  the three networks and executes every notebook: what ``make report`` does on a fresh clone
  (less the site rendering, the same for both).
* ``warm``: the same folders again with ``--force``: every notebook reruns, the data, the
  trained models and the per-section results are reused (a batch rerun after editing a
  notebook).

Prints the wall seconds of each run and of each notebook, and whether the two runs wrote
byte-identical tables (``reports/*.csv``). Runs alternate (serial first), ``--repeat`` times.
No assertions.

Usage::

    python benchmarks/bench_report.py [--mode cold|warm|both] [--workers 2] [--repeat 1]
        [--methods mitocyto cellpose stardist unet] [--out /tmp/nclsm-bench-report] [--quick]

A cold pair takes about 20 minutes on 2 cores.
"""
from __future__ import annotations

import argparse
import filecmp
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def nclsm_run(folder: Path, workers: int, methods, force: bool, quick: bool) -> float:
    """One ``nclsm run`` with data, workdir and reports in ``folder``; wall seconds."""
    command = [sys.executable, "-m", "nclsm_utils.cli", "run", "--data", str(folder / "data"),
               "--reports", str(folder / "reports"), "--workers", str(workers),
               "--no-progress", "--methods", *methods]
    if force:
        command.append("--force")
    if quick:
        command.append("--quick")
    start = time.perf_counter()
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{done.stderr[-3000:]}")
    return seconds


def notebook_seconds(folder: Path) -> dict:
    manifest = json.loads((folder / "reports" / "run_manifest.json").read_text())
    return {name: record.get("seconds") for name, record in manifest["jobs"].items()}


def same_tables(a: Path, b: Path) -> tuple[bool, list[str]]:
    names = sorted(p.name for p in (a / "reports").glob("*.csv"))
    differ = [n for n in names if not filecmp.cmp(a / "reports" / n, b / "reports" / n,
                                                  shallow=False)]
    return not differ and bool(names), differ


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mode", choices=("cold", "warm", "both"), default="cold")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--methods", nargs="+",
                        default=["mitocyto", "cellpose", "stardist", "unet", "stardist+refine"])
    parser.add_argument("--out", default="/tmp/nclsm-bench-report")
    parser.add_argument("--quick", action="store_true", help="short training (smoke run)")
    args = parser.parse_args(argv)

    out = Path(args.out)
    runs = {"serial": out / "serial", f"dask-{args.workers}": out / f"dask{args.workers}"}
    rows = []
    for repeat in range(args.repeat):
        for mode in (("cold", "warm") if args.mode == "both" else (args.mode,)):
            for label, folder in runs.items():
                workers = 1 if label == "serial" else args.workers
                if mode == "cold":
                    shutil.rmtree(folder, ignore_errors=True)
                    folder.mkdir(parents=True)
                elif not (folder / "reports" / "run_manifest.json").is_file():
                    nclsm_run(folder, workers, args.methods, False, args.quick)  # set up
                seconds = nclsm_run(folder, workers, args.methods, mode == "warm", args.quick)
                rows.append((repeat, mode, label, seconds, notebook_seconds(folder)))
                print(f"run {repeat} {mode:5s} {label:8s} {seconds:8.1f} s", flush=True)
            same, differ = same_tables(*runs.values())
            print(f"run {repeat} {mode}: tables {'byte-identical' if same else 'DIFFER: ' + ', '.join(differ)}",
                  flush=True)

    print(f"\n{'mode':6s}{'run':10s}{'seconds':>10s}  per notebook (s)")
    for repeat, mode, label, seconds, per in rows:
        detail = ", ".join(f"{k.replace('03_segment_', '03_')} {v:.0f}" for k, v in per.items())
        print(f"{mode:6s}{label:10s}{seconds:10.1f}  {detail}")


if __name__ == "__main__":
    main()
