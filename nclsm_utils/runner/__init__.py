"""The one engine that runs methods over sections (:mod:`.engine`) and what a run leaves
(:mod:`.results`).

>>> from nclsm_utils.runner import run_method, run_methods
>>> result = run_method("mitocyto", "data/synthetic")            # doctest: +SKIP
>>> runs = run_methods(["mitocyto", "unet"], "data/synthetic", workers=2)  # doctest: +SKIP

Serial runs, Dask runs, the CLI (``nclsm segment``, ``nclsm run``), the notebooks and the
explorer all go through :func:`run_methods`; a run is resumable through the results
manifest (``<workdir>/results/manifest.json``) in every mode.
"""
from .engine import (RUN_RECORD_KEYS, MethodRun, SectionTask, code_fingerprint,  # noqa: F401
                     manifest_path, read_manifest, run_method, run_methods, run_section_task,
                     update_manifest, write_run_record)
from .results import RunResult, evaluate_section, method_label  # noqa: F401
