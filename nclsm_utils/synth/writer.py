"""Writing synthetic sections: every role of one section (:func:`generate_section`), its
TIFFs, and whole datasets (:func:`write_dataset`: serial, spawned local processes with a
serial fallback, or a Dask client; idempotent through :func:`renderer_fingerprint`)."""
from __future__ import annotations

import json
import logging
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np

from ..core.io import available_cores, write_text, write_tiff
from ..core.shape import NTM_REFERENCE_DIAMETER, ntm_rule, shape_features
from .acquisition import compose_rgb, render_raw
from .appearance import Appearance
from .config import AM_CLASS, NAM_CLASS, SYNTH_FOLDERS, SynthConfig
from .geometry import classify_fibres, fibre_geometry, qa_annotation

log = logging.getLogger(__package__)  # the package's logger ("nclsm_utils.synth")


def generate_section(section_id: str, modality: str, config: SynthConfig | None = None,
                     seed: int = 0, index: int = 0) -> dict[str, np.ndarray]:
    """Generate every role of one synthetic section.

    Returns
    -------
    dict role -> array: ``image`` (H, W, 3) uint8, ``image_raw`` (H, W, 2) uint16 and the masks
    ``myofibres``, ``analysable``, ``ntm``, ``fam``, ``qa`` (uint16 instance masks; the class
    masks keep the myofibre ids), ``am_vs_nam`` (uint8: 1 analysable, 2 not), ``fr`` (uint8 0/1).
    """
    config = config or SynthConfig()
    params = config.params(modality)
    rng = np.random.default_rng([seed, index, 1 if modality == "IMC" else 2])
    geometry = fibre_geometry(params.shape, params, config, rng)
    labels = geometry["labels"]
    drawn_ntm, fam = classify_fibres(labels, geometry["oblique"], config, rng)
    # NCL-SM's definitions (IF: the published rule at this dataset's pixel size; IMC: the
    # figure's panel D, obliquely cut fibres); no random numbers are drawn, so images,
    # myofibres, FAM and QA do not depend on them
    ntm = (if_ntm_flags(labels, config) if modality == "IF" else imc_ntm_flags(labels)) & ~fam
    analysable = ~ntm & ~fam
    analysable[0] = False
    look = Appearance.draw(rng, config.look_spread) if config.randomise else Appearance.typical()
    if config.look_overrides:
        look = replace(look, **config.look_overrides)
    raw = render_raw(geometry["membrane_labels"], geometry["draw"].fibre_diameter, look, rng,
                     fam_labels=_membrane_ids_of(geometry, np.flatnonzero(fam)),
                     fr=geometry["fr"], tissue=geometry["tissue"])
    qa = qa_annotation(labels, config.qa_fraction, config.qa_amplitude, rng, exclude=drawn_ntm)

    def keep(flags):
        return np.where(flags[labels], labels, 0).astype(np.uint16)

    am_vs_nam = np.where(labels > 0, np.where(analysable[labels], AM_CLASS, NAM_CLASS), 0)
    return {
        "image": compose_rgb(raw, look),
        "image_raw": raw,
        "myofibres": labels.astype(np.uint16),
        "analysable": keep(analysable),
        "am_vs_nam": am_vs_nam.astype(np.uint8),
        "ntm": keep(ntm),
        "fam": keep(fam),
        "fr": geometry["fr"].astype(np.uint8),
        "qa": qa.astype(np.uint16),
    }


def ntm_scale(config: SynthConfig | None = None) -> float:
    """NCL-SM IF pixels to this dataset's IF pixels: the config's IF fibre diameter over
    :data:`~nclsm_utils.core.shape.NTM_REFERENCE_DIAMETER` (0.2 by default: 72-px fibres for
    the real sections' 360 px).

    >>> ntm_scale()
    0.2
    """
    config = config or SynthConfig()
    return float(config.params("IF").fibre_diameter) / NTM_REFERENCE_DIAMETER


def if_ntm_flags(labels: np.ndarray, config: SynthConfig | None = None) -> np.ndarray:
    """NCL-SM's IF non-transverse flags (bool per label, index = label): the published rule
    (:func:`~nclsm_utils.core.shape.ntm_rule`) at :func:`ntm_scale`; labels the published
    script skips (25 px or fewer) count as non-transverse, as in the curation."""
    n = int(labels.max())
    flags = np.zeros(n + 1, bool)
    if n == 0:
        return flags
    flags[1:] = True                                   # skipped labels stay flagged
    table = shape_features(labels)
    if len(table):
        flags[table["label"].to_numpy(np.int64)] = ntm_rule(table, ntm_scale(config)).to_numpy()
    flags[np.bincount(labels.ravel(), minlength=n + 1) == 0] = False
    flags[0] = False
    return flags


#: IMC non-transverse fibres: second-moment axis ratio above this (an oblique cut of a
#: cylinder more than 60 degrees off transverse); chosen on the left half of the NCL-SM
#: figure's panel D (docs/decisions.md).
IMC_NTM_AXIS_RATIO = 2.0


def imc_ntm_flags(labels: np.ndarray) -> np.ndarray:
    """IMC non-transverse flags (bool per label, index = label): fibres whose equal-moment
    ellipse is more than :data:`IMC_NTM_AXIS_RATIO` times longer than wide, the fibres the
    NCL-SM figure's panel D marks (elongated, obliquely cut)."""
    from skimage import measure

    flags = np.zeros(int(labels.max()) + 1, bool)
    for p in measure.regionprops(labels):
        minor = p.axis_minor_length
        flags[p.label] = minor <= 0 or p.axis_major_length / minor > IMC_NTM_AXIS_RATIO
    return flags


def _membrane_ids_of(geometry: dict, fibre_ids: np.ndarray) -> np.ndarray:
    """Ids in the membrane tessellation of the given annotated fibres (for texture drawing)."""
    if fibre_ids.size == 0:
        return fibre_ids
    labels, membrane = geometry["labels"], geometry["membrane_labels"]
    inside = np.isin(labels, fibre_ids)
    return np.unique(membrane[inside & (membrane > 0)])


def write_section(out, modality: str, section_id: str, config: SynthConfig | None = None,
                  seed: int = 0, index: int = 0) -> dict:
    """Generate one section (:func:`generate_section`) and write its role TIFFs under ``out``.

    Returns ``{"modality", "section", "myofibres"}`` (the fibre count) for the manifest. The
    files depend only on the arguments, so sections can be written in any order or process.
    """
    roles = generate_section(section_id, modality, config, seed=seed, index=index)
    for role, array in roles.items():
        write_tiff(Path(out) / modality / SYNTH_FOLDERS[role] / f"{section_id}.tiff", array)
    return {"modality": modality, "section": section_id,
            "myofibres": int(len(np.unique(roles["myofibres"])) - 1)}


def renderer_fingerprint() -> str:
    """A hash of this package's sources (every module of the renderer): a dataset written by
    another renderer is regenerated."""
    import hashlib

    digest = hashlib.sha1()
    for path in sorted(Path(__file__).parent.glob("*.py")):
        digest.update(path.name.encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:12]


def default_workers() -> int:
    """Local processes for :func:`write_dataset`: the CPU cores this process may use, at
    most 4 (1 on a single core)."""
    return max(1, min(4, available_cores()))


def _importing_parents_script() -> bool:
    """True in a spawned process that is still running its parent's ``__main__`` script
    (the script has no ``if __name__ == "__main__":`` guard, so its top level runs again
    there; ``multiprocessing`` marks that phase with ``_inheriting``, as its own check does)."""
    import multiprocessing

    return bool(getattr(multiprocessing.current_process(), "_inheriting", False))


def _write_in_processes(out: Path, items, config, seed: int, workers: int, bar):
    """Sections written by ``workers`` spawned processes, in the config's order; None when
    processes cannot be started here (e.g. a script without a ``__main__`` guard), and the
    caller writes them in this process instead."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor
    from concurrent.futures.process import BrokenProcessPool

    try:
        with ProcessPoolExecutor(max_workers=min(workers, len(items)),
                                 mp_context=multiprocessing.get_context("spawn")) as pool:
            futures = [pool.submit(write_section, str(out.resolve()), modality, section_id,
                                   config, seed, index)
                       for index, (modality, section_id) in enumerate(items)]
            sections = []
            for future in futures:
                sections.append(future.result())
                bar.update(1)
        return sections
    except (BrokenProcessPool, RuntimeError, OSError) as error:
        log.warning("synthetic NCL-SM: cannot write sections in %d processes (%s); writing "
                    "them in this process", workers, " ".join(str(error).split())[:200])
        return None


def write_dataset(out, config: SynthConfig | None = None, seed: int = 0, force: bool = False,
                  progress: bool = True, client=None, workers: int = 1) -> Path:
    """Write a synthetic NCL-SM dataset in the real layout (``IMC/`` and ``IF/`` role folders).

    Idempotent: when ``out`` already holds a dataset made with the same config, seed and
    renderer (:func:`renderer_fingerprint`) it is kept as is (``force=True`` regenerates). A
    manifest ``synth_manifest.json`` records the config, seed and per-section fibre counts.

    ``client``: a :class:`distributed.Client`; each section is then written by a task on its
    cluster (the workers must see ``out`` at the same path). The files are byte-identical to
    a run in this process.

    ``workers`` > 1 (without a client): sections are written by that many local processes
    (:class:`concurrent.futures.ProcessPoolExecutor`, spawned), again byte-identical. From
    a script without an ``if __name__ == "__main__":`` guard (whose top level each spawned
    process runs again) the workers stop at once and this process writes the sections,
    with a warning.
    """
    from tqdm.auto import tqdm

    if _importing_parents_script():
        # a worker of write_dataset(workers > 1) started from a script without a __main__
        # guard re-runs the script; stop it here (the parent then writes every section
        # itself) instead of writing the whole dataset again in every worker
        raise RuntimeError("write_dataset was called while a spawned process imported its "
                           "parent's script; put the script's top level under "
                           "`if __name__ == \"__main__\":` to write in several processes")
    config = config or SynthConfig()
    out = Path(out)
    manifest_path = out / "synth_manifest.json"
    wanted = {"generator": "nclsm.synth", "version": 2, "renderer": renderer_fingerprint(),
              "seed": seed, "config": config.to_dict()}
    if manifest_path.is_file() and not force:
        existing = json.loads(manifest_path.read_text())
        if {k: existing.get(k) for k in wanted} == wanted:
            log.info("synthetic dataset in %s is up to date", out)
            return out
    if out.exists() and any(out.iterdir()):
        if not force and not manifest_path.is_file():
            raise FileExistsError(f"{out}: folder exists and is not a synthetic dataset; choose "
                                  "another --out or pass --force to overwrite")
        for modality in ("IMC", "IF"):
            shutil.rmtree(out / modality, ignore_errors=True)
    items = config.section_ids()
    bar = tqdm(total=len(items), desc="synthetic NCL-SM", disable=not progress)
    with bar:
        sections = None
        if client is None and int(workers) > 1 and len(items) > 1:
            sections = _write_in_processes(out, items, config, seed, int(workers), bar)
        if client is None:
            if sections is None:
                sections = []
                bar.reset()
                for index, (modality, section_id) in enumerate(items):
                    sections.append(write_section(out, modality, section_id, config, seed,
                                                  index))
                    bar.update(1)
        else:
            from distributed import as_completed

            futures = [client.submit(write_section, str(out.resolve()), modality, section_id,
                                     config, seed, index, pure=False)
                       for index, (modality, section_id) in enumerate(items)]
            for _ in as_completed(futures):
                bar.update(1)
            sections = client.gather(futures)  # in the config's order, as in this process
    if config.splits is not None:
        import yaml

        write_text(out / "nclsm_splits.yaml", yaml.safe_dump(config.splits))
    wanted["sections"] = sections
    write_text(manifest_path, json.dumps(wanted, indent=2))
    return out
