"""Dask batch runs and full-size evaluation memory.

1. ``speed``: :func:`nclsm_utils.runner.run_methods` for mitocyto (or ``--methods``) on
   the default synthetic NCL-SM, in this process (serial) and on a local Dask cluster of
   ``--workers`` processes, each run in a fresh interpreter with a fresh workdir (so every
   section is predicted and evaluated, and each run pays its own imports, first calls
   and, for Dask, the cluster start). Prints the seconds of the ``run_methods`` call and of
   the whole process, the median of ``--repeat`` alternating runs, and checks that both
   leave byte-identical tables. ``--split all`` runs every section (14) instead of the test
   split (4): mitocyto takes well under a second per section, so a short batch is dominated
   by the fixed costs. ``--warm`` also times a second, forced run inside each process
   (cluster and compiled code warm: the steady state of a long batch).
2. ``memory``: peak resident memory (``resource.getrusage`` max RSS of a fresh subprocess)
   while a full-size IF section is evaluated: the real NCL-SM S11 ground truth (12,272 x
   15,129 = 185.7 megapixels, 489 fibres) against a perturbed uint32 copy (shifted, 5 % of
   fibres dropped, labels offset by 70,000) with a synthetic RGB image. Two measurements:
   ``metrics.evaluate`` on the three arrays read from TIFF, and a whole batch task
   (``run_methods`` with the perturbed mask as ``external:`` masks: read, evaluate, instance
   metrics, write). Target < 4 GB.
3. ``idle``: CPU taken by an idle local cluster (the one ``nclsm run --workers N`` keeps
   for a whole batch, idle while a network trains) over ``--idle-seconds``, with Dask's
   default settings and with ours (``nclsm_utils.runner.cluster.LOCAL_CLUSTER_CONFIG``).

Usage::

    python benchmarks/bench_dask.py [speed|memory|idle|all] [--idle-seconds 60] [--data data/synthetic]
        [--methods mitocyto] [--split test|all] [--workers 2] [--repeat 1] [--warm]
        [--sample ../shared/ncl-sm-sample/S11_groundtruth_mask.tiff] [--json PATH]

No assertions; the numbers are printed (and with ``--json PATH`` written).
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
SAMPLE = ROOT.parent / "shared" / "ncl-sm-sample" / "S11_groundtruth_mask.tiff"


def _env() -> dict:
    path = os.environ.get("PYTHONPATH", "")
    return {**os.environ, "PYTHONPATH": str(ROOT) + (os.pathsep + path if path else "")}


def _child(args: list[str], timeout: float = 3600) -> tuple[dict, float]:
    start = time.perf_counter()
    done = subprocess.run([sys.executable, __file__, *args], env=_env(), capture_output=True,
                          text=True, timeout=timeout)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(args[:2])} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1]), wall


def _max_rss_gb() -> float:
    """Peak resident memory of this process so far, GB (``ru_maxrss``, KiB on Linux).

    ``ru_maxrss`` survives ``exec``: a child started from a big process starts at its parent's
    size, so the children measured here are started from a small parent (the full-size
    arrays are built in a child of their own)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 ** 2


# ---------------------------------------------------------------------------- 1. speed
def child_run(argv) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data")
    parser.add_argument("--workdir")
    parser.add_argument("--methods", nargs="+")
    parser.add_argument("--sections", nargs="*", default=None)
    parser.add_argument("--workers", type=int)
    parser.add_argument("--warm", action="store_true")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    import logging

    from nclsm_utils.runner import run_methods

    logging.basicConfig(level=logging.WARNING)
    imports = time.perf_counter() - start
    kwargs = dict(sections=args.sections or None, workdir=args.workdir, progress=False)
    out = {"imports": imports}
    if args.warm and args.workers > 1:
        from distributed import Client, LocalCluster

        with LocalCluster(n_workers=args.workers, threads_per_worker=1, processes=True,
                          dashboard_address=":0", silence_logs=logging.ERROR) as cluster, \
                Client(cluster) as client:
            start = time.perf_counter()
            run_methods(args.methods, args.data, scheduler=client, **kwargs)
            out["cold_on_running_cluster"] = time.perf_counter() - start
            start = time.perf_counter()
            runs = run_methods(args.methods, args.data, scheduler=client, force=True, **kwargs)
            out["warm"] = time.perf_counter() - start
    else:
        start = time.perf_counter()
        runs = run_methods(args.methods, args.data, workers=args.workers, **kwargs)
        out["run"] = time.perf_counter() - start
        if args.warm:
            start = time.perf_counter()
            runs = run_methods(args.methods, args.data, workers=args.workers, force=True,
                               **kwargs)
            out["warm"] = time.perf_counter() - start
    out["sections"] = {m: len(r.tables) for m, r in runs.items()}
    out["errors"] = {m: r.errors for m, r in runs.items() if r.errors}
    print(json.dumps(out))


def _results(workdir: Path) -> dict[str, bytes]:
    root = workdir / "results"
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*.csv"))}


def build_mosaic(data: Path, k: int, out: Path) -> Path:
    """A copy of ``data`` (image and myofibre roles) whose sections are ``k x k`` mosaics of
    themselves (labels offset per tile): the same tissue, ``k**2`` times the pixels and fibres,
    closer to the real NCL-SM sizes (IMC ~1 MP, IF up to 185 MP) than the small default."""
    from nclsm_utils.dataset import Dataset
    from nclsm_utils.core.io import write_tiff
    from nclsm_utils.synth import SYNTH_FOLDERS

    dataset = Dataset(data)
    for section in dataset.sections():
        gt = section.mask("myofibres").astype(np.uint32)
        n = int(gt.max())
        tiles = [[np.where(gt > 0, gt + (i * k + j) * n, 0) for j in range(k)] for i in range(k)]
        write_tiff(out / section.modality / SYNTH_FOLDERS["myofibres"] / f"{section.id}.tiff",
                   np.block(tiles).astype(np.uint32))
        write_tiff(out / section.modality / SYNTH_FOLDERS["image"] / f"{section.id}.tiff",
                   np.tile(section.image(), (k, k, 1)))
    for name in ("nclsm_splits.yaml", "nclsm_roles.yaml"):
        if (Path(data) / name).is_file():
            (out / name).write_text((Path(data) / name).read_text())
    return out


def bench_speed(data: Path, methods, split: str, workers: int, repeat: int, warm: bool,
                mosaic: int = 1) -> dict:
    from nclsm_utils.dataset import Dataset
    from nclsm_utils.report.pipeline import resolve_data

    data = resolve_data(data.parent) if data.name == "synthetic" and not data.is_dir() else data
    if mosaic > 1:
        holder = tempfile.TemporaryDirectory(prefix="bench-dask-mosaic-")
        data = build_mosaic(data, mosaic, Path(holder.name) / f"mosaic{mosaic}")
        print(f"speed: sections tiled {mosaic} x {mosaic} into {data}")
    dataset = Dataset(data)
    sections = [s.id for s in (dataset.sections() if split == "all"
                               else dataset.sections(split=split))]
    megapixels = sum(int(np.prod(dataset.section(s).shape())) for s in sections) / 1e6
    print(f"speed: {', '.join(methods)} on {len(sections)} sections ({megapixels:.1f} MP) of "
          f"{data}; {os.cpu_count()} CPU cores; load average "
          f"{', '.join(f'{x:.1f}' for x in os.getloadavg())}")
    times: dict[str, list] = {"serial": [], f"dask-{workers}": []}
    identical = []
    with tempfile.TemporaryDirectory(prefix="bench-dask-") as tmp:
        for i in range(repeat):
            folders = {}
            for mode, n in (("serial", 1), (f"dask-{workers}", workers)):
                workdir = Path(tmp) / f"{mode}-{i}"
                args = ["_run", "--data", str(data), "--workdir", str(workdir), "--methods",
                        *methods, "--workers", str(n), "--sections", *sections]
                out, wall = _child(args)
                if out["errors"]:
                    print(f"  {mode}: section errors {out['errors']}")
                times[mode].append({"run": out["run"], "process": wall,
                                    "imports": out["imports"]})
                folders[mode] = workdir
                print(f"  run {i + 1} {mode:8s}: run_methods {out['run']:6.1f} s, whole process "
                      f"{wall:6.1f} s (imports {out['imports']:.1f} s)", flush=True)
            same = _results(folders["serial"]) == _results(folders[f"dask-{workers}"])
            identical.append(same)
        warm_times = {}
        if warm:
            for mode, n in (("serial", 1), (f"dask-{workers}", workers)):
                workdir = Path(tmp) / f"{mode}-warm"
                out, _ = _child(["_run", "--data", str(data), "--workdir", str(workdir),
                                 "--methods", *methods, "--workers", str(n), "--warm",
                                 "--sections", *sections])
                warm_times[mode] = out["warm"]
                print(f"  warm {mode:8s}: forced rerun {out['warm']:6.1f} s", flush=True)
    summary = {mode: {k: statistics.median(r[k] for r in runs) for k in ("run", "process")}
               for mode, runs in times.items()}
    serial, dask = summary["serial"], summary[f"dask-{workers}"]
    print(f"median of {repeat}: serial {serial['run']:.1f} s, dask-{workers} {dask['run']:.1f} s "
          f"(speed-up x{serial['run'] / dask['run']:.2f}); whole process {serial['process']:.1f} s"
          f" vs {dask['process']:.1f} s; tables byte-identical: {all(identical)}")
    if warm_times:
        print(f"warm (forced rerun in a running process/cluster): serial "
              f"{warm_times['serial']:.1f} s, dask-{workers} {warm_times[f'dask-{workers}']:.1f} s "
              f"(x{warm_times['serial'] / warm_times[f'dask-{workers}']:.2f})")
    if mosaic > 1:
        holder.cleanup()
    return {"methods": list(methods), "sections": sections, "megapixels": megapixels,
            "mosaic": mosaic,
            "runs": times, "median": summary, "identical": all(identical), "warm": warm_times,
            "cores": os.cpu_count(), "load": os.getloadavg()}


# ---------------------------------------------------------------------------- 2. memory
def build_full_size(sample: Path, root: Path) -> tuple[Path, Path]:
    """An IF dataset of one full-size section (S11: the real mask, a synthetic RGB image) and
    a folder of perturbed predicted masks. Built in row chunks (bounded memory)."""
    import shutil

    import tifffile

    from nclsm_utils.core.io import write_text, write_tiff

    gt = tifffile.imread(sample)
    height, width = gt.shape
    rng = np.random.default_rng(0)
    labels = np.unique(gt)
    lookup = np.zeros(int(labels.max()) + 1, np.uint32)
    keep = labels[(labels > 0) & (rng.random(len(labels)) > 0.05)]
    lookup[keep] = keep.astype(np.uint32) + 70_000
    pred = np.zeros((height, width), np.uint32)
    dr, dc = 4, -3                                       # shift (rows, columns)
    pred[dr:, :width + dc] = lookup[gt[:height - dr, -dc:]]
    image = np.zeros((height, width, 3), np.uint8)
    for r0 in range(0, height, 1024):
        r1 = min(height, r0 + 1024)
        block = gt[max(0, r0 - 1):min(height, r1 + 1)].astype(np.int32)
        edge = np.zeros(block.shape, bool)
        edge[:, 1:] |= block[:, 1:] != block[:, :-1]
        edge[1:, :] |= block[1:, :] != block[:-1, :]
        edge = edge[(r0 > 0):(r0 > 0) + (r1 - r0)]
        inside = gt[r0:r1] > 0
        noise = rng.integers(0, 40, size=(r1 - r0, width, 2), dtype=np.uint8)
        image[r0:r1, :, 0] = np.where(edge, 220, 30) + noise[..., 0]
        image[r0:r1, :, 1] = np.where(inside, 120, 20) + noise[..., 1]
    data = root / "data"
    (data / "IF" / "Mask_All_Myofibres").mkdir(parents=True)
    shutil.copy(sample, data / "IF" / "Mask_All_Myofibres" / "S11.tiff")
    write_tiff(data / "IF" / "Images" / "S11.tiff", image)
    write_text(data / "nclsm_splits.yaml", "test: [S11]\nvalidation: []\n")
    masks = root / "perturbed"
    write_tiff(masks / "IF_S11.tiff", pred)
    return data, masks


def child_memory(argv) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--what", choices=["evaluate", "task"])
    parser.add_argument("--data")
    parser.add_argument("--masks")
    parser.add_argument("--workdir")
    args = parser.parse_args(argv)
    from nclsm_utils import metrics
    from nclsm_utils.dataset import Dataset, as_labels
    from nclsm_utils.core.io import read_array

    baseline = _max_rss_gb()
    start = time.perf_counter()
    if args.what == "evaluate":
        section = Dataset(args.data).section("S11")
        gt, image = section.mask("myofibres"), section.image()
        path = Path(args.masks) / "IF_S11.tiff"
        pred = as_labels(read_array(path), path)
        loaded = _max_rss_gb()
        table = metrics.evaluate(gt, pred, image, half_width=section.half_width)
        out = {"fibres": len(table), "matched": int(table["matched"].sum()),
               "mean_iou": float(table.loc[table["matched"], "iou"].mean()),
               "inputs_loaded_gb": loaded}
    else:
        from nclsm_utils.runner import run_methods

        runs = run_methods([f"external:{args.masks}"], args.data, workdir=args.workdir,
                           progress=False)
        run = next(iter(runs.values()))
        out = {"fibres": sum(len(t) for t in run.tables.values()), "errors": run.errors,
               "instance": run.instance is not None}
    out.update(seconds=time.perf_counter() - start, baseline_gb=baseline, peak_gb=_max_rss_gb())
    print(json.dumps(out))


def bench_memory(sample: Path) -> dict:
    if not sample.is_file():
        print(f"memory: skipped, {sample} not found")
        return {}
    results = {}
    with tempfile.TemporaryDirectory(prefix="bench-dask-mem-") as tmp:
        start = time.perf_counter()
        built, _ = _child(["_build", "--sample", str(sample), "--root", tmp])
        data, masks = built["data"], built["masks"]
        print(f"parent process peak RSS {_max_rss_gb():.2f} GB (inherited by the children)")
        print(f"memory: full-size IF section (S11 ground truth 12272 x 15129 = 185.7 MP vs a "
              f"perturbed uint32 copy, synthetic RGB image) built in "
              f"{time.perf_counter() - start:.0f} s", flush=True)
        for what in ("evaluate", "task"):
            out, wall = _child(["_memory", "--what", what, "--data", str(data), "--masks",
                                str(masks), "--workdir", str(Path(tmp) / "work")])
            results[what] = out
            label = {"evaluate": "metrics.evaluate (inputs read from TIFF)",
                     "task": "run_methods task (read, evaluate, instance metrics, write)"}[what]
            extra = (f"; inputs alone {out['inputs_loaded_gb']:.2f} GB, {out['fibres']} fibres, "
                     f"{out['matched']} matched, mean IoU {out['mean_iou']:.3f}"
                     if what == "evaluate" else f"; {out['fibres']} fibres, errors "
                     f"{out['errors'] or 'none'}")
            print(f"  {label}: peak RSS {out['peak_gb']:.2f} GB (interpreter + imports "
                  f"{out['baseline_gb']:.2f} GB) in {out['seconds']:.0f} s{extra}; target < 4 GB",
                  flush=True)
    return results


def child_idle(argv) -> None:
    """CPU of an idle local cluster (this process, the nannies and workers) over ``seconds``."""
    import dask
    import psutil

    from nclsm_utils.runner import cluster

    parser = argparse.ArgumentParser()
    parser.add_argument("--workers", type=int)
    parser.add_argument("--seconds", type=float)
    parser.add_argument("--config", choices=["dask-default", "nclsm"])
    args = parser.parse_args(argv)
    if args.config == "dask-default":
        cluster.LOCAL_CLUSTER_CONFIG = {}
    with cluster.dask_client(None, args.workers):
        time.sleep(5)  # let the workers finish starting
        me = psutil.Process()
        processes = [me, *me.children(recursive=True)]

        def cpu() -> float:
            return sum(sum(p.cpu_times()[:4]) for p in processes)

        before = cpu()
        time.sleep(args.seconds)
        used = cpu() - before
    print(json.dumps({"core_percent": 100 * used / args.seconds, "processes": len(processes)}))


def bench_idle(workers: int, seconds: float) -> dict:
    """Idle CPU of the local cluster with Dask's default settings and with
    :data:`nclsm_utils.runner.cluster.LOCAL_CLUSTER_CONFIG`."""
    results = {}
    print(f"idle local cluster of {workers} workers, {seconds:.0f} s:", flush=True)
    for config in ("dask-default", "nclsm"):
        out, _ = _child(["_idle", "--workers", str(workers), "--seconds", str(seconds),
                         "--config", config])
        results[config] = out
        print(f"  {config:12s}: {out['core_percent']:5.1f} % of a core "
              f"({out['processes']} processes)", flush=True)
    return results


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["_run"]:
        child_run(argv[1:])
        return 0
    if argv[:1] == ["_build"]:
        parser = argparse.ArgumentParser()
        parser.add_argument("--sample", type=Path)
        parser.add_argument("--root", type=Path)
        args = parser.parse_args(argv[1:])
        data, masks = build_full_size(args.sample, args.root)
        print(json.dumps({"data": str(data), "masks": str(masks)}))
        return 0
    if argv[:1] == ["_memory"]:
        child_memory(argv[1:])
        return 0
    if argv[:1] == ["_idle"]:
        child_idle(argv[1:])
        return 0
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("what", nargs="?", default="all", choices=["speed", "memory", "idle", "all"])
    parser.add_argument("--data", type=Path, default=ROOT / "data" / "synthetic")
    parser.add_argument("--methods", nargs="+", default=["mitocyto"])
    parser.add_argument("--split", default="test", choices=["test", "validation", "train", "all"])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--warm", action="store_true")
    parser.add_argument("--mosaic", type=int, default=1,
                        help="tile every section K x K (K**2 times the pixels; default 1)")
    parser.add_argument("--sample", type=Path, default=SAMPLE)
    parser.add_argument("--idle-seconds", type=float, default=60.0)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    report = {}
    if args.what in ("speed", "all"):
        report["speed"] = bench_speed(args.data, args.methods, args.split, args.workers,
                                      args.repeat, args.warm, args.mosaic)
    if args.what in ("memory", "all"):
        report["memory"] = bench_memory(args.sample)
    if args.what in ("idle", "all"):
        report["idle"] = bench_idle(args.workers, args.idle_seconds)
    if args.json:
        args.json.write_text(json.dumps(report, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
