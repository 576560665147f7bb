"""The curation models (:class:`CurationModels`): training, caching, loading and curating.

Also :class:`ArraySection`, an in-memory section the curation functions take like a
dataset section.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import time
from pathlib import Path

import numpy as np
import pandas as pd

from ..core.imaging import label_areas
from ..core.io import DataError, write_text
from .classifiers import (CurationError, CurationParams, FibreClassifier,
                          FoldedRegionClassifier, NotTrainedError)
from .features import (FAM_FEATURES, NTM_FEATURES, _as_rgb, _check_mask, _fraction_inside,
                       class_flags, fam_features, fibre_diameter, ntm_features)

log = logging.getLogger(__package__)  # the package's logger (nclsm_utils.curation)

#: Masks returned by :func:`curate`.
CURATED_ROLES = ("myofibres", "fr", "fr_fibres", "ntm", "ntm_rule", "fam", "analysable",
                 "am_vs_nam")
#: Values of the AM-vs-NAM class mask (as in the dataset).
AM_CLASS, NAM_CLASS = 1, 2


# ============================================================================ sections
class ArraySection:
    """In-memory section with the :class:`~nclsm_utils.dataset.Section` reading interface.

    Wraps the dict of :func:`nclsm_utils.synth.generate_section` (or any role -> array
    mapping) so that the curation functions take it like a dataset section.

    >>> from nclsm_utils.synth import SynthConfig, generate_section
    >>> sec = ArraySection(generate_section("P02", "IMC", SynthConfig.preset("tiny")), "IMC", "P02")
    >>> sec.image().shape, sec.has("fam")
    ((192, 192, 3), True)
    """

    def __init__(self, arrays: dict, modality: str = "IMC", id: str = "section",
                 split: str = "train", ntm_scale: float | None = None):
        self.arrays = dict(arrays)
        self.modality = modality
        self.id = id
        self.split = split
        #: NCL-SM IF pixels to this section's pixels (:func:`section_ntm_scale`); None: 1
        self.ntm_scale = ntm_scale

    @property
    def key(self) -> str:
        return f"{self.modality}/{self.id}"

    def has(self, role: str) -> bool:
        return role in self.arrays

    def image(self) -> np.ndarray:
        return self.arrays["image"]

    def mask(self, role: str = "myofibres") -> np.ndarray:
        if role not in self.arrays:
            raise DataError(f"section {self.key} has no {role!r} array")
        return np.asarray(self.arrays[role])

    def shape(self, role=None):
        return self.image().shape[:2]

    def __repr__(self) -> str:
        return f"ArraySection({self.key!r}, roles={sorted(self.arrays)})"


# ============================================================================ definitions
#: How each class is decided, per modality (``"auto"`` in :func:`curate`): NCL-SM's IF NTM
#: labels are the published rule's output, so IF takes the rule (at the section's scale);
#: IMC's NTM labels are annotations, learned from the synthetic IMC sections.
NTM_DEFINITION = {"IF": "rule", "IMC": "learned"}


def section_ntm_scale(section, scale: float | None = None) -> float:
    """NCL-SM IF pixels to ``section``'s pixels, for the published NTM rule's area thresholds.

    In this order: ``scale`` when given; the section's own ``ntm_scale`` attribute
    (:class:`ArraySection`); a synthetic dataset's scale (the IF fibre diameter of the config
    in its ``synth_manifest.json`` over
    :data:`~nclsm_utils.metrics.morphology.NTM_REFERENCE_DIAMETER`); otherwise 1 (a real
    NCL-SM section: the rule's own pixels).

    >>> section_ntm_scale(ArraySection({}, "IF"), 0.5), section_ntm_scale(ArraySection({}, "IF"))
    (0.5, 1.0)
    """
    if scale is None:
        scale = getattr(section, "ntm_scale", None)
    if scale is None:
        scale = _manifest_scale(getattr(section, "files", None) or {})
    scale = 1.0 if scale is None else float(scale)
    if not np.isfinite(scale) or scale <= 0:
        raise ValueError(f"the NTM scale must be a positive number, got {scale!r}")
    return scale


def _manifest_scale(files: dict) -> float | None:
    """The IF NTM scale recorded by a synthetic dataset beside these files (None: not one).

    A dataset of :mod:`nclsm_utils.synth.fullsize` records each section's fibre diameter
    (``sections[i].fibre_diameter``); one of :func:`nclsm_utils.synth.write_dataset` records
    one IF diameter for all sections (``config.if_.fibre_diameter``).
    """
    from ..metrics.morphology import NTM_REFERENCE_DIAMETER

    if not files:
        return None
    path = Path(next(iter(files.values())))
    manifest = path.parent.parent.parent / "synth_manifest.json"
    if not manifest.is_file():
        return None
    try:
        info = json.loads(manifest.read_text())
        for row in info.get("sections") or []:
            if (row.get("section"), row.get("modality")) == (path.stem, path.parent.parent.name) \
                    and "fibre_diameter" in row:
                return float(row["fibre_diameter"]) / NTM_REFERENCE_DIAMETER
        return float(info["config"]["if_"]["fibre_diameter"]) / NTM_REFERENCE_DIAMETER
    except (ValueError, KeyError, TypeError, AttributeError) as error:
        raise DataError(f"{manifest}: no IF fibre diameter in the synthetic dataset's "
                        f"manifest ({error}); regenerate it with nclsm synth") from error


def ntm_definition(modality: str | None, ntm: str = "auto") -> str:
    """Which NTM decision a section gets: ``"rule"`` or ``"learned"`` (``"auto"``:
    :data:`NTM_DEFINITION` of the modality, learned when unknown).

    >>> ntm_definition("IF"), ntm_definition("IMC"), ntm_definition("IF", "learned")
    ('rule', 'learned', 'learned')
    """
    if ntm not in ("auto", "learned", "rule"):
        raise ValueError(f"ntm must be 'auto', 'learned' or 'rule', got {ntm!r}")
    if ntm != "auto":
        return ntm
    return NTM_DEFINITION.get(str(modality), "learned")


def definitions_table(modality: str | None, ntm: str = "auto", scale: float = 1.0,
                      diameter: float | None = None) -> pd.DataFrame:
    """Which definition each curation class used and at what scale (one row per class).

    >>> definitions_table("IF", scale=0.2)[["class", "definition"]].values.tolist()
    [['FR', 'learned'], ['NTM', 'rule'], ['FAM', 'learned']]
    """
    from ..metrics.morphology import ntm_thresholds
    from .classifiers import WORKING_DIAMETER

    used = ntm_definition(modality, ntm)
    t = ntm_thresholds(scale)
    fibre = f"{diameter:.0f} px fibres" if diameter else "the section's fibres"
    ntm_scale = (f"published rule x {scale:g} (area {t['area_min']:.4g}-{t['area_max']:.4g} px, "
                 "ratios unchanged)" if used == "rule"
                 else "scale-free shape features (any fibre size)")
    return pd.DataFrame({
        "class": ["FR", "NTM", "FAM"],
        "definition": ["learned", used, "learned"],
        "scale": [f"pixel classifier at {WORKING_DIAMETER:g} px fibres ({fibre} resampled)",
                  ntm_scale, f"mass-channel features relative to {fibre}"],
        "modality": [modality] * 3,
    })


def _file_facts(section) -> list:
    files = getattr(section, "files", None)
    if not files:
        return [section.key]
    facts = [section.key]
    for role in sorted(files):
        path = Path(files[role])
        try:
            facts.append([role, path.stat().st_size])
        except OSError:
            facts.append([role, None])
    return facts


# ============================================================================ models
MODEL_FILES = {"ntm": "ntm.joblib", "fam": "fam.joblib", "fr": "fr.joblib"}


def training_tables(section, overlap: float = 0.5, image: np.ndarray | None = None) -> dict:
    """Per-fibre feature tables of a section's ground-truth myofibres with their targets.

    ``image`` is the section's image when already read. Returns ``{"ntm": DataFrame,
    "fam": DataFrame, "diameter": float}``; each table has a ``section`` column and, when
    the section has the class mask, a bool ``target`` column (a fibre is in the class when
    more than ``overlap`` of its area is in the mask).
    """
    labels = section.mask("myofibres")
    diameter = fibre_diameter(labels, section.modality)
    ntm_t = ntm_features(labels)
    fam_t = fam_features(section.image() if image is None else image, labels, diameter)
    for table, role in ((ntm_t, "ntm"), (fam_t, "fam")):
        table.insert(0, "section", section.key)
        if section.has(role):
            table["target"] = class_flags(labels, section.mask(role), overlap).to_numpy()
    return {"ntm": ntm_t, "fam": fam_t, "diameter": diameter}


def _concat(tables, columns) -> pd.DataFrame:
    if not tables:
        return pd.DataFrame({c: pd.Series([], dtype=bool if c == "target" else "float64")
                             for c in columns})
    return pd.concat(tables, ignore_index=True)


class CurationModels:
    """The three learned curation models (NTM, FAM, FR) with their parameters.

    >>> models = CurationModels()
    >>> models.fitted
    False
    """

    def __init__(self, params: CurationParams | None = None):
        self.params = params or CurationParams()
        p = self.params
        self.ntm = FibreClassifier("NTM", NTM_FEATURES, seed=p.seed, n_estimators=p.n_estimators,
                                   min_samples_leaf=p.min_samples_leaf, threshold=p.ntm_threshold,
                                   n_jobs=p.n_jobs)
        self.fam = FibreClassifier("FAM", FAM_FEATURES, seed=p.seed, n_estimators=p.n_estimators,
                                   min_samples_leaf=p.min_samples_leaf, threshold=p.fam_threshold,
                                   n_jobs=p.n_jobs)
        self.fr = FoldedRegionClassifier(p)
        self.train_ids: list[str] = []
        self.info: dict = {}
        self.path: Path | None = None

    @property
    def fitted(self) -> bool:
        return self.ntm.fitted and self.fam.fitted and self.fr.fitted

    def require_fitted(self) -> None:
        for name in ("ntm", "fam", "fr"):
            if not getattr(self, name).fitted:
                raise NotTrainedError(f"the {name.upper()} curation classifier is not trained: "
                                      "train with train_models() / CurationModels.fit() or load "
                                      "with CurationModels.load()")

    def fit(self, sections) -> "CurationModels":
        """Train all three models on ``sections`` (each needs ``image`` and ``myofibres``;
        ``ntm``, ``fam`` and ``fr`` masks label the targets)."""
        sections = list(sections)
        if not sections:
            raise CurationError("no training sections: the dataset's train split is empty")
        start = time.perf_counter()
        self.train_ids = sorted(s.key for s in sections)
        ntm_tables, fam_tables, fr_samples = [], [], []
        # the FR classifier's pixel samples are drawn in the same order as
        # FoldedRegionClassifier.fit draws them, from the image read once per section
        rng = np.random.default_rng(self.params.seed)
        for section in sections:
            image = section.image()
            tables = training_tables(section, self.params.class_overlap, image=image)
            fr_samples.append(self.fr.section_samples(section, rng, tables["diameter"], image))
            del image
            if "target" in tables["ntm"]:
                ntm_tables.append(tables["ntm"])
            else:
                log.warning("%s: no NTM mask; not used to train the NTM classifier", section.key)
            if "target" in tables["fam"]:
                fam_tables.append(tables["fam"])
            else:
                log.warning("%s: no FAM mask; not used to train the FAM classifier", section.key)
        # the learned NTM classifier learns annotated NTM (IMC); IF's NTM labels are the
        # published rule's output, which curation applies directly (NTM_DEFINITION)
        learned = [t for t in ntm_tables if len(t) and NTM_DEFINITION.get(
            str(t["section"].iloc[0]).split("/")[0]) == "learned"]
        if learned and len(learned) < len(ntm_tables):
            log.info("NTM classifier: trained on the %d section(s) whose NTM labels are "
                     "annotations (IF sections follow the published rule)", len(learned))
        ntm_all = _concat(learned or ntm_tables, [*NTM_FEATURES, "target"])
        fam_all = _concat(fam_tables, [*FAM_FEATURES, "target"])
        self.ntm.fit(ntm_all, ntm_all["target"].astype(bool))
        self.fam.fit(fam_all, fam_all["target"].astype(bool))
        self.fr.fit_sections(fr_samples)
        self.info = {"train": self.train_ids, "ntm_fibres": self.ntm.n_train,
                     "ntm_positive": self.ntm.n_positive, "fam_fibres": self.fam.n_train,
                     "fam_positive": self.fam.n_positive, "fr_pixels": self.fr.n_samples,
                     "seconds": round(time.perf_counter() - start, 2)}
        log.info("curation models trained on %d sections in %.1f s", len(sections),
                 self.info["seconds"])
        return self

    # -- persistence -----------------------------------------------------------------------
    def save(self, folder) -> Path:
        """Write the models (joblib) and ``model.json`` into ``folder`` (atomically per file)."""
        import joblib

        from ..core.io import atomic_path

        self.require_fitted()
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        for name, filename in MODEL_FILES.items():
            with atomic_path(folder / filename) as tmp:
                joblib.dump(getattr(self, name), tmp)
        import sklearn

        write_text(folder / "model.json", json.dumps({
            "name": "curation", "params": self.params.key(), "info": self.info,
            "sklearn": sklearn.__version__}, indent=2, default=str))
        self.path = folder
        return folder

    @classmethod
    def load(cls, folder) -> "CurationModels":
        """Read models written by :meth:`save`."""
        import joblib

        folder = Path(folder)
        marker = folder / "model.json"
        if not marker.is_file():
            raise DataError(f"{folder}: no curation models here (expected model.json and "
                            f"{', '.join(MODEL_FILES.values())}); train with train_models()")
        meta = json.loads(marker.read_text())
        params = _params_from_dict(meta.get("params", {}))
        models = cls(params)
        for name, filename in MODEL_FILES.items():
            path = folder / filename
            try:
                setattr(models, name, joblib.load(path))
            except Exception as error:  # joblib/pickle raise many types for bad files
                raise DataError(f"{path}: cannot load the {name.upper()} model ({error}); delete "
                                "the folder to retrain") from error
        models.info = meta.get("info", {})
        models.train_ids = list(models.info.get("train", []))
        models.path = folder
        return models


def _params_from_dict(values: dict) -> CurationParams:
    fields = {f.name for f in dataclasses.fields(CurationParams)}
    kept = {k: (tuple(v) if isinstance(v, list) else v) for k, v in values.items() if k in fields}
    return CurationParams(**kept)


def models_key(sections, params: CurationParams) -> str:
    """Hash of the parameters and the training sections (ids and file sizes)."""
    payload = {"params": params.key(), "train": sorted((_file_facts(s) for s in sections),
                                                       key=lambda f: f[0]), "version": 2}
    text = json.dumps(payload, sort_keys=True, default=str)
    return hashlib.sha1(text.encode()).hexdigest()[:12]


def models_dir(workdir, sections, params: CurationParams | None = None) -> Path:
    """``<workdir>/models/curation-<hash>/`` for these training sections and parameters."""
    params = params or CurationParams()
    return Path(workdir) / "models" / f"curation-{models_key(list(sections), params)}"


def train_models(sections, workdir="data", params: CurationParams | None = None,
                 force: bool = False, cache: bool = True) -> CurationModels:
    """Train the curation models on ``sections`` (the train split), or load them from cache.

    Parameters
    ----------
    sections : iterable of Section (or :class:`ArraySection`)
    workdir : path-like
        Models are cached in ``<workdir>/models/curation-<hash>/``.
    params : CurationParams, optional
    force : bool
        Retrain even when a cached model exists.
    cache : bool
        Write (and read) the cache; False trains in memory only.
    """
    params = params or CurationParams()
    sections = list(sections)
    folder = models_dir(workdir, sections, params)
    if cache and not force and (folder / "model.json").is_file():
        try:
            models = CurationModels.load(folder)
            log.info("curation models loaded from %s", folder)
            return models
        except DataError as error:
            log.warning("%s; retraining", error)
    models = CurationModels(params).fit(sections)
    if cache:
        models.save(folder)
    return models


# ============================================================================ curation
def ntm_decision(table: pd.DataFrame, modality: str | None = None,
                 models: CurationModels | None = None, ntm: str = "auto") -> np.ndarray:
    """The NTM decision :func:`curate` takes, from a :func:`ntm_features` table.

    ``"rule"`` (IF under ``"auto"``): the table's ``ntm_rule`` column (the published rule at
    the table's scale); ``"learned"``: the NTM classifier of ``models``. Fibres the
    published script skips (25 px or fewer) are non-transverse either way.
    """
    used = ntm_definition(modality, ntm)
    skipped = table["skipped"].to_numpy(bool)
    if used == "rule":
        return table["ntm_rule"].to_numpy(bool) | skipped
    if models is None:
        raise NotTrainedError("the learned NTM decision needs trained models: pass "
                              "models=train_models(...)")
    return (models.ntm.predict_proba(table) >= models.ntm.threshold) | skipped


def classify_fibres(section, myofibres: np.ndarray | None = None,
                    models: CurationModels | None = None, image: np.ndarray | None = None,
                    fr_mask: np.ndarray | None = None,
                    scale: float | None = None) -> tuple[pd.DataFrame, np.ndarray]:
    """Classify every fibre of a section's (ground-truth or predicted) myofibre mask.

    Parameters
    ----------
    section : Section or ArraySection
        Gives the image (and the ground-truth myofibres when ``myofibres`` is None).
    myofibres : (H, W) label image, optional
        Predicted myofibres; default: the section's ground truth.
    models : CurationModels
        Trained models (:func:`train_models`).
    image : (H, W, 3) array, optional
        The section image, when already read.
    fr_mask : (H, W) bool, optional
        A folded-region mask to use instead of predicting one.
    scale : float, optional
        NCL-SM IF pixels to the section's pixels for the published rule
        (default: :func:`section_ntm_scale`).

    Returns
    -------
    table : DataFrame
        One row per fibre: ``label``, ``area``, ``fr_overlap`` (fraction in the predicted
        FR), ``fr``, ``ntm_rule``, ``ntm_proba``, ``ntm``, ``fam_proba``, ``fam`` (raw
        decisions of each classifier) and ``analysable`` (none of fr, ntm, fam).
    fr : (H, W) bool
        The folded-region mask.
    """
    if models is None:
        raise NotTrainedError("curation needs trained models: pass models=train_models(...)")
    models.require_fitted()
    image = _as_rgb(section.image() if image is None else image)
    labels = section.mask("myofibres") if myofibres is None else myofibres
    labels = _check_mask(labels, image)
    diameter = fibre_diameter(labels, getattr(section, "modality", None))
    if fr_mask is None:
        fr_mask = models.fr.predict(image, diameter)
    fr_mask = np.asarray(fr_mask) > 0
    ntm_t = ntm_features(labels, section_ntm_scale(section, scale))
    fam_t = fam_features(image, labels, diameter)
    ids = ntm_t["label"].to_numpy(np.int64)
    table = pd.DataFrame({"label": ids})
    table["area"] = label_areas(labels)[ids] if ids.size else np.zeros(0, np.int64)
    table["fr_overlap"] = _fraction_inside(labels, fr_mask, ids) if ids.size else np.zeros(0)
    table["fr"] = table["fr_overlap"] > models.params.fr_overlap
    table["ntm_rule"] = ntm_t["ntm_rule"].to_numpy(bool)
    table["ntm_proba"] = models.ntm.predict_proba(ntm_t)
    table["ntm"] = ntm_decision(ntm_t, models=models, ntm="learned")
    table["fam_proba"] = models.fam.predict_proba(fam_t)
    table["fam"] = table["fam_proba"] >= models.fam.threshold
    table["analysable"] = ~(table["fr"] | table["ntm"] | table["fam"])
    return table, fr_mask


def masks_from_table(labels: np.ndarray, table: pd.DataFrame, fr_mask: np.ndarray,
                     ntm_column: str = "ntm") -> dict[str, np.ndarray]:
    """Curated masks from a per-fibre table (:func:`classify_fibres`).

    Class masks are exclusive in the workflow's order: a fibre in a folded region is only in
    ``fr_fibres``; an NTM fibre is not also FAM. ``ntm_rule`` shows the published rule's
    flags (outside folded regions). Instance masks keep the myofibre ids, in the labels'
    unsigned type or uint16 when the ids fit in it (a full-size section's five instance
    masks then take half the memory).

    ``analysable`` = myofibres minus ``fr_fibres``, ``ntm`` (``ntm_column``) and ``fam``.
    """
    labels = np.asarray(labels)
    n = int(labels.max()) + 1 if labels.size else 1
    ids = table["label"].to_numpy(np.int64)

    def lookup(flags) -> np.ndarray:
        keep = np.zeros(n, bool)
        keep[ids[np.asarray(flags, bool)]] = True
        return keep

    fr = lookup(table["fr"])
    ntm = lookup(table[ntm_column]) & ~fr
    ntm_rule_ = lookup(table["ntm_rule"]) & ~fr
    fam = lookup(table["fam"]) & ~fr & ~ntm
    fibre = lookup(np.ones(len(table), bool))
    analysable = fibre & ~fr & ~ntm & ~fam
    dtype = labels.dtype if labels.dtype.kind == "u" else np.dtype(np.uint32)
    if n <= 1 << 16 and dtype.itemsize > 2:
        dtype = np.dtype(np.uint16)
    values = np.arange(n).astype(dtype)

    def keep(flags):  # one lookup per pixel, no full-size temporaries
        return np.where(flags, values, 0).astype(dtype)[labels]

    classes = np.where(analysable, AM_CLASS, NAM_CLASS).astype(np.uint8)
    classes[0] = 0
    am_vs_nam = classes[labels]
    return {
        "myofibres": labels,
        "fr": np.asarray(fr_mask, bool).astype(np.uint8),
        "fr_fibres": keep(fr),
        "ntm": keep(ntm),
        "ntm_rule": keep(ntm_rule_),
        "fam": keep(fam),
        "analysable": keep(analysable),
        "am_vs_nam": am_vs_nam.astype(np.uint8),
    }


def curate(section, myofibres: np.ndarray | None = None, models: CurationModels | None = None,
           ntm: str = "auto", scale: float | None = None) -> dict[str, np.ndarray]:
    """Curate one section: folded regions, NTM, FAM and the analysable myofibres.

    Parameters
    ----------
    section : Section or ArraySection
    myofibres : (H, W) label image, optional
        Predicted myofibres; default: the section's ground-truth myofibres.
    models : CurationModels
        Trained models (:func:`train_models`); required.
    ntm : {"auto", "learned", "rule"}
        Which NTM decision removes fibres from the analysable mask; ``"auto"``
        (:func:`ntm_definition`): the published rule for IF (NCL-SM's IF labels are its
        output), the learned classifier for IMC.
    scale : float, optional
        NCL-SM IF pixels to the section's pixels, for the rule (:func:`section_ntm_scale`).

    Returns
    -------
    dict
        :data:`CURATED_ROLES` -> arrays (see :func:`masks_from_table`): ``fr`` (uint8 0/1
        region mask), instance masks ``fr_fibres``, ``ntm``, ``ntm_rule``, ``fam``,
        ``analysable`` (myofibre ids kept) and ``am_vs_nam`` (1 analysable, 2 not).
    """
    used = ntm_definition(getattr(section, "modality", None), ntm)
    image = section.image()
    labels = section.mask("myofibres") if myofibres is None else myofibres
    table, fr_mask = classify_fibres(section, labels, models, image=image, scale=scale)
    return masks_from_table(labels, table, fr_mask,
                            ntm_column="ntm" if used == "learned" else "ntm_rule")
