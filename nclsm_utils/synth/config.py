"""Configuration of the synthetic NCL-SM: dataset size, per-modality parameters and the
role folder / class constants shared by the generator's other modules."""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, replace

#: Role -> folder name written by the generator (the three documented NCL-SM names included).
SYNTH_FOLDERS = {
    "image": "Images",
    "image_raw": "Images_Raw",
    "myofibres": "Mask_All_Myofibres",
    "analysable": "Mask_All_AM",
    "am_vs_nam": "Mask_AM_vs_NAM",
    "ntm": "Mask_NTM",
    "fam": "Mask_FAM",
    "fr": "Mask_FR",
    "qa": "Mask_QA",
}
#: Values of the AM-vs-NAM class mask.
AM_CLASS, NAM_CLASS = 1, 2

DEFAULT_IMC_IDS = ["C01", "C04", "P01", "P02", "P04", "P06", "P07", "P09"]
DEFAULT_IF_IDS = ["S11", "S14", "S25", "S36", "S47", "S60"]


@dataclass
class ModalityParams:
    """Imaging and geometry parameters of one modality (lengths in pixels)."""

    shape: tuple[int, int]
    fibre_diameter: float          # mean fibre diameter
    size_cv: float = 0.28          # log-normal sigma of fibre radii
    gap: int = 1                   # pixels removed on each side of a fibre border
    membrane_width: float = 1.0    # Gaussian width of the membrane signal inside a fibre
    psf_sigma: float = 0.8         # optical blur
    photons: float = 40.0          # expected photon count at signal 1.0
    read_noise: float = 2.0        # Gaussian read noise (counts)
    offset: float = 10.0           # camera/detector offset (counts)


@dataclass
class SynthConfig:
    """Size and class proportions of a synthetic NCL-SM dataset."""

    n_imc: int = 8
    n_if: int = 6
    imc: ModalityParams = field(default_factory=lambda: ModalityParams(
        shape=(384, 384), fibre_diameter=34.0, gap=1, membrane_width=1.0, psf_sigma=0.8,
        photons=40.0, read_noise=2.0))
    if_: ModalityParams = field(default_factory=lambda: ModalityParams(
        shape=(640, 640), fibre_diameter=72.0, gap=2, membrane_width=1.6, psf_sigma=1.3,
        photons=250.0, read_noise=4.0))
    tissue_coverage: float = 0.78      # fraction of the section covered by tissue
    oblique_fraction: float = 0.08     # fraction of the area holding obliquely cut fibres
    oblique_stretch: tuple[float, float] = (2.0, 3.2)
    fam_fraction: float = 0.05         # fraction of transverse fibres with freezing artefact
    fr_probability: float = 0.8        # chance a section has folded regions
    qa_fraction: float = 0.05          # fraction of fibres annotated twice
    qa_amplitude: float = 0.035        # boundary displacement std, relative to fibre radius
    imc_ids: list[str] = field(default_factory=lambda: list(DEFAULT_IMC_IDS))
    if_ids: list[str] = field(default_factory=lambda: list(DEFAULT_IF_IDS))
    splits: dict | None = None         # written as nclsm_splits.yaml when given
    #: domain randomisation: every section draws its geometry extras (fibre size, gaps,
    #: perimysium, sparseness, rounding) and its :class:`Appearance` from wide ranges
    randomise: bool = True
    #: how far a section's look may stray from the calibrated one (see Appearance.draw)
    look_spread: float = 0.6
    #: Appearance fields set on every section after its look is drawn, e.g.
    #: ``{"dark_fraction": 0.15}`` for a set rich in dark fibres
    look_overrides: dict | None = None

    @classmethod
    def preset(cls, name: str = "default") -> "SynthConfig":
        """``default`` (the report's data), ``tiny`` (tests and quick runs; not randomised) or
        ``pretrain`` (U-Net pre-training)."""
        if name == "default":
            return cls()
        if name == "tiny":
            # the calibrated look and fixed geometry: small, stable fixtures for tests
            config = cls(n_imc=2, n_if=2, imc_ids=["P01", "P02"], if_ids=["S10", "S11"],
                         randomise=False)
            config.imc = replace(config.imc, shape=(192, 192))
            config.if_ = replace(config.if_, shape=(256, 256), fibre_diameter=48.0)
            return config
        if name == "pretrain":
            return cls(n_imc=12, n_if=8, imc_ids=[f"X{i:02d}" for i in range(1, 13)],
                       if_ids=[f"Y{i:02d}" for i in range(1, 9)],
                       splits={"test": [], "validation": []}, look_spread=1.0)
        raise ValueError(f"unknown synthetic preset {name!r}; use default, tiny or pretrain")

    def params(self, modality: str) -> ModalityParams:
        if modality == "IMC":
            return self.imc
        if modality == "IF":
            return self.if_
        raise ValueError(f"modality must be IMC or IF, got {modality!r}")

    def section_ids(self) -> list[tuple[str, str]]:
        ids = [("IMC", s) for s in _extend_ids(self.imc_ids, self.n_imc, "Q")]
        ids += [("IF", s) for s in _extend_ids(self.if_ids, self.n_if, "T")]
        return ids

    def to_dict(self) -> dict:
        return json.loads(json.dumps(asdict(self)))


def _extend_ids(ids: list[str], n: int, prefix: str) -> list[str]:
    out = list(ids[:n])
    i = 1
    while len(out) < n:
        candidate = f"{prefix}{i:02d}"
        if candidate not in out:
            out.append(candidate)
        i += 1
    return out
