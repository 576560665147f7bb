"""Time the generation of the default synthetic NCL-SM (target: under 60 s on 2 cores).

Run: ``python benchmarks/bench_synth.py``; prints a table, asserts nothing.
"""
from __future__ import annotations

import tempfile
import time
from pathlib import Path

from nclsm_utils.dataset import Dataset
from nclsm_utils.synth import SynthConfig, write_dataset
from nclsm_utils.report.tables import table1


def main() -> None:
    rows = []
    for preset in ("tiny", "default"):
        with tempfile.TemporaryDirectory() as tmp:
            start = time.perf_counter()
            out = write_dataset(Path(tmp) / preset, SynthConfig.preset(preset), seed=0,
                                progress=False)
            seconds = time.perf_counter() - start
            total = table1(Dataset(out)).set_index("technique").loc["Total"]
            rows.append((preset, int(total["sections"]), int(total["myofibres"]), seconds))
    print(f"{'preset':<10}{'sections':>10}{'myofibres':>11}{'seconds':>10}")
    for preset, sections, fibres, seconds in rows:
        print(f"{preset:<10}{sections:>10}{fibres:>11}{seconds:>10.1f}")


if __name__ == "__main__":
    main()
