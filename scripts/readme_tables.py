"""Write the README's results block from a run's reports (never type numbers by hand).

    python scripts/readme_tables.py [--reports reports] [--readme README.md] [--check]

Replaces the text between ``<!-- results:start -->`` and ``<!-- results:end -->`` in the
README with :func:`nclsm_utils.report.site.readme_results` of ``reports/`` (Table III with 95 %
bootstrap intervals, the spread over training seeds when ``nclsm run --seeds N`` was run,
the paired-comparison sentence). ``--check`` exits 1 when the README differs instead.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

START, END = "<!-- results:start -->", "<!-- results:end -->"


def replace_block(text: str, block: str) -> str:
    """``text`` with the part between the markers replaced by ``block``."""
    if START not in text or END not in text:
        raise SystemExit(f"the README has no {START} ... {END} block")
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    return f"{head}{START}\n{block.strip()}\n{END}{tail}"


def main(argv=None) -> int:
    root = Path(__file__).resolve().parents[1]
    sys.path.insert(0, str(root))
    from nclsm_utils.report.site import readme_results

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reports", default=str(root / "reports"))
    parser.add_argument("--readme", default=str(root / "README.md"))
    parser.add_argument("--check", action="store_true")
    args = parser.parse_args(argv)
    readme = Path(args.readme)
    text = readme.read_text()
    new = replace_block(text, readme_results(args.reports))
    if args.check:
        if new != text:
            print(f"{readme}: the results block differs from {args.reports}", file=sys.stderr)
            return 1
        return 0
    readme.write_text(new)
    print(f"{readme}: results block written from {args.reports}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
