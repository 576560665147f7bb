"""An NCL-SM-shaped synthetic dataset at the real dataset's size (:func:`write_ncl_sm_shaped`).

NCL-SM has 27 IMC and 19 IF sections (Table I: 22,979 and 27,455 myofibres). Its IF
sections are 100-185 megapixels with fibres 250-520 px across, stored as PNG images and
TIFF instance masks. This writer makes a dataset of that shape to measure what a run on
it costs (``benchmarks/bench_full_scale.py``): every IF section is drawn by
:func:`~nclsm_utils.synth.writer.generate_section` at the working size of the default
synthetic data (fibres 72 px across) and enlarged to its full size, masks by nearest
neighbour and the image bilinearly with fresh pixel noise (so its PNG compresses like a
real one). IMC sections are drawn at their own size (about 1000 x 1000 px, 34-px fibres).

Sizes: three IF sections take the sizes of the real ones (S11 12272 x 15129, S60
9720 x 10132, S13 8528 x 21375); the others draw 100-185 Mpx; fibre diameters are drawn in
280-370 px. With seed 0 the 46 sections hold 24,430 IMC and 29,771 IF myofibres (NCL-SM:
22,979 and 27,455), 707-3,389 per IF section. ``scale`` < 1 shrinks the IF
sections' sides and fibre diameters by that factor (a smaller version of the same
dataset); ``sections`` < 46 keeps NCL-SM's IMC : IF proportion.

Example
-------
>>> from nclsm_utils.synth.fullsize import section_plan
>>> plan = section_plan(46, scale=1.0, seed=0)
>>> len(plan), sum(p.modality == "IF" for p in plan)
(46, 19)
>>> [p for p in plan if p.section == "S11"][0].shape
(12272, 15129)
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from ..core.io import atomic_path, write_text, write_tiff
from .config import SYNTH_FOLDERS, SynthConfig, _extend_ids

log = logging.getLogger(__package__)

#: Sizes (rows, columns) of real NCL-SM IF sections.
REAL_IF_SHAPES = {"S11": (12272, 15129), "S60": (9720, 10132), "S13": (8528, 21375)}
#: NCL-SM's section counts (Table I).
NCL_SM_SECTIONS = {"IMC": 27, "IF": 19}
#: Side of an IMC section (pixels) and the range of IF fibre diameters (pixels, full size).
IMC_SIDE = 1000
IF_DIAMETERS = (280.0, 370.0)
#: Megapixels of the IF sections without a real size.
IF_MEGAPIXELS = (100.0, 185.0)
#: The roles written (NCL-SM's; the synthetic ``image_raw`` is left out).
ROLES = ("image", "myofibres", "analysable", "am_vs_nam", "ntm", "fam", "fr", "qa")
#: zlib level of the PNG images (1: fast to write, read as fast as any level).
PNG_LEVEL = 1


@dataclass(frozen=True)
class PlannedSection:
    """One section of :func:`section_plan`: its id, modality, full ``shape`` (rows,
    columns), fibre ``diameter`` at full size and the ``working`` shape it is drawn at."""

    modality: str
    section: str
    shape: tuple[int, int]
    diameter: float
    working: tuple[int, int]

    @property
    def megapixels(self) -> float:
        return self.shape[0] * self.shape[1] / 1e6


def section_plan(sections: int = 46, scale: float = 1.0, seed: int = 0) -> list[PlannedSection]:
    """The sections of an NCL-SM-shaped dataset (see the module docstring).

    ``sections`` (2-46) keeps NCL-SM's IMC : IF proportion (at least one of each); the test
    and validation sections of the default splits (P02, P06, P04; S11, S60, S25) come first.
    """
    if not 2 <= int(sections) <= 46:
        raise ValueError(f"sections must be 2-46 (NCL-SM has 46), got {sections}")
    if not 0 < float(scale) <= 1:
        raise ValueError(f"scale must be in (0, 1], got {scale}")
    n_if = max(1, round(int(sections) * NCL_SM_SECTIONS["IF"] / 46))
    n_imc = max(1, int(sections) - n_if)
    rng = np.random.default_rng([seed, 46])
    imc = _extend_ids(["P02", "P06", "P04", "C01", "C04", "P01", "P07", "P09"], n_imc, "Q")
    if_ = _extend_ids(["S11", "S60", "S25", "S13", "S14", "S36", "S47"], n_if, "S")
    plan = [PlannedSection("IMC", s, (IMC_SIDE, IMC_SIDE), 34.0, (IMC_SIDE, IMC_SIDE))
            for s in imc]
    base = SynthConfig().if_.fibre_diameter
    for s in if_:
        megapixels = rng.uniform(*IF_MEGAPIXELS)
        aspect = rng.uniform(0.6, 1.0)
        diameter = rng.uniform(*IF_DIAMETERS)
        rows, cols = REAL_IF_SHAPES.get(s, (int(round(np.sqrt(megapixels * 1e6 * aspect))),
                                            int(round(np.sqrt(megapixels * 1e6 / aspect)))))
        rows, cols = (max(64, int(round(v * scale))) for v in (rows, cols))
        diameter *= float(scale)
        factor = max(1.0, diameter / base)          # drawn with 72-px fibres, then enlarged
        working = (max(64, int(round(rows / factor))), max(64, int(round(cols / factor))))
        plan.append(PlannedSection("IF", s, (rows, cols), float(diameter), working))
    return plan


def _enlarge(array: np.ndarray, shape: tuple[int, int], linear: bool) -> np.ndarray:
    import cv2

    if array.shape[:2] == tuple(shape):
        return array
    size = (int(shape[1]), int(shape[0]))
    if array.ndim == 3:
        return np.stack([_enlarge(array[..., c], shape, linear) for c in range(array.shape[2])],
                        axis=-1)
    return cv2.resize(array, size, interpolation=cv2.INTER_LINEAR if linear else
                      cv2.INTER_NEAREST)


def _noisy(image: np.ndarray, rng, amplitude: int = 6) -> np.ndarray:
    """Add fresh pixel noise (uniform, +-amplitude/2) to the R and G channels, row block by
    row block (an enlarged image is otherwise smooth and compresses unlike a real one)."""
    for start in range(0, image.shape[0], 1024):
        block = image[start:start + 1024, :, :2].astype(np.int16)
        block += rng.integers(-(amplitude // 2), amplitude // 2 + 1, block.shape, dtype=np.int16)
        image[start:start + 1024, :, :2] = np.clip(block, 0, 255).astype(np.uint8)
    return image


def write_png(path, image: np.ndarray, level: int = PNG_LEVEL) -> Path:
    """Write an RGB uint8 image as PNG (atomically; Pillow, any size)."""
    from PIL import Image

    with atomic_path(path) as tmp:
        Image.fromarray(image).save(tmp, format="PNG", compress_level=int(level))
    return Path(path)


def write_planned_section(out, planned: PlannedSection, seed: int = 0, index: int = 0) -> dict:
    """Draw one planned section at its working size, enlarge it and write its roles under
    ``out`` (image PNG, masks zlib TIFF). Returns the manifest record (fibre count, sizes)."""
    from .writer import generate_section

    config = SynthConfig()
    if planned.modality == "IMC":
        config.imc = replace(config.imc, shape=planned.working)
    else:
        diameter = min(planned.diameter, config.if_.fibre_diameter)
        config.if_ = replace(config.if_, shape=planned.working, fibre_diameter=diameter)
    roles = generate_section(planned.section, planned.modality, config, seed=seed, index=index)
    count = int(len(np.unique(roles["myofibres"])) - 1)
    rng = np.random.default_rng([seed, index, 7])
    folder = Path(out) / planned.modality
    for role in ROLES:
        array = _enlarge(roles.pop(role), planned.shape, linear=role == "image")
        if role == "image":
            if array.shape[:2] != planned.working:
                array = _noisy(array, rng)
            write_png(folder / SYNTH_FOLDERS[role] / f"{planned.section}.png", array)
        else:
            write_tiff(folder / SYNTH_FOLDERS[role] / f"{planned.section}.tiff", array)
        del array
    roles.clear()
    return {"modality": planned.modality, "section": planned.section,
            "shape": list(planned.shape), "fibre_diameter": round(planned.diameter, 1),
            "myofibres": count}


def write_ncl_sm_shaped(out, sections: int = 46, scale: float = 1.0, seed: int = 0,
                        workers: int = 1, progress: bool = True) -> Path:
    """Write an NCL-SM-shaped synthetic dataset (:func:`section_plan`) into ``out``.

    Idempotent: a folder whose ``synth_manifest.json`` has the same plan and seed is kept
    (a run cut short resumes at the sections not yet written). ``workers`` > 1 writes
    sections in that many processes (each holds one full-size section, about 2 GB at
    185 Mpx).

    Returns ``out``.
    """
    from tqdm.auto import tqdm

    out = Path(out)
    plan = section_plan(sections, scale, seed)
    wanted = {"generator": "nclsm.synth.fullsize", "version": 1, "seed": int(seed),
              "sections_planned": int(sections), "scale": float(scale)}
    manifest_path = out / "synth_manifest.json"
    done: dict = {}
    if manifest_path.is_file():
        existing = json.loads(manifest_path.read_text())
        if {k: existing.get(k) for k in wanted} == wanted:
            done = {r["section"]: r for r in existing.get("sections", [])}
    todo = [(i, p) for i, p in enumerate(plan) if p.section not in done]

    def record(entry) -> None:
        done[entry["section"]] = entry
        order = {p.section: i for i, p in enumerate(plan)}
        rows = sorted(done.values(), key=lambda r: order[r["section"]])
        write_text(manifest_path, json.dumps({**wanted, "sections": rows}, indent=2))

    with tqdm(total=len(plan), initial=len(plan) - len(todo), desc="NCL-SM-shaped data",
              disable=not progress) as bar:
        if int(workers) > 1 and len(todo) > 1:
            import multiprocessing
            from concurrent.futures import ProcessPoolExecutor, as_completed

            # largest first, so the two biggest do not end up last on one worker
            todo.sort(key=lambda item: -item[1].megapixels)
            with ProcessPoolExecutor(max_workers=int(workers),
                                     mp_context=multiprocessing.get_context("spawn")) as pool:
                futures = [pool.submit(write_planned_section, str(out), p, seed, i)
                           for i, p in todo]
                for future in as_completed(futures):
                    record(future.result())
                    bar.update(1)
        else:
            for i, p in todo:
                record(write_planned_section(out, p, seed, i))
                bar.update(1)
    return out
