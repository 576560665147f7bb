"""Response times of the explorer (``nclsm_utils.explore.Explorer``) when switching section or method.

Targets: switching section or method responds in under 1 s on a 1024 x 1024
synthetic section and under 3 s on a full-size IF section (downsampled views cached);
opening a full-size section in a new process shows its overview within 5 s when its
whole-section views are in the on-disk overview cache (``<workdir>/overviews/``).

Two datasets are built in a temporary folder, each with two sections and two "methods"
whose cached predictions are perturbed copies of the ground truth (shifted, some fibres
dropped) with their per-fibre tables (``metrics.evaluate``), laid out as the pipeline
caches them:

* ``synthetic-1024``: two 1024 x 1024 synthetic sections (IMC and IF);
* ``full-size IF``: two ~12k x 15k IF sections made from the real ground-truth mask
  ``../shared/ncl-sm-sample/S11_groundtruth_mask.tiff`` (the second one mirrored) with an
  image rendered by ``synth.render_image`` on a 1/8 copy and enlarged (a cheap RGB), stored
  as PNG like NCL-SM's IF images. When the sample is missing, a synthetic 10k x 15k
  tessellation is used.

Every action is timed as a user triggers it (setting a control's value; the app refreshes
synchronously): ``total`` is the whole callback, ``panels`` the main views and counts
(what the user sees change first; the fibre panel follows), ``fibre`` the selected fibre's
rings panel, built only once a fibre is asked for in a section (choosing one, *show fibre*,
*zoom to fibre*). "cold" = the files are read for the first time (and the overviews
written); "cached" = the views were seen before in the same process.

Then a new process opening a section is imitated by a fresh ``ExploreData`` (and a fresh
``Explorer``) in the same process (the files are in the operating system's page cache, as
after a recent read): opening a section (its image, GT and one method's whole-section
views) without the overview cache, on the first open that writes it, and with the
overviews cached; the new app's first fibre panel (*show fibre*); and
``ExploreData.build_overviews`` on both sections.

Run: ``python benchmarks/bench_explore.py [--skip-full]``; prints a table, asserts nothing.
"""
from __future__ import annotations

import argparse
import gc
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from nclsm_utils import metrics  # noqa: E402
from nclsm_utils.explore import ExploreData, Explorer  # noqa: E402
from nclsm_utils.core.io import read_array, write_csv, write_text  # noqa: E402

SAMPLE_MASK = ROOT.parent / "shared" / "ncl-sm-sample" / "S11_groundtruth_mask.tiff"
METHODS = ("shifted", "coarse")


def write_tiff_fast(path: Path, array: np.ndarray) -> None:
    """zlib level 1 (the pipeline writes level 6; reading costs the same)."""
    import tifffile

    path.parent.mkdir(parents=True, exist_ok=True)
    tifffile.imwrite(path, array, compression="zlib", compressionargs={"level": 1})


def perturb(gt: np.ndarray, shift: tuple[int, int], drop: float, seed: int) -> np.ndarray:
    """A fake prediction: the GT rolled by ``shift`` with a fraction ``drop`` of fibres removed."""
    rng = np.random.default_rng(seed)
    ids = np.unique(gt)
    ids = ids[ids > 0]
    lookup = np.arange(int(gt.max()) + 1, dtype=gt.dtype)
    lookup[rng.choice(ids, int(drop * len(ids)), replace=False)] = 0
    return np.roll(lookup[gt], shift, axis=(0, 1))


def add_method(work: Path, method: str, modality: str, section_id: str, gt, image, pred,
               half_width: int) -> None:
    """Write a prediction and its per-fibre table where the pipeline caches them."""
    write_tiff_fast(work / "predictions" / method / f"{modality}_{section_id}.tiff", pred)
    write_text(work / "predictions" / method / f"{modality}_{section_id}.json",
               json.dumps({"method": method, "section": f"{modality}/{section_id}"}))
    table = metrics.evaluate(gt, pred, image, half_width=half_width)
    table.insert(0, "section", section_id)
    table.insert(0, "modality", modality)
    table.insert(0, "method", method)
    write_csv(work / "results" / method / f"{modality}_{section_id}.csv", table)


def write_png_fast(path: Path, image: np.ndarray) -> None:
    """An RGB PNG (zlib level 1) written with OpenCV (BGR order on disk as it expects)."""
    import cv2

    path.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), np.ascontiguousarray(image[..., ::-1]),
                       [cv2.IMWRITE_PNG_COMPRESSION, 1]):
        raise OSError(f"{path}: OpenCV could not write the PNG")


def add_section(root: Path, work: Path, modality: str, section_id: str, gt, image,
                png: bool = False) -> None:
    if png:
        write_png_fast(root / modality / "Images" / f"{section_id}.png", image)
    else:
        write_tiff_fast(root / modality / "Images" / f"{section_id}.tiff", image)
    write_tiff_fast(root / modality / "Mask_All_Myofibres" / f"{section_id}.tiff", gt)
    k = 2 if modality == "IMC" else 6
    for i, method in enumerate(METHODS):
        pred = perturb(gt, (2 + 4 * i, -1 - 3 * i), 0.05 + 0.1 * i, seed=i)
        add_method(work, method, modality, section_id, gt, image, pred, k)


# ---------------------------------------------------------------------------- datasets
def build_synthetic(tmp: Path) -> tuple[Path, Path, list[str]]:
    from dataclasses import replace

    from nclsm_utils.synth import SynthConfig, generate_section

    config = SynthConfig(n_imc=1, n_if=1, imc_ids=["P02"], if_ids=["S11"])
    config.imc = replace(config.imc, shape=(1024, 1024))
    config.if_ = replace(config.if_, shape=(1024, 1024))
    root, work = tmp / "synthetic-1024", tmp / "work-1024"
    for index, (modality, section_id) in enumerate(config.section_ids()):
        roles = generate_section(section_id, modality, config, seed=0, index=index)
        add_section(root, work, modality, section_id, roles["myofibres"], roles["image"])
    return root, work, ["IMC/P02", "IF/S11"]


def full_size_mask() -> np.ndarray:
    if SAMPLE_MASK.is_file():
        return read_array(SAMPLE_MASK)
    from nclsm_utils.synth import tessellate

    print("(real S11 mask not found: using a synthetic 10k x 15k tessellation)")
    small = tessellate((1250, 1875), 9.0, 0.28, np.random.default_rng(0))
    return np.repeat(np.repeat(small.astype(np.uint16), 8, 0), 8, 1)


def build_full(tmp: Path) -> tuple[Path, Path, list[str]]:
    import cv2

    from nclsm_utils.synth import render_image

    root, work = tmp / "full-IF", tmp / "work-full"
    gt = full_size_mask()
    small = gt[::8, ::8]
    _, rgb_small = render_image(small, "IF", seed=0)
    image = cv2.resize(rgb_small, (gt.shape[1], gt.shape[0]), interpolation=cv2.INTER_LINEAR)
    add_section(root, work, "IF", "S11", gt, image, png=True)
    add_section(root, work, "IF", "S12", np.ascontiguousarray(gt[:, ::-1]),
                np.ascontiguousarray(image[:, ::-1]), png=True)
    return root, work, ["IF/S11", "IF/S12"]


# ---------------------------------------------------------------------------- timing
def timed(app: Explorer, action) -> dict:
    app.timings.clear()
    start = time.perf_counter()
    action()
    total = time.perf_counter() - start
    return {"total": total, "panels": app.timings.get("refresh", float("nan")),
            "fibre": app.timings.get("fibre", float("nan"))}


def scenario(name: str, root: Path, work: Path, sections: list[str]) -> list[tuple]:
    a, b = METHODS
    s1, s2 = sections
    rows = []
    start = time.perf_counter()
    app = Explorer(data=root, workdir=work, methods=[a], section=s1)
    rows.append((name, f"open {s1} with {a} (cold)",
                 {"total": time.perf_counter() - start, "panels": app.timings.get("refresh"),
                  "fibre": app.timings.get("fibre")}))
    steps = [
        ("show fibre", app.show_fibre),
        (f"switch section -> {s2} (cold)", lambda: app.select(section=s2)),
        (f"switch method {a} -> {b} (cold)", lambda: app.select(method_a=b)),
        (f"switch method {b} -> {a} (cached)", lambda: app.select(method_a=a)),
        (f"switch section -> {s1} (cached)", lambda: app.select(section=s1)),
        (f"switch section -> {s2} (cached)", lambda: app.select(section=s2)),
        (f"side by side: B = {b} (cached)", lambda: app.select(method_b=b)),
        ("IoU threshold 0.8 -> 0.9", lambda: setattr(app.threshold, "value", 0.9)),
        ("next fibre", lambda: setattr(app.fibre, "value", app.fibre.options[1][1])),
        ("zoom x4 on the fibre (cold region)", lambda: app.focus_fibre()),
        ("pan (cold region)", lambda: setattr(app.centre_col, "value",
                                              min(1.0, app.centre_col.value + 0.05))),
        (f"switch section -> {s1}, two methods (B cold)", lambda: app.select(section=s1)),
        (f"switch section -> {s2}, two methods (cached)", lambda: app.select(section=s2)),
        (f"switch section -> {s1}, two methods (cached)", lambda: app.select(section=s1)),
    ]
    for label, action in steps:
        rows.append((name, label, timed(app, action)))
    counts = app.state["counts"]
    assert app.state["messages"] == [], app.state["messages"]  # sanity, not a timing assert
    print(f"[{name}] counts at IoU > {app.threshold.value:.2f}: {counts}", flush=True)
    release(app)
    return rows


def release(app_or_store) -> None:
    """Drop the arrays an app or store holds (ipywidgets keep old apps alive)."""
    store = getattr(app_or_store, "store", app_or_store)
    if store is not None:
        store._full.clear()
        store.views.clear()
        store.crops.clear()
    gc.collect()


def fresh_open(name: str, root: Path, work: Path, sections: list[str]) -> list[tuple]:
    """Opening a section in a new process: without, writing and with the overview cache."""
    a = METHODS[0]
    s1 = sections[0]
    nan = float("nan")
    rows = []
    shutil.rmtree(work / "overviews", ignore_errors=True)

    def open_store(label: str, **options) -> None:
        start = time.perf_counter()
        store = ExploreData(root, work, **options)
        view = store.section_view(store.dataset.section(s1), a)
        rows.append((name, label, {"total": time.perf_counter() - start, "panels": nan,
                                   "fibre": nan}))
        assert view.pred is not None and view.image.ndim == 3
        release(store)

    def open_app(label: str) -> None:
        start = time.perf_counter()
        app = Explorer(data=root, workdir=work, methods=[a], section=s1)
        rows.append((name, label, {"total": time.perf_counter() - start,
                                   "panels": app.timings.get("refresh"),
                                   "fibre": app.timings.get("fibre")}))
        assert app.state["messages"] == [], app.state["messages"]
        rows.append((name, "  then show fibre", timed(app, app.show_fibre)))
        release(app)

    open_store(f"new store: open {s1}, no overview cache", overview_cache=False)
    open_store(f"new store: open {s1}, writes its overviews")
    open_store(f"new store: open {s1}, overviews cached")
    open_app(f"new app: open {s1} with {a}, overviews cached")
    shutil.rmtree(work / "overviews")
    open_app(f"new app: open {s1} with {a}, no overviews")
    shutil.rmtree(work / "overviews")
    start = time.perf_counter()
    built = ExploreData(root, work).build_overviews()
    views = int((built["layer"] != "thresholds").sum())
    rows.append((name, f"build_overviews: {len(sections)} sections, {views} views",
                 {"total": time.perf_counter() - start, "panels": nan, "fibre": nan}))
    gc.collect()
    return rows


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--skip-full", action="store_true", help="only the 1024 x 1024 case")
    args = parser.parse_args(argv)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        start = time.perf_counter()
        root, work, sections = build_synthetic(tmp)
        print(f"built the 1024 x 1024 data in {time.perf_counter() - start:.1f} s", flush=True)
        rows += scenario("synthetic 1024x1024", root, work, sections)
        rows += fresh_open("synthetic 1024x1024", root, work, sections)
        if not args.skip_full:
            start = time.perf_counter()
            root, work, sections = build_full(tmp)
            shape = read_array(root / "IF" / "Mask_All_Myofibres" / "S11.tiff").shape
            print(f"built the full-size IF data {shape} in {time.perf_counter() - start:.1f} s",
                  flush=True)
            name = f"full-size IF {shape[0]}x{shape[1]}"
            gc.collect()
            rows += scenario(name, root, work, sections)
            gc.collect()
            rows += fresh_open(name, root, work, sections)
    print(f"\n{'data':<26}{'action':<52}{'total s':>9}{'panels s':>10}{'fibre s':>9}")
    for name, label, t in rows:
        print(f"{name:<26}{label:<52}{t['total']:>9.3f}{t['panels'] or float('nan'):>10.3f}"
              f"{t['fibre'] or float('nan'):>9.3f}")
    print("\ntargets: switching section or method < 1 s (1024 x 1024), < 3 s (full-size IF), "
          "with the downsampled views cached; a full-size section's overview < 5 s in a new "
          "process with its overviews cached")


if __name__ == "__main__":
    main()
