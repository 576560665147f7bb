"""The NCL-SM data layer: role folders, sections, splits and validation.

NCL-SM is laid out as ``<root>/IMC/<role folder>/<section>.tiff`` and the same
under ``IF/``. Only three role folder names are documented (``Mask_All_AM``,
``Mask_AM_vs_NAM``, ``Mask_QA``); the others are found through
:data:`ROLE_CANDIDATES` (exact names first, then keywords), which a user can
override with a small YAML file (``nclsm_roles.yaml`` in the dataset root or
a path passed to :class:`Dataset`)::

    # nclsm_roles.yaml: role -> folder name, for all modalities or per modality
    myofibres: Mask_All_Myofibres
    IF:
      image: Images_IF_RGB

Example
-------
>>> ds = Dataset("data/synthetic")                     # doctest: +SKIP
>>> [s.id for s in ds.sections(modality="IMC", split="test")]  # doctest: +SKIP
['P02', 'P06']
>>> labels = ds.section("P02").mask("myofibres")       # doctest: +SKIP
"""
from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from .io import IMAGE_SUFFIXES, DataError, read_array, read_shape

log = logging.getLogger(__name__)

MODALITIES = ("IMC", "IF")
ROLES = ("image", "image_raw", "myofibres", "analysable", "am_vs_nam", "ntm", "fam", "fr", "qa")
REQUIRED_ROLES = ("image", "myofibres")
MASK_ROLES = ("myofibres", "analysable", "am_vs_nam", "ntm", "fam", "fr", "qa")
#: Ring half-width k (pixels) of the paper metrics per modality, as in the published code.
HALF_WIDTH = {"IMC": 2, "IF": 6}

#: role -> exact folder names (case-insensitive) and keywords (matched to name tokens).
ROLE_CANDIDATES: dict[str, dict[str, list[str]]] = {
    "image": {"names": ["Images", "Image", "Images_RGB", "RGB", "Images_Contrast"],
              "keywords": ["image", "images", "rgb", "img"]},
    "image_raw": {"names": ["Images_Raw", "Raw_Images", "Raw"], "keywords": ["raw"]},
    "myofibres": {"names": ["Mask_All_Myofibres", "Mask_All_MF", "Mask_Myofibres", "Mask_All",
                            "Mask_All_Fibres", "Mask_All_Fibers", "Mask_GT"],
                  "keywords": ["myofibres", "myofibers", "myofibre", "myofiber", "mf", "fibres",
                               "fibers", "groundtruth", "gt"]},
    "analysable": {"names": ["Mask_All_AM"], "keywords": ["am", "analysable", "analyzable"]},
    "am_vs_nam": {"names": ["Mask_AM_vs_NAM"], "keywords": ["nam", "vs"]},
    "ntm": {"names": ["Mask_NTM", "Mask_All_NTM"], "keywords": ["ntm", "nontransverse", "transverse"]},
    "fam": {"names": ["Mask_FAM", "Mask_All_FAM"], "keywords": ["fam", "freezing", "artefact", "artifact"]},
    "fr": {"names": ["Mask_FR", "Mask_All_FR", "Mask_Folded"], "keywords": ["fr", "folded", "fold", "folds"]},
    "qa": {"names": ["Mask_QA"], "keywords": ["qa", "quality"]},
}
ROLES_FILE = "nclsm_roles.yaml"
SPLITS_FILE = "nclsm_splits.yaml"


def _tokens(name: str) -> list[str]:
    return [t for t in re.split(r"[^a-z0-9]+", name.lower()) if t]


def resolve_roles(folder_names: list[str], overrides: dict[str, str] | None = None) -> dict[str, str]:
    """Map roles to folder names.

    Parameters
    ----------
    folder_names : list of str
        Sub-folder names of one modality folder.
    overrides : dict, optional
        role -> folder name, taken as given (must exist).

    Returns
    -------
    dict
        role -> folder name for every role that was found; missing roles are absent.

    Examples
    --------
    >>> resolve_roles(["Images", "Mask_All_AM", "Mask_AM_vs_NAM", "Mask_NTM", "Mask_QA"])
    {'image': 'Images', 'analysable': 'Mask_All_AM', 'am_vs_nam': 'Mask_AM_vs_NAM', 'ntm': 'Mask_NTM', 'qa': 'Mask_QA'}
    """
    overrides = dict(overrides or {})
    unknown = set(overrides) - set(ROLES)
    if unknown:
        raise DataError(f"unknown role(s) {sorted(unknown)} in the roles override; known roles: "
                        f"{', '.join(ROLES)}")
    found: dict[str, str] = {}
    free = list(folder_names)
    for role, name in overrides.items():
        if name not in folder_names:
            raise DataError(f"roles override maps {role!r} to folder {name!r}, which does not "
                            f"exist (folders: {', '.join(sorted(folder_names)) or 'none'})")
        found[role] = name
        free.remove(name)
    # pass 1: exact names
    for role in ROLES:
        if role in found:
            continue
        wanted = {n.lower() for n in ROLE_CANDIDATES[role]["names"]}
        for name in free:
            if name.lower() in wanted:
                found[role] = name
                free.remove(name)
                break
    # pass 2: keywords on what is left; the raw image needs "raw", the image must not be raw
    for role in ROLES:
        if role in found:
            continue
        keywords = set(ROLE_CANDIDATES[role]["keywords"])
        matches = [n for n in free if keywords & set(_tokens(n))]
        if role == "image":
            matches = [n for n in matches if "raw" not in _tokens(n) and "mask" not in _tokens(n)]
        if len(matches) == 1:
            found[role] = matches[0]
            free.remove(matches[0])
        elif len(matches) > 1:
            log.warning("role %r is ambiguous between folders %s; name it in %s", role, matches,
                        ROLES_FILE)
    return {role: found[role] for role in ROLES if role in found}


def load_yaml(path: Path) -> dict:
    try:
        content = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as error:
        raise DataError(f"{path}: not valid YAML ({error})") from error
    if not isinstance(content, dict):
        raise DataError(f"{path}: expected a mapping at the top level")
    return content


def default_splits() -> dict[str, list[str]]:
    """The packaged default splits (test: IMC P02, P06 and IF S11, S60; validation: P04, S25)."""
    text = resources.files("nclsm_utils.config").joinpath("splits.yaml").read_text()
    return yaml.safe_load(text)


@dataclass
class Section:
    """One NCL-SM section: its id, modality and the files of its roles (read lazily)."""

    id: str
    modality: str
    files: dict[str, Path] = field(default_factory=dict)
    split: str = "train"

    @property
    def half_width(self) -> int:
        """Ring half-width k of the paper metrics: 2 for IMC, 6 for IF (pixels)."""
        return HALF_WIDTH[self.modality]

    @property
    def key(self) -> str:
        return f"{self.modality}/{self.id}"

    def has(self, role: str) -> bool:
        return role in self.files

    def path(self, role: str) -> Path:
        if role not in ROLES:
            raise KeyError(f"unknown role {role!r}; known roles: {', '.join(ROLES)}")
        if role not in self.files:
            where = next(iter(self.files.values())).parent.parent if self.files else self.modality
            raise DataError(f"section {self.key} has no {role!r} file in {where} (no folder for "
                            f"the role, or no {self.id}.tif(f)/.png in it); found roles: "
                            f"{', '.join(self.files) or 'none'}")
        return self.files[role]

    def shape(self, role: str | None = None) -> tuple[int, int]:
        """``(H, W)`` of a role's file (default: the myofibre mask, else the image) from its header."""
        if role is None:
            role = "myofibres" if self.has("myofibres") else "image"
        return read_shape(self.path(role))[:2]

    def image(self) -> np.ndarray:
        """The contrast-stretched RGB image, ``(H, W, 3)`` uint8 (R membrane, G mass, B 0)."""
        path = self.path("image")
        array = read_array(path)
        return as_rgb(array, path)

    def image_raw(self) -> np.ndarray:
        """The raw image as stored, ``(H, W, C)``: channel 0 membrane, channel 1 mass."""
        return read_array(self.path("image_raw"))

    def mask(self, role: str = "myofibres") -> np.ndarray:
        """A label mask ``(H, W)`` of integer dtype (0 = background)."""
        if role not in MASK_ROLES:
            raise KeyError(f"{role!r} is not a mask role; mask roles: {', '.join(MASK_ROLES)}")
        path = self.path(role)
        return as_labels(read_array(path), path)


def as_rgb(array: np.ndarray, path: Path | str = "<array>") -> np.ndarray:
    """Validate and convert an image to ``(H, W, 3)`` uint8 RGB."""
    if array.ndim == 2:
        raise DataError(f"{path}: expected an RGB image (H, W, 3), got a single channel "
                        f"{array.shape}; is this a mask in the image folder?")
    if array.ndim != 3 or array.shape[-1] not in (3, 4):
        raise DataError(f"{path}: expected an RGB image (H, W, 3), got shape {array.shape}")
    array = array[..., :3]
    if array.dtype != np.uint8:
        if np.issubdtype(array.dtype, np.floating) and not np.isfinite(array).all():
            raise DataError(f"{path}: image contains NaN or infinite values")
        top = float(array.max()) if array.size else 0.0
        scale = 255.0 / top if top > 0 else 0.0
        array = np.clip(array.astype(np.float32) * scale, 0, 255).astype(np.uint8)
    return array


def as_labels(array: np.ndarray, path: Path | str = "<array>") -> np.ndarray:
    """Validate a label mask: 2-D, integer (or integral float), non-negative."""
    if array.ndim == 3 and array.shape[-1] in (3, 4):
        raise DataError(f"{path}: expected a label mask (H, W) of integers, got a colour image "
                        f"{array.shape}; export the mask as a single-channel label image")
    if array.ndim != 2:
        raise DataError(f"{path}: expected a 2-D label mask, got shape {array.shape}")
    if array.dtype == bool:
        return array.astype(np.uint8)
    if np.issubdtype(array.dtype, np.floating):
        if not np.isfinite(array).all() or not np.all(np.mod(array, 1) == 0):
            raise DataError(f"{path}: expected an integer label mask, got non-integer float "
                            "values; save the mask with an integer dtype (uint16/uint32)")
        array = array.astype(np.int64)
    if not np.issubdtype(array.dtype, np.integer):
        raise DataError(f"{path}: expected an integer label mask, got dtype {array.dtype}")
    if array.size and array.min() < 0:
        raise DataError(f"{path}: label mask has negative values")
    return array


class Dataset:
    """An NCL-SM dataset folder (real or synthetic).

    Parameters
    ----------
    root : path-like
        Folder holding ``IMC/`` and/or ``IF/``.
    roles : path-like or dict, optional
        Role -> folder overrides (YAML file or mapping); default ``<root>/nclsm_roles.yaml``
        when present.
    splits : path-like or dict, optional
        ``{"test": [...], "validation": [...]}``; every other section is ``train``.
        Default ``<root>/nclsm_splits.yaml`` when present, else the packaged default.
    """

    def __init__(self, root, roles=None, splits=None):
        self.root = Path(root)
        if not self.root.is_dir():
            raise DataError(f"{self.root}: data folder not found. Put the NCL-SM download here "
                            "(with IMC/ and IF/ inside) or create synthetic data with "
                            f"`nclsm synth --out {self.root}`.")
        self.modalities = [m for m in MODALITIES if (self.root / m).is_dir()]
        if not self.modalities:
            raise DataError(f"{self.root}: no IMC/ or IF/ folder inside. Expected the NCL-SM "
                            "layout <root>/IMC/<role folders> and <root>/IF/<role folders>.")
        self.role_overrides = self._read_roles(roles)
        self.splits = self._read_splits(splits)
        self.role_folders: dict[str, dict[str, str]] = {}
        self._sections: dict[str, Section] = {}
        self._stray: list[tuple[str, Path]] = []
        for modality in self.modalities:
            self._scan(modality)

    # -- construction -------------------------------------------------------------------
    def _read_roles(self, roles):
        if roles is None:
            candidate = self.root / ROLES_FILE
            roles = load_yaml(candidate) if candidate.is_file() else {}
        elif not isinstance(roles, dict):
            roles = load_yaml(Path(roles))
        return roles

    def _read_splits(self, splits):
        if splits is None:
            candidate = self.root / SPLITS_FILE
            splits = load_yaml(candidate) if candidate.is_file() else default_splits()
        elif not isinstance(splits, dict):
            splits = load_yaml(Path(splits))
        return {name: [str(s) for s in (ids or [])] for name, ids in splits.items()}

    def _scan(self, modality: str) -> None:
        folder = self.root / modality
        names = sorted(p.name for p in folder.iterdir() if p.is_dir())
        overrides = {k: v for k, v in self.role_overrides.items() if k in ROLES}
        overrides.update(self.role_overrides.get(modality, {}) or {})
        roles = resolve_roles(names, overrides)
        self.role_folders[modality] = roles
        for role, name in roles.items():
            for path in sorted((folder / name).iterdir()):
                if path.name.startswith(".") or path.suffix.lower() not in IMAGE_SUFFIXES:
                    continue
                section_id = path.stem
                key = f"{modality}/{section_id}"
                section = self._sections.get(key)
                if section is None:
                    section = Section(section_id, modality, split=self.split_of(section_id))
                    self._sections[key] = section
                section.files[role] = path

    def split_of(self, section_id: str) -> str:
        for name in ("test", "validation"):
            if section_id in self.splits.get(name, []):
                return name
        return "train"

    # -- access -------------------------------------------------------------------------
    def sections(self, modality: str | None = None, split: str | None = None,
                 ids=None) -> list[Section]:
        """Sections sorted by modality (IMC first) then id, optionally filtered."""
        if modality is not None and modality not in MODALITIES:
            raise ValueError(f"modality must be one of {MODALITIES}, got {modality!r}")
        if split is not None and split not in ("train", "validation", "test"):
            raise ValueError(f"split must be train, validation or test, got {split!r}")
        chosen = [s for s in self._sections.values()
                  if (modality is None or s.modality == modality)
                  and (split is None or s.split == split)
                  and (ids is None or s.id in ids)]
        if ids is not None:
            missing = set(ids) - {s.id for s in chosen}
            if missing:
                raise DataError(f"{self.root}: no section(s) {sorted(missing)}; known: "
                                f"{', '.join(s.id for s in self.sections())}")
        return sorted(chosen, key=lambda s: (MODALITIES.index(s.modality), s.id))

    def section(self, section_id: str) -> Section:
        """The section with this id (``P02`` or ``IMC/P02``)."""
        for section in self._sections.values():
            if section_id in (section.id, section.key):
                return section
        raise DataError(f"{self.root}: no section {section_id!r}; known: "
                        f"{', '.join(s.id for s in self.sections())}")

    def __len__(self) -> int:
        return len(self._sections)

    def __repr__(self) -> str:
        return f"Dataset({str(self.root)!r}, sections={len(self)}, modalities={self.modalities})"

    # -- validation ---------------------------------------------------------------------
    def check(self, read_masks: bool = True) -> pd.DataFrame:
        """Check every section and role; collect all problems instead of stopping at the first.

        Returns
        -------
        DataFrame
            One row per section with a column per role holding ``found``, ``missing``,
            ``shape mismatch`` or ``unreadable``, plus ``problems`` (a ``; ``-joined list of
            messages naming files) and ``ok`` (False when a required role is missing or any
            file is bad).
        """
        rows = []
        for section in self.sections():
            row = {"modality": section.modality, "section": section.id, "split": section.split}
            problems = []
            shapes = {}
            for role in ROLES:
                if role not in self.role_folders[section.modality]:
                    row[role] = "no folder"
                    if role in REQUIRED_ROLES:
                        problems.append(f"{self.root / section.modality}/: no folder for required role {role!r}")
                    continue
                if not section.has(role):
                    row[role] = "missing"
                    if role in REQUIRED_ROLES:
                        problems.append(f"{section.key}: required role {role!r} missing (expected "
                                        f"{self.root / section.modality / self.role_folders[section.modality][role] / section.id}.tiff)")
                    continue
                path = section.files[role]
                try:
                    shapes[role] = read_shape(path)
                    if read_masks and role in MASK_ROLES:
                        as_labels(read_array(path), path)
                    row[role] = "found"
                except DataError as error:
                    row[role] = "unreadable"
                    problems.append(str(error))
            reference = shapes.get("myofibres", shapes.get("image"))
            for role, shape in shapes.items():
                if reference is not None and tuple(shape[:2]) != tuple(reference[:2]):
                    row[role] = "shape mismatch"
                    problems.append(f"{section.files[role]}: shape {shape[:2]} differs from the "
                                    f"section's {tuple(reference[:2])}; all roles of a section "
                                    "must have the same height and width")
            row["ok"] = not problems
            row["problems"] = "; ".join(problems)
            rows.append(row)
        for modality in MODALITIES:
            if modality in self.modalities and not any(s.modality == modality for s in self.sections()):
                rows.append({"modality": modality, "section": "-", "split": "-", "ok": False,
                             "problems": f"{self.root / modality}: no section files found"})
        return pd.DataFrame(rows)


def find_ncl_sm(data_dir: Path | str = "data") -> Path | None:
    """Return the NCL-SM root under ``data_dir`` (itself or ``data_dir/NCL-SM``) if present."""
    data_dir = Path(data_dir)
    for candidate in (data_dir, data_dir / "NCL-SM", data_dir / "ncl-sm", data_dir / "NCL_SM"):
        if any((candidate / m).is_dir() for m in MODALITIES):
            return candidate
    return None
