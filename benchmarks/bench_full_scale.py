"""The whole report on a dataset of NCL-SM's size: time, peak memory and disk per stage.

Writes an NCL-SM-shaped synthetic dataset (:func:`nclsm_utils.synth.fullsize.write_ncl_sm_shaped`:
27 IMC + 19 IF sections, IF sections at real sizes, 100-185 Mpx, fibres 280-370 px
across, images as PNG, every mask role as TIFF) under ``--out``, then runs the report on
it one stage at a time, each in its own process, so that every stage is measured alone:

``data``
    writing the dataset (``--data-workers`` processes);
``train <method>``
    fitting the method on the train split (the cached model the later stages reuse);
``predict <method>``
    predicting the test split (cached predictions, as the report caches them);
``metrics <method>``
    ``nclsm segment``: per-fibre paper metrics and instance metrics of the cached
    predictions against the ground truth;
``notebook <name>``
    ``nclsm run``: every notebook of the report (Table I, Table II, the per-method pages
    that read the cached results, the comparison, curation, explorer, ...), each measured
    while it runs;
``site``
    ``nclsm site`` (Quarto, or nbconvert where Quarto is missing).

With ``--dask``, mitocyto's predict-and-score step again on a local cluster of two
processes (``--workers 2``, a fresh work folder), then the kill-and-resume check below.

For each stage: wall seconds, the peak resident memory of the stage's process tree (the
sum of the RSS of the process and all its children, sampled every 0.2 s) and the disk
under ``--out`` after it. ``--dask`` adds the kill-and-resume check: mitocyto on the test
split on a Dask cluster the benchmark starts itself (``dask scheduler`` and two
``dask worker`` processes on 127.0.0.1); one worker is killed (SIGKILL) while a
full-size section runs, and the run is repeated to show that only the unfinished
sections run again.

Usage::

    python benchmarks/bench_full_scale.py [--out /work/full-scale] [--sections 46]
        [--scale 1.0] [--budget report] [--methods mitocyto cellpose stardist unet
        stardist+refine] [--data-workers 2] [--notebooks-only] [--dask] [--json PATH]

A second run with the same ``--out`` reuses the data (and, as the report does, cached
models, predictions and results); ``--notebooks-only`` times only the notebooks and the site.

``--sections N`` and ``--scale F`` make smaller versions (``--sections 12 --scale 0.1`` runs
in minutes). The whole dataset at full size needs about 6 GB of disk. Prints a table;
asserts nothing.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

METHODS = ["mitocyto", "cellpose", "stardist", "unet", "stardist+refine"]

TRAIN = """
import sys
from nclsm_utils.core.dataset import Dataset
from nclsm_utils.segmenters import get_segmenter
root, workdir, budget, method, mode = sys.argv[1:6]
dataset = Dataset(root)
segmenter = get_segmenter(method, workdir=workdir, budget=budget)
extra = ({"validation": dataset.sections(split="validation")}
         if getattr(segmenter, "uses_validation", False) else {})
segmenter.fit(dataset.sections(split="train"), **extra)
if mode == "predict":
    for section in dataset.sections(split="test"):
        segmenter.predict_section(section)
"""


# ---------------------------------------------------------------------------- measuring
def tree_rss(process: psutil.Process) -> int:
    """Summed RSS (bytes) of a process and all its descendants (0 once it has gone)."""
    total = 0
    try:
        procs = [process, *process.children(recursive=True)]
    except psutil.Error:
        return 0
    for proc in procs:
        try:
            total += proc.memory_info().rss
        except psutil.Error:
            pass
    return total


def disk_bytes(folder: Path) -> int:
    """Bytes allocated under ``folder`` (files' blocks, as ``du``)."""
    total = 0
    for base, _, files in os.walk(folder):
        for name in files:
            try:
                total += os.lstat(os.path.join(base, name)).st_blocks * 512
            except OSError:
                pass
    return total


class Stage:
    """Run one command, sampling its process tree's RSS; ``phase`` (a callable returning a
    label or None) splits the samples of one command into sub-stages (notebooks)."""

    def __init__(self, name: str, command: list[str], phase=None, log: Path | None = None):
        self.name, self.command, self.phase = name, command, phase
        self.log = log
        self.peak = 0
        self.phases: dict[str, dict] = {}

    def run(self) -> float:
        env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get(
            "PYTHONPATH", "")}
        handle = open(self.log, "a") if self.log else subprocess.DEVNULL
        start = time.perf_counter()
        process = psutil.Popen(self.command, cwd=ROOT, env=env, stdout=handle,
                               stderr=subprocess.STDOUT)
        while process.poll() is None:
            rss = tree_rss(process)
            self.peak = max(self.peak, rss)
            if self.phase is not None:
                label = self.phase() or "other"
                now = time.perf_counter()
                entry = self.phases.setdefault(label, {"first": now, "last": now, "peak": 0})
                entry["last"], entry["peak"] = now, max(entry["peak"], rss)
            time.sleep(0.2)
        seconds = time.perf_counter() - start
        if handle is not subprocess.DEVNULL:
            handle.close()
        if process.returncode != 0:
            raise RuntimeError(f"stage {self.name} failed (exit {process.returncode}): "
                               f"{' '.join(self.command)}; see {self.log}")
        return seconds


class RunningNotebook:
    """The notebook a serial ``nclsm run`` is executing: the log in ``reports/logs`` that
    has started and not finished (papermill writes ``# finished in`` at its end)."""

    def __init__(self, reports: Path):
        self.logs = reports / "logs"
        self.finished: set[str] = set()

    def __call__(self):
        if not self.logs.is_dir():
            return None
        running = None
        for path in sorted(self.logs.glob("*.log"), key=lambda p: p.stat().st_mtime):
            if path.name in self.finished:
                continue
            with open(path, "rb") as handle:
                handle.seek(max(0, path.stat().st_size - 300))
                tail = handle.read().decode(errors="replace")
            if "# finished in" in tail or "# FAILED" in tail:
                self.finished.add(path.name)
            else:
                running = path.stem
        return running


# ---------------------------------------------------------------------------- the stages
def python(*args) -> list[str]:
    return [sys.executable, *args]


def nclsm(*args) -> list[str]:
    return python("-m", "nclsm_utils.cli", *args)


def record(rows: list, name: str, seconds: float, peak: int, out: Path) -> None:
    row = {"stage": name, "seconds": round(seconds, 1), "peak_rss_gb": round(peak / 2**30, 2),
           "disk_gb": round(disk_bytes(out) / 2**30, 2)}
    rows.append(row)
    print(f"{name:34s} {row['seconds']:9.1f} s {row['peak_rss_gb']:7.2f} GB "
          f"{row['disk_gb']:7.2f} GB on disk", flush=True)


def data_stage(args, out: Path, rows: list) -> None:
    """Write the NCL-SM-shaped dataset (kept when it is there already)."""
    stage = Stage("data", python("-c", (
        "import sys; from nclsm_utils.synth.fullsize import write_ncl_sm_shaped; "
        "write_ncl_sm_shaped(sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), "
        "workers=int(sys.argv[4]), progress=False)"), str(out / "data" / "NCL-SM"),
        str(args.sections), str(args.scale), str(args.data_workers)), log=out / "bench.log")
    record(rows, "data", stage.run(), stage.peak, out)


def run_stages(args, out: Path) -> list[dict]:
    root = out / "data" / "NCL-SM"
    workdir = out / "data"
    reports = out / "reports"
    log = out / "bench.log"
    rows: list[dict] = []

    data_stage(args, out, rows)
    for method in [] if args.notebooks_only else args.methods:
        for mode in ("train", "predict"):
            stage = Stage(f"{mode} {method}", python("-c", TRAIN, str(root), str(workdir),
                                                     args.budget, method, mode), log=log)
            record(rows, stage.name, stage.run(), stage.peak, out)
        stage = Stage(f"metrics {method}", nclsm("segment", "--method", method, "--data",
                                                 str(root), "--workdir", str(workdir),
                                                 "--budget", args.budget), log=log)
        record(rows, stage.name, stage.run(), stage.peak, out)
    notebooks = Stage("notebooks", nclsm("run", "--data", str(root), "--workdir", str(workdir),
                                         "--reports", str(reports), "--budget", args.budget,
                                         "--no-progress", "--methods", *args.methods),
                      phase=RunningNotebook(reports), log=log)
    seconds = notebooks.run()
    for label, entry in notebooks.phases.items():
        rows.append({"stage": f"notebook {label}",
                     "seconds": round(entry["last"] - entry["first"], 1),
                     "peak_rss_gb": round(entry["peak"] / 2**30, 2), "disk_gb": None})
        print(f"notebook {label:25s} {rows[-1]['seconds']:9.1f} s "
              f"{rows[-1]['peak_rss_gb']:7.2f} GB", flush=True)
    record(rows, "notebooks (all)", seconds, notebooks.peak, out)
    site = Stage("site", nclsm("site", "--reports", str(reports), "--out", str(out / "_site")),
                 log=log)
    record(rows, "site", site.run(), site.peak, out)
    return rows


# ---------------------------------------------------------------------------- Dask: kill, resume
RUN_SEGMENT = """
import json, sys
from nclsm_utils.runner import run_methods
root, workdir, scheduler, method = sys.argv[1:5]
result = run_methods([method], root, workdir=workdir, scheduler=scheduler, progress=False)[method]
print(json.dumps({"ran": sorted(result.ran), "reused": sorted(result.reused),
                  "errors": {k: v[:200] for k, v in result.errors.items()}}))
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def dask_check(args, out: Path) -> dict:
    """Kill one of two self-started workers during a full-size section; rerun; report."""
    root, workdir = out / "data" / "NCL-SM", out / "dask-work"
    port = free_port()
    address = f"tcp://127.0.0.1:{port}"
    dask = str(Path(sys.executable).with_name("dask"))
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    log = open(out / "dask.log", "a")
    scheduler = subprocess.Popen([dask, "scheduler", "--host", "127.0.0.1", "--port",
                                  str(port), "--no-dashboard"], env=env, stdout=log,
                                 stderr=subprocess.STDOUT)
    time.sleep(3)
    workers = [subprocess.Popen([dask, "worker", address, "--nthreads", "1", "--nworkers", "1",
                                 "--no-dashboard", "--memory-limit", "0"], cwd=ROOT, env=env,
                                stdout=log, stderr=subprocess.STDOUT) for _ in range(2)]
    time.sleep(5)
    outcome: dict = {"scheduler": address, "method": args.dask_method}
    try:
        killed: dict = {}

        def killer(process: psutil.Process) -> None:
            # kill the first worker once it holds a full-size section's arrays (> 1.5 GB),
            # i.e. while it runs an IF section
            victim = psutil.Process(workers[0].pid)
            while process.poll() is None and not killed:
                if tree_rss(victim) > args.kill_above_gb * 2**30:
                    killed["rss_gb"] = round(tree_rss(victim) / 2**30, 2)
                    killed["at_s"] = round(time.perf_counter() - start, 1)
                    for proc in [victim, *victim.children(recursive=True)]:
                        proc.send_signal(signal.SIGKILL)
                    return
                time.sleep(0.2)

        runs = []
        for attempt in (1, 2):
            start = time.perf_counter()
            process = psutil.Popen(python("-c", RUN_SEGMENT, str(root), str(workdir), address,
                                          args.dask_method), cwd=ROOT, env=env,
                                   stdout=subprocess.PIPE, stderr=log, text=True)
            watcher = None
            if attempt == 1:
                watcher = threading.Thread(target=killer, args=(process,), daemon=True)
                watcher.start()
            stdout, _ = process.communicate()
            if watcher is not None:
                watcher.join(timeout=1)
            result = json.loads(stdout.strip().splitlines()[-1]) if stdout.strip() else {
                "error": f"exit {process.returncode}"}
            result["seconds"] = round(time.perf_counter() - start, 1)
            runs.append(result)
            print(f"dask run {attempt}: {json.dumps(result)}", flush=True)
        outcome.update(killed=killed, runs=runs)
    finally:
        for process in [*workers, scheduler]:
            if process.poll() is None:
                process.terminate()
        for process in [*workers, scheduler]:
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
        log.close()
    return outcome


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="/tmp/nclsm-full-scale")
    parser.add_argument("--sections", type=int, default=46)
    parser.add_argument("--scale", type=float, default=1.0)
    parser.add_argument("--budget", default="report", choices=("quick", "report", "full"))
    parser.add_argument("--methods", nargs="+", default=METHODS)
    parser.add_argument("--data-workers", type=int, default=2)
    parser.add_argument("--skip-report", action="store_true",
                        help="only the data (and --dask): no training, prediction or notebooks")
    parser.add_argument("--notebooks-only", action="store_true",
                        help="only the notebooks and the site, on the models, predictions and "
                             "results an earlier run left under --out")
    parser.add_argument("--dask", action="store_true", help="the kill-and-resume check")
    parser.add_argument("--dask-method", default="mitocyto")
    parser.add_argument("--kill-above-gb", type=float, default=1.5,
                        help="kill the worker once its RSS passes this (it holds a big section)")
    parser.add_argument("--json", default=None, help="also write the results here")
    args = parser.parse_args(argv)

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    print(f"NCL-SM-shaped data: {args.sections} sections at scale {args.scale:g}, budget "
          f"{args.budget}, in {out}", flush=True)
    start = time.perf_counter()
    results: dict = {"sections": args.sections, "scale": args.scale, "budget": args.budget,
                     "cores": psutil.cpu_count(), "memory_gb": round(
                         psutil.virtual_memory().total / 2**30, 1)}
    if args.skip_report:
        rows: list[dict] = []
        data_stage(args, out, rows)
    else:
        rows = run_stages(args, out)
    results["stages"] = rows
    manifest = out / "data" / "NCL-SM" / "synth_manifest.json"
    if manifest.is_file():
        sections = json.loads(manifest.read_text())["sections"]
        results["myofibres"] = {m: sum(s["myofibres"] for s in sections if s["modality"] == m)
                                for m in ("IMC", "IF")}
        results["if_megapixels_max"] = round(max(
            (s["shape"][0] * s["shape"][1] / 1e6 for s in sections if s["modality"] == "IF"),
            default=0), 1)
    if args.dask:
        # the same segment step on a local two-process cluster (`--workers 2`), fresh workdir
        stage = Stage("metrics mitocyto, --workers 2", nclsm(
            "segment", "--method", args.dask_method, "--data", str(out / "data" / "NCL-SM"),
            "--workdir", str(out / "dask-local"), "--budget", args.budget, "--workers", "2"),
            log=out / "bench.log")
        record(rows, f"predict + metrics {args.dask_method}, --workers 2", stage.run(),
               stage.peak, out)
        results["dask"] = dask_check(args, out)
    results["total_seconds"] = round(time.perf_counter() - start, 1)
    staged = [r for r in rows if r["stage"] != "notebooks (all)"
              and not r["stage"].startswith("notebook ")]
    train = sum(r["seconds"] for r in staged if r["stage"].startswith("train "))
    whole = sum(r["seconds"] for r in staged) + sum(
        r["seconds"] for r in rows if r["stage"] == "notebooks (all)")
    results["report_seconds"] = {"with_training": round(whole, 1),
                                 "without_training": round(whole - train, 1)}

    print("\n| stage | seconds | peak RSS (GB) | disk after (GB) |\n| --- | ---: | ---: | ---: |")
    for row in rows:
        disk = "" if row["disk_gb"] is None else f"{row['disk_gb']:.2f}"
        print(f"| {row['stage']} | {row['seconds']:.1f} | {row['peak_rss_gb']:.2f} | {disk} |")
    print(f"\nstages summed: {whole:.0f} s with training, {whole - train:.0f} s without; "
          f"largest peak {max((r['peak_rss_gb'] for r in rows), default=0):.2f} GB")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
