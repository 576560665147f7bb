"""The ``nclsm`` command: one subcommand per step of the data flow.

Each subcommand is a small function ``cmd_<name>(args) -> int`` registered in
:func:`build_parser`; all logic lives in the library modules.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

from .core.io import DataError

log = logging.getLogger("nclsm")


def _print_table(frame, as_json: bool = False) -> None:
    if as_json:
        print(json.dumps(json.loads(frame.to_json(orient="records")), indent=2))
    else:
        import pandas as pd

        with pd.option_context("display.max_columns", None, "display.width", 200):
            print(frame.to_string(index=False))


# ---------------------------------------------------------------------------- foundation
def cmd_synth(args) -> int:
    from .synth import SynthConfig, write_dataset

    config = SynthConfig.preset(args.preset)
    if args.imc is not None:
        config.n_imc = args.imc
    if args.if_ is not None:
        config.n_if = args.if_
    out = write_dataset(args.out, config=config, seed=args.seed, force=args.force)
    print(f"synthetic NCL-SM written to {out}")
    return 0


def cmd_check_data(args) -> int:
    from .core.dataset import Dataset

    report = Dataset(args.path, roles=args.roles).check()
    columns = [c for c in report.columns if c != "problems"]
    _print_table(report[columns], args.json)
    problems = [p for p in report["problems"] if p]
    for line in problems:
        print(f"problem: {line}", file=sys.stderr)
    if problems:
        print(f"{len(problems)} section(s) with problems", file=sys.stderr)
    return 0 if report["ok"].all() else 1


def cmd_table1(args) -> int:
    from .core.dataset import Dataset
    from .report.tables import table1

    _print_table(table1(Dataset(args.data, roles=args.roles)), args.json)
    return 0


def _notebook_sources():
    """``$NCLSM_NOTEBOOKS`` (another folder of notebook sources) or None (the default)."""
    return os.environ.get("NCLSM_NOTEBOOKS") or None


def cmd_report(args) -> int:
    from .report.pipeline import build_report

    index = build_report(data_dir=args.data, reports_dir=args.reports, quick=_budget(args),
                         force=args.force, scheduler=args.scheduler, workers=args.workers,
                         ncl_sm_repo=args.ncl_sm_repo, source_dir=_notebook_sources())
    print(f"report ready: {index}")
    return 0


# ---------------------------------------------------------------------------- morphology
def cmd_shape_features(args) -> int:
    from .core.dataset import as_labels
    from .core.io import read_array, write_csv
    from .metrics.morphology import shape_features

    labels = as_labels(read_array(args.mask), args.mask)
    table = shape_features(labels, min_area=args.min_area)
    write_csv(args.out, table)
    print(f"{len(table)} fibres -> {args.out}")
    return 0


def cmd_ntm_rule(args) -> int:
    import pandas as pd

    from .metrics.morphology import ntm_rule

    path = Path(args.csv)
    if not path.is_file():
        raise DataError(f"{path}: file not found; expected a shape-features csv "
                        "(from `nclsm shape-features` or the published NTM script)")
    try:
        table = pd.read_csv(path)
    except Exception as error:  # pandas raises several types for bad csv files
        raise DataError(f"{path}: cannot read the csv ({type(error).__name__}: {error})") from error
    try:
        flags = ntm_rule(table)
    except KeyError as error:
        raise DataError(f"{path}: {error.args[0]}") from error
    print(f"{int(flags.sum())} of {len(flags)} fibres flagged as NTM")
    if "NTM" in table.columns:
        published = table["NTM"].astype(str).str.strip().str.lower() == "true"
        print(f"agrees with the file's NTM column on {int((published == flags).sum())} "
              f"of {len(flags)} rows")
    if args.out:
        from .core.io import write_csv

        write_csv(args.out, table.assign(NTM=flags))
        print(f"table with the NTM column -> {args.out}")
    return 0


# ---------------------------------------------------------------------------- segmenters
def cmd_segment(args) -> int:
    from .core.dataset import Dataset
    from .runner.cluster import DistributedError
    from .runner import run_methods
    from .segmenters import SegmenterError, get_segmenter

    try:
        # an unknown method fails here, before any data is read (ValueError -> exit code 2)
        get_segmenter(args.method, workdir=args.workdir, budget=_budget(args))
        # run_methods = run_method's tables, resumable (results/manifest.json), on Dask with
        # --workers N / --scheduler ADDRESS
        result = run_methods([args.method], Dataset(args.data, roles=args.roles),
                             split=args.split, sections=args.sections, workdir=args.workdir,
                             quick=_budget(args), force=args.force, scheduler=args.scheduler,
                             workers=args.workers, strict=True)[args.method]
    except (SegmenterError, DistributedError, OSError) as error:  # OSError: unwritable workdir
        print(f"nclsm segment: error: {error}", file=sys.stderr)
        return 2
    _print_table(result.summary, args.json)
    for key, message in result.errors.items():
        print(f"nclsm segment: {key} failed: {message}", file=sys.stderr)
    if result.errors:
        print(f"{len(result.errors)} section(s) failed; the others were written to "
              f"{Path(args.workdir) / 'results' / result.method}", file=sys.stderr)
    return 1 if result.errors else 0


def cmd_predict(args) -> int:
    from .export import SUMMARY_NAME, expand_images, predict_files
    from .segmenters import SegmenterError, get_segmenter

    for option in ("pixel_size", "fibre_diameter_um"):
        value = getattr(args, option)
        if value is not None and not value > 0:
            raise ValueError(f"--{option.replace('_', '-')} must be a positive number of "
                             f"micrometres, got {value:g}")
    if args.fibre_diameter is not None and args.fibre_diameter_um is not None:
        raise ValueError("give --fibre-diameter (pixels) or --fibre-diameter-um, not both")
    images = expand_images(args.image)
    labels_path = out_dir = None
    if args.out is not None:
        if Path(args.out).suffix.lower() in (".tif", ".tiff"):
            labels_path = args.out
        else:
            out_dir = args.out
    try:
        # an unknown method fails here, before any data is read or generated (exit code 2)
        segmenter = get_segmenter(args.method, workdir=args.workdir, budget=_budget(args))
        if args.data is None:   # the default data of `nclsm report` / `make report`,
            from .report.pipeline import resolve_data   # resolved (generated) at the first
                                                        # readable image
            data = lambda: resolve_data("data")  # noqa: E731
        else:
            data = args.data
        summary = predict_files(
            images, segmenter, data=data, out_dir=out_dir, labels_path=labels_path,
            modality=args.modality, membrane_channel=args.membrane_channel,
            mass_channel=args.mass_channel, pixel_size=args.pixel_size,
            fibre_diameter=args.fibre_diameter, fibre_diameter_um=args.fibre_diameter_um,
            force=args.force, reader=args.reader,
            report=lambda line, error=False: print(
                f"nclsm predict: {line}" if error else line,
                file=sys.stderr if error else sys.stdout))
    except (SegmenterError, OSError) as error:  # OSError: unwritable output or workdir
        print(f"nclsm predict: error: {error}", file=sys.stderr)
        return 2
    failed = int((summary["status"] == "failed").sum())
    if len(images) > 1:
        folder = Path(out_dir) if out_dir else images[0].parent
        print(f"{len(images) - failed} of {len(images)} image(s) segmented or done before; "
              f"summary -> {folder / SUMMARY_NAME}")
    if failed:
        if len(images) > 1:
            print(f"nclsm predict: {failed} of {len(images)} image(s) failed (see above); the "
                  "others were written", file=sys.stderr)
        return 2 if failed == len(images) else 1
    return 0


# ---------------------------------------------------------------------------- metrics
def cmd_evaluate(args) -> int:
    from .core.dataset import as_labels, as_rgb
    from .core.io import read_array, write_csv
    from .metrics import evaluate, modality_half_width, summarise

    gt = as_labels(read_array(args.gt), args.gt)
    pred = as_labels(read_array(args.pred), args.pred)
    image = as_rgb(read_array(args.image), args.image) if args.image else None
    if args.half_width is None and args.modality is None:
        raise ValueError("give --modality IMC|IF (ring half-width 2 or 6) or --half-width")
    half_width = args.half_width if args.half_width is not None \
        else modality_half_width(args.modality)
    table = evaluate(gt, pred, image, half_width=half_width, definition=args.definition)
    write_csv(args.out, table)
    print(f"{len(table)} GT fibres, {int(table['matched'].sum())} matched -> {args.out}")
    if len(table):
        _print_table(summarise(table), args.json)
    return 0


def cmd_summarise(args) -> int:
    from .metrics import read_per_fibre_table, summarise

    tables = [read_per_fibre_table(path) for path in args.files]
    _print_table(summarise(tables), args.json)
    return 0


def cmd_table2(args) -> int:
    from .core.dataset import Dataset
    from .report.tables import table2

    _print_table(table2(Dataset(args.data, roles=args.roles)), args.json)
    return 0


# ---------------------------------------------------------------------------- notebooks and site
def _parse_parameters(pairs) -> dict:
    """``-p NAME VALUE`` pairs -> dict; values are read as YAML (numbers, true, [a, b])."""
    import yaml

    out = {}
    for name, value in pairs or []:
        try:
            out[name] = yaml.safe_load(value)
        except yaml.YAMLError:
            out[name] = value
    return out


def cmd_run(args) -> int:
    from .report.pipeline import DEFAULT_METHODS, NotebookFailed, resolve_and_run

    methods = [m for item in (args.methods or DEFAULT_METHODS) for m in str(item).split(",") if m]
    parameters = _parse_parameters(args.parameter)
    if args.seeds < 1:
        print(f"nclsm run: --seeds must be >= 1, got {args.seeds}", file=sys.stderr)
        return 2
    if args.seeds > 1:   # one seed: the parameter is left out, so the default run is unchanged
        parameters = {**(parameters or {}), "seeds": args.seeds}
    try:
        result = resolve_and_run(args.data, scheduler=args.scheduler, workers=args.workers,
                                 reports=args.reports, workdir=args.workdir, methods=methods,
                                 quick=_budget(args), force=args.force,
                                 parameters=parameters,
                                 notebooks=args.notebooks, progress=not args.no_progress,
                                 source_dir=_notebook_sources())
    except NotebookFailed as failure:
        print(f"nclsm run: {failure}", file=sys.stderr)
        print("nclsm run: the reports written before it are kept; fix the cause and rerun "
              "`nclsm run` to resume from this notebook", file=sys.stderr)
        return 1
    for job in result.jobs:
        print(f"{job.status:8s} {job.name:28s} {job.seconds:7.1f} s  {job.output}")
    print(f"notebooks: {result.summary()}; manifest {result.manifest}")
    return 0


def cmd_reproduce(args) -> int:
    import json

    from .core.io import write_csv
    from .report.reproduce import disagreements, reproduce

    table = reproduce(args.ncl_sm_repo)
    if args.out:
        out = Path(args.out)
        write_csv(out / "reproduction.csv", table)
    if args.json:
        rows = [{k: (None if isinstance(v, float) and v != v else v) for k, v in row.items()}
                for row in table.to_dict("records")]
        print(json.dumps({"rows": rows}, indent=2, default=str))
    else:
        _print_table(table, False)
        compared = int(table["match"].notna().sum())
        print(f"{compared} numbers compared, {disagreements(table)} disagree, "
              f"{int(table['match'].isna().sum())} rows skipped or informative")
    return 1 if disagreements(table) else 0


def cmd_site(args) -> int:
    from .report.site import build_site

    result = build_site(reports_dir=args.reports, out_dir=args.out, engine=args.engine)
    if result.note:
        print(result.note)
    print(f"site ready: {result.index}")
    return 0


# ---------------------------------------------------------------------------- curation
def cmd_curate(args) -> int:
    from .curation import CurationParams, evaluate_curation
    from .core.dataset import Dataset

    dataset = Dataset(args.data, roles=args.roles)
    params = CurationParams(seed=args.seed)
    if args.quick:
        params = params.quick()
    result = evaluate_curation(dataset, args.method, workdir=args.workdir, split=args.split,
                               params=params, match=args.match,
                               ntm=args.ntm, write=True, progress=not args.json,
                               scale=args.ntm_scale)
    out = Path(args.workdir) / "curation" / args.method.replace(":", "-").replace("/", "-")
    classes = result["classes"]
    if len(classes):
        pooled = classes[classes["section"] == "all"]
        _print_table(pooled[["class", "gt_positive", "pred_positive", "precision", "recall",
                             "f1"]].round(3), args.json)
    if len(result["definitions"]) and not args.json:
        print("definitions (rule: NCL-SM's published rule; learned: trained on the train split):")
        _print_table(result["definitions"][["modality", "class", "definition", "scale"]])
    fr = result["fr"]
    if len(fr) and not args.json:
        print(f"folded regions: pixel IoU {fr.iloc[-1]['iou']:.3f} (pooled over "
              f"{int(fr.iloc[-1]['sections_with_fr'])} section(s) with folded regions)")
    if len(result["paper_summary"]) and not args.json:
        _print_table(result["paper_summary"].round(3))
    for _, row in result["errors"].iterrows():
        print(f"nclsm curate: {row['modality']}/{row['section']} failed: {row['error']}",
              file=sys.stderr)
    if not args.json:
        print(f"curated masks and tables -> {out}")
    return 1 if len(result["errors"]) else 0


# ---------------------------------------------------------------------------- weights
def cmd_models_list(args) -> int:
    import pandas as pd

    from .segmenters.weights import on_disk

    _print_table(pd.DataFrame(on_disk()), args.json)
    return 0


def cmd_models_fetch(args) -> int:
    from .segmenters.weights import WEIGHTS, WeightsError, fetch

    names = sorted(WEIGHTS) if args.name == "all" else [args.name]
    if args.name != "all" and args.name not in WEIGHTS:
        print(f"nclsm models fetch: error: unknown weights {args.name!r}; one of "
              f"{', '.join(sorted(WEIGHTS))}, all", file=sys.stderr)
        return 2
    failed = 0
    for name in names:
        try:
            path, digest = fetch(name, dest=args.dest, url=args.url, sha256=args.sha256)
        except WeightsError as error:
            print(f"nclsm models fetch: error: {error}", file=sys.stderr)
            failed += 1
            continue
        checked = "verified" if (args.sha256 or WEIGHTS[name].sha256) else \
            "not verified: no published checksum"
        print(f"{name}: {path} (sha256 {digest}, {checked})")
        if args.dest is not None:
            hint = ("CELLPOSE_LOCAL_MODELS_PATH=" + str(path.parent)
                    if WEIGHTS[name].method == "cellpose"
                    else f"StarDistParams(pretrained_model='{path}')")
            print(f"  (outside the default folder: use it with {hint})")
    return 1 if failed else 0


def _budget(args):
    """The training budget of ``--budget`` (``--quick`` is ``--budget quick``)."""
    return "quick" if getattr(args, "quick", False) else args.budget


def _add_budget_options(p) -> None:
    p.add_argument("--budget", choices=["quick", "report", "full"], default="report",
                   help="training length: quick (smoke run), report (the CPU budget of `make "
                        "report`, default), full (each library's documented default length)")
    p.add_argument("--quick", action="store_true", help="the same as --budget quick")


# ---------------------------------------------------------------------------- parser
def _add_dask_options(p, batch: bool = False) -> None:
    """``--scheduler`` / ``--workers``: (method, section) tasks on Dask (nclsm_utils.runner);
    ``batch``: also up to N notebooks at once (nclsm_utils.report.pipeline.run_notebooks)."""
    p.add_argument("--scheduler", default=None, metavar="ADDRESS",
                   help="Dask scheduler address (tcp://host:8786) for the per-section tasks")
    help_workers = ("without --scheduler: N > 1 runs the sections on a local Dask cluster "
                    "of N processes (default 1: in this process)")
    if batch:
        help_workers = ("N > 1: up to N notebooks at once (one that trains a network runs "
                        "alone) and, without --scheduler, one local Dask cluster of N "
                        "processes for the batch's per-section tasks (default 1: serial)")
    p.add_argument("--workers", type=int, default=1, metavar="N", help=help_workers)


def _add_table_parser(sub, name: str, help: str, func) -> None:
    """A dataset-table subcommand: ``--data`` (required), ``--roles``, ``--json``."""
    p = sub.add_parser(name, help=help)
    p.add_argument("--data", required=True)
    p.add_argument("--roles", default=None)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=func)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="nclsm", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("synth", help="generate a synthetic NCL-SM dataset")
    p.add_argument("--out", required=True, help="output folder (gets IMC/ and IF/)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--preset", default="default", help="default | tiny | pretrain")
    p.add_argument("--imc", type=int, default=None, help="number of IMC sections")
    p.add_argument("--if", dest="if_", type=int, default=None, help="number of IF sections")
    p.add_argument("--force", action="store_true", help="overwrite an existing dataset")
    p.set_defaults(func=cmd_synth)

    p = sub.add_parser("check-data", help="sections x roles table of an NCL-SM folder")
    p.add_argument("path")
    p.add_argument("--roles", default=None, help="YAML file of role -> folder overrides")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_check_data)

    _add_table_parser(sub, "table1", "Table I: annotation counts per modality", cmd_table1)

    p = sub.add_parser("report", help="default data (when needed) + all notebooks + the site")
    p.add_argument("--data", default="data", help="NCL-SM folder, or where synthetic data goes")
    p.add_argument("--reports", default="reports")
    _add_budget_options(p)
    p.add_argument("--force", action="store_true", help="rerun everything")
    p.add_argument("--ncl-sm-repo", default=None,
                   help="checkout of https://github.com/atifkhanncl/NCL-SM: the Paper "
                        "reproduction page recomputes its published numbers")
    _add_dask_options(p, batch=True)
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("shape-features", help="published NTM shape features per fibre of a mask")
    p.add_argument("--mask", required=True, help="instance mask (TIFF/PNG, 0 = background)")
    p.add_argument("--out", required=True, help="output csv")
    p.add_argument("--min-area", type=int, default=25,
                   help="skip labels with this many pixels or fewer (published: 25)")
    p.set_defaults(func=cmd_shape_features)

    p = sub.add_parser("ntm-rule", help="count fibres the published NTM rule flags in a csv")
    p.add_argument("csv", help="shape-features csv (ours or the published one)")
    p.add_argument("--out", default=None, help="write the table with an NTM column here")
    p.set_defaults(func=cmd_ntm_rule)

    p = sub.add_parser("segment", help="fit (when needed), predict and evaluate a method")
    p.add_argument("--method", required=True,
                   help="mitocyto | cellpose | stardist | stardist+refine | unet | external:<folder>")
    p.add_argument("--data", required=True, help="NCL-SM folder (real or synthetic)")
    p.add_argument("--sections", nargs="+", default=None,
                   help="section ids to predict (default: the --split sections)")
    p.add_argument("--split", default="test", choices=["train", "validation", "test"])
    p.add_argument("--workdir", default="data", help="models, predictions and results go here")
    p.add_argument("--roles", default=None, help="YAML file of role -> folder overrides")
    _add_budget_options(p)
    p.add_argument("--force", action="store_true", help="refit and re-predict")
    _add_dask_options(p)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_segment)

    p = sub.add_parser("predict", help="segment your own microscope images (TIFF, OME-TIFF, "
                       "PNG, JPEG, CZI/ND2/LIF with the formats extra) and export the fibres "
                       "for Fiji and QuPath")
    p.add_argument("--method", required=True,
                   help="mitocyto | cellpose | stardist | stardist+refine | unet | unet2")
    p.add_argument("--image", required=True, nargs="+", help="image files, folders or glob "
                   "patterns; R = membrane marker, G = mitochondrial-mass marker unless "
                   "--membrane-channel/--mass-channel choose the channels; 16-bit images are "
                   "stretched per channel (0.1-99.9 percentiles)")
    p.add_argument("--out", default=None, help="output folder (default: beside each image); "
                   "for one image a .tif/.tiff path names the label TIFF itself")
    p.add_argument("--membrane-channel", default=None, metavar="INDEX|NAME",
                   help="channel of the membrane marker (laminin, dystrophin ...): 0-based "
                        "index or a channel name from the file's metadata")
    p.add_argument("--mass-channel", default=None, metavar="INDEX|NAME",
                   help="channel of the mitochondrial-mass marker (index or name); without it "
                        "G is 0")
    p.add_argument("--pixel-size", type=float, default=None, metavar="UM",
                   help="micrometres per pixel (default: from the file's metadata)")
    p.add_argument("--modality", choices=["IMC", "IF"], default="IMC",
                   help="selects the method's per-modality settings (default IMC)")
    p.add_argument("--fibre-diameter", type=float, default=None, metavar="PX",
                   help="median fibre diameter in pixels of the image (default: estimated "
                        "from the membrane channel and printed)")
    p.add_argument("--fibre-diameter-um", type=float, default=None, metavar="UM",
                   help="median fibre diameter in micrometres (needs a pixel size)")
    p.add_argument("--force", action="store_true",
                   help="redo images whose outputs all exist (default: skip them)")
    p.add_argument("--reader", choices=["bioio"], default=None,
                   help="read every file through bioio (default: tifffile for TIFF, Pillow for "
                        "PNG/JPEG, bioio for other formats)")
    p.add_argument("--data", default=None, help="dataset whose train split trains the method "
                   "(default: as `nclsm report`: NCL-SM found in data/, else the synthetic "
                   "data/synthetic, generated when missing)")
    p.add_argument("--workdir", default="data", help="models are cached here (as for "
                   "`nclsm segment`)")
    _add_budget_options(p)
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser("evaluate", help="per-fibre paper metrics of a predicted mask vs the GT")
    p.add_argument("--gt", required=True, help="ground-truth label mask (TIFF/PNG)")
    p.add_argument("--pred", required=True, help="predicted (or QA) label mask")
    p.add_argument("--image", default=None, help="RGB section image (R membrane, G mass); "
                   "without it the AiB/AoB percentages are NaN")
    p.add_argument("--modality", choices=["IMC", "IF"], default=None,
                   help="sets the ring half-width: IMC 2, IF 6 (required unless --half-width)")
    p.add_argument("--half-width", type=int, default=None, help="ring half-width k, overrides "
                   "--modality")
    p.add_argument("--definition", choices=["labels", "published"], default="labels",
                   help="labels (default): one fibre per label, its filled pixels; published: "
                        "the published notebook's OpenCV contours, so that fibre indices and "
                        "IoUs equal its per-fibre csvs")
    p.add_argument("--out", required=True, help="per-fibre csv to write")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("summarise", help="paper summary (MF-A, r_AoB, r_AiB, IoU, A%%) of "
                       "per-fibre csvs (ours or the published notebook's)")
    p.add_argument("files", nargs="+", help="per-fibre csv files, pooled")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_summarise)

    _add_table_parser(sub, "table2", "Table II: QA duplicate annotations vs ground truth",
                      cmd_table2)

    p = sub.add_parser("run", help="execute the notebooks with papermill into reports/ "
                                   "(skips what is up to date, resumes after a failure)")
    p.add_argument("--data", default="data", help="NCL-SM folder, or where synthetic data goes")
    p.add_argument("--methods", nargs="+", default=None,
                   help="methods of the per-method notebook (default: mitocyto cellpose "
                        "stardist unet stardist+refine; also unet2, external:<folder>)")
    p.add_argument("--reports", default="reports", help="executed notebooks, tables, logs")
    p.add_argument("--workdir", default=None,
                   help="models, predictions, results (default: the data folder's data/)")
    _add_budget_options(p)
    p.add_argument("--force", action="store_true", help="rerun every notebook")
    p.add_argument("--notebooks", nargs="+", default=None,
                   help="only these notebooks of the run table (e.g. 01_dataset 04_compare)")
    p.add_argument("-p", "--parameter", nargs=2, action="append", metavar=("NAME", "VALUE"),
                   help="extra notebook parameter (YAML value); must be declared by a notebook")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--seeds", type=int, default=1,
                   help="train each trained method with this many seeds; Table III adds the "
                        "spread across them (default 1)")
    _add_dask_options(p, batch=True)
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("reproduce", help="recompute the paper's published numbers from a "
                                         "checkout of its code repository's sample_data/")
    p.add_argument("--ncl-sm-repo", required=True,
                   help="checkout of https://github.com/atifkhanncl/NCL-SM")
    p.add_argument("--json", action="store_true", help='{"rows": [{check, published, ...}]}')
    p.add_argument("--out", default=None, help="also write reproduction.csv into this folder")
    p.set_defaults(func=cmd_reproduce)

    p = sub.add_parser("site", help="render the website from reports/ into _site/ "
                                    "(Quarto when installed, else nbconvert)")
    p.add_argument("--reports", default="reports")
    p.add_argument("--out", default=None, help="output folder (default: _site)")
    p.add_argument("--engine", default="auto", choices=["auto", "quarto", "nbconvert"])
    p.set_defaults(func=cmd_site)

    p = sub.add_parser("curate", help="folded regions, NTM and FAM fibres, analysable mask "
                                      "(+ evaluation against the dataset's masks)")
    p.add_argument("--data", required=True, help="NCL-SM folder (real or synthetic)")
    p.add_argument("--method", default="gt",
                   help="gt (ground-truth myofibres) or a method whose predictions `nclsm "
                        "segment` cached in <workdir>/predictions/<method>/")
    p.add_argument("--workdir", default="data",
                   help="models/, predictions/ are read here; curation/<method>/ is written")
    p.add_argument("--split", default="test", choices=["train", "validation", "test", "all"])
    p.add_argument("--match", default="centroid", choices=["centroid", "iou"],
                   help="matching of predicted to GT fibres: paper centroid rule or IoU > 0.5")
    p.add_argument("--ntm", default="auto", choices=["auto", "learned", "rule"],
                   help="NTM decision removed from the analysable mask (auto: the published "
                        "rule for IF, the learned classifier for IMC)")
    p.add_argument("--ntm-scale", type=float, default=None, metavar="S",
                   help="the sections' pixels per NCL-SM IF pixel, for the NTM rule's area "
                        "limits (e.g. 0.5 when fibres are half as many pixels across as "
                        "NCL-SM's ~360; default: a synthetic dataset's own scale, 1 for NCL-SM)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quick", action="store_true", help="smaller models, for a smoke run")
    p.add_argument("--roles", default=None, help="YAML file of role -> folder overrides")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_curate)

    p = sub.add_parser("models", help="pretrained weights: list what is on disk, fetch them")
    models = p.add_subparsers(dest="models_command", required=True)
    q = models.add_parser("list", help="the known weights, where each method looks for them, "
                                       "and whether they are there")
    q.add_argument("--json", action="store_true")
    q.set_defaults(func=cmd_models_list)
    q = models.add_parser("fetch", help="download weights from where the library publishes "
                                        "them, check the pinned SHA-256, write atomically")
    q.add_argument("name", choices=["cyto3", "2D_versatile_fluo", "all"])
    q.add_argument("--dest", default=None, help="folder to write into (default: where the "
                   "method looks: Cellpose's model folder, the Keras cache)")
    q.add_argument("--url", default=None, help="another address of the same file (a mirror)")
    q.add_argument("--sha256", default=None, help="expected SHA-256 (default: the pinned one; "
                   "cyto3 has no published checksum)")
    q.set_defaults(func=cmd_models_fetch)

    # further subcommands are registered below by their modules' sections
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        return int(args.func(args) or 0)
    except (DataError, FileNotFoundError, ValueError, KeyError) as error:
        print(f"nclsm {args.command}: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
