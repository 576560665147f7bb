"""Parametric synthetic NCL-SM: packed myofibres, their classes and IMC/IF-like images.

No machine learning: hand-designed geometry and textures give pixel-perfect
labels (in the spirit of SYNTA), and a simple physical imaging model (optical
blur, photon shot noise, read noise) gives realistic pixel statistics.

Geometry
    Seeds with log-normal radii are packed by dart throwing; a compact
    watershed on smooth noise grows them into polygonal fibres with irregular
    borders; thin gaps separate neighbours (endomysium); a smooth random
    tissue mask cuts the section into fragments with empty space between.
    Patches of obliquely cut (elongated) fibres are pasted in.
Classes (as NCL-SM defines them)
    non-transverse (NTM): elongated, cut by the image border, too small or too
    large, or of low solidity (cut by the tissue edge); freezing artefact
    (FAM): a few percent of the rest, rendered with leopard-spot holes;
    folded regions (FR): blobs of doubled, mesh-like membrane where no fibre
    is annotated (as in the real dataset's overview figure).
QA
    A duplicate annotation of about 5 % of the fibres whose borders move by a
    smooth random displacement (human-vs-human IoU about 0.95).
Images
    R = membrane marker (bright at fibre borders and gaps), G = granular
    mitochondrial-mass texture with per-fibre (fibre type) intensity, B = 0;
    blurred by a Gaussian PSF, photon-counted (Poisson) with Gaussian read
    noise into a raw uint16 image, then contrast-stretched 5-95 % to uint8.

Modules (everything is importable from this package)
    :mod:`~nclsm_utils.synth.config` (:class:`SynthConfig`, :class:`ModalityParams`, role
    folders and class values), :mod:`~nclsm_utils.synth.geometry` (fibre packings, tissue,
    perimysium, folded regions, NTM/FAM classes, QA annotation),
    :mod:`~nclsm_utils.synth.appearance` (:class:`Appearance` and the noise-free signals),
    :mod:`~nclsm_utils.synth.acquisition` (blur, noise, stretch, coarsening, JPEG, and
    :func:`render_image`) and :mod:`~nclsm_utils.synth.writer` (:func:`generate_section`,
    :func:`write_section`, :func:`write_dataset`, :func:`renderer_fingerprint`).

Example
-------
>>> from nclsm_utils.synth import SynthConfig, generate_section
>>> sec = generate_section("P02", "IMC", SynthConfig.preset("tiny"), seed=0)
>>> sec["image"].shape, sec["image"].dtype
((192, 192, 3), dtype('uint8'))
>>> int(sec["myofibres"].max()) > 10
True
"""
from __future__ import annotations

# ruff: noqa: F401  (this module only re-exports the submodules' names)
# helpers the submodules use, importable from here too
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from scipy import ndimage

from ..core.io import write_text, write_tiff
from .acquisition import (
    _percentiles,
    acquire,
    compose_rgb,
    render_image,
    render_raw,
    stretch_to_uint8,
)
from .appearance import (
    Appearance,
    _coarse_field,
    _fibre_tables,
    dark_fibres,
    _noise_field,
    _render_window,
    render_signals,
)
from .config import (
    AM_CLASS,
    DEFAULT_IF_IDS,
    DEFAULT_IMC_IDS,
    NAM_CLASS,
    SYNTH_FOLDERS,
    ModalityParams,
    SynthConfig,
    _extend_ids,
)
from .geometry import (
    GeometryDraw,
    _disk,
    blob_mask,
    carve_gaps,
    classify_fibres,
    draw_geometry,
    fibre_geometry,
    folded_regions,
    fraction_per_label,
    pack_seeds,
    perimysium,
    qa_annotation,
    smooth_noise,
    stretched_tessellation,
    tessellate,
    tissue_mask,
)
from .writer import (
    _membrane_ids_of,
    _write_in_processes,
    default_workers,
    generate_section,
    if_ntm_flags,
    imc_ntm_flags,
    log,
    ntm_scale,
    renderer_fingerprint,
    write_dataset,
    write_section,
)
