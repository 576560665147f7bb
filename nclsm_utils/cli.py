"""The ``nclsm`` command: one subcommand per step of the data flow.

Each subcommand is a small function ``cmd_<name>(args) -> int`` registered in
:func:`build_parser`; all logic lives in the library modules.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from .io import DataError

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
    from .dataset import Dataset

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
    from .dataset import Dataset
    from .tables import table1

    _print_table(table1(Dataset(args.data, roles=args.roles)), args.json)
    return 0


def cmd_report(args) -> int:
    from .pipeline import build_report

    index = build_report(data_dir=args.data, reports_dir=args.reports, quick=args.quick,
                         force=args.force)
    print(f"report ready: {index}")
    return 0


# ---------------------------------------------------------------------------- morphology
def cmd_shape_features(args) -> int:
    from .dataset import as_labels
    from .io import read_array, write_csv
    from .morphology import shape_features

    labels = as_labels(read_array(args.mask), args.mask)
    table = shape_features(labels, min_area=args.min_area)
    write_csv(args.out, table)
    print(f"{len(table)} fibres -> {args.out}")
    return 0


def cmd_ntm_rule(args) -> int:
    import pandas as pd

    from .morphology import ntm_rule

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
        from .io import write_csv

        write_csv(args.out, table.assign(NTM=flags))
        print(f"table with the NTM column -> {args.out}")
    return 0


# ---------------------------------------------------------------------------- parser
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

    p = sub.add_parser("table1", help="Table I: annotation counts per modality")
    p.add_argument("--data", required=True)
    p.add_argument("--roles", default=None)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_table1)

    p = sub.add_parser("report", help="default data (when needed) + all notebooks + the site")
    p.add_argument("--data", default="data", help="NCL-SM folder, or where synthetic data goes")
    p.add_argument("--reports", default="reports")
    p.add_argument("--quick", action="store_true", help="short training, for a smoke run")
    p.add_argument("--force", action="store_true", help="rerun everything")
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
