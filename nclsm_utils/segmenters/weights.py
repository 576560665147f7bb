"""Pretrained weights: what is on disk, and fetching them on a connected machine.

``nclsm models fetch`` downloads a library's published generalist weights to where the
segmenters look for them; with them on disk the plain ``cellpose`` and ``stardist`` rows
fine-tune from them (their ``pretrained="auto"``). Nothing else in the toolkit downloads.

========================  ====================================================  ==========
name                      published at                                          SHA-256
========================  ====================================================  ==========
``cyto3``                 ``https://www.cellpose.org/models/cyto3``             not published
``2D_versatile_fluo``     the StarDist model release ``python_2D_versatile_fluo.zip``  pinned
========================  ====================================================  ==========

The ``2D_versatile_fluo`` SHA-256 is the one StarDist itself registers for the file
(``stardist.models``, checked by ``StarDist2D.from_pretrained``). Cellpose publishes no
checksum for ``cyto3`` (``cellpose.models`` downloads it unchecked), so none is pinned here:
``fetch`` then prints the SHA-256 of what it downloaded, and ``--sha256`` checks a known one.

Downloads are atomic: the file is written beside its destination under a temporary name,
its SHA-256 computed while it arrives, its length checked against the server's
``Content-Length``, and only then renamed into place; after any failure nothing is left.

>>> sorted(WEIGHTS)
['2D_versatile_fluo', 'cyto3']
>>> WEIGHTS["2D_versatile_fluo"].sha256[:12]
'4ad678d0758e'
"""
from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

from ..core.errors import NclsmError

log = logging.getLogger(__name__)


class WeightsError(NclsmError, RuntimeError):
    """Weights could not be fetched or failed their check (one line, with the fix)."""


@dataclasses.dataclass(frozen=True)
class WeightsSpec:
    """A published weights file: ``name``, ``url``, pinned ``sha256`` (None: not published),
    ``filename`` on disk, the ``method`` that uses it."""

    name: str
    url: str
    sha256: str | None
    filename: str
    method: str


def _specs() -> dict:
    from .cellpose_seg import PRETRAINED_NAME as CP_NAME, PRETRAINED_URL as CP_URL
    from .stardist_seg import PRETRAINED_NAME as SD_NAME, PRETRAINED_URL as SD_URL

    return {
        CP_NAME: WeightsSpec(CP_NAME, CP_URL, None, CP_NAME, "cellpose"),
        SD_NAME: WeightsSpec(SD_NAME, SD_URL,
                             "4ad678d0758eed6e55625f1b5ae30771e59adb79f1239e09b9772eac8846c3dd",
                             f"{SD_NAME}.zip", "stardist"),
    }


WEIGHTS: dict[str, WeightsSpec] = _specs()


def default_dir(name: str) -> Path:
    """The folder where the method looks for ``name`` by default (Cellpose's model folder;
    the Keras cache's ``models/StarDist2D/2D_versatile_fluo``)."""
    spec = _spec(name)
    if spec.method == "cellpose":
        from .cellpose_seg import cellpose_model_dir

        return cellpose_model_dir()
    from .stardist_seg import keras_cache_dirs

    return keras_cache_dirs()[0] / "models" / "StarDist2D" / spec.name


def _spec(name: str) -> WeightsSpec:
    if name not in WEIGHTS:
        raise WeightsError(f"unknown weights {name!r}; known: {', '.join(sorted(WEIGHTS))}")
    return WEIGHTS[name]


def on_disk() -> list[dict]:
    """One row per known weights file: ``name``, ``method``, ``path`` (where the method
    looks), ``present``, ``bytes``."""
    rows = []
    for name, spec in sorted(WEIGHTS.items()):
        path = default_dir(name) / spec.filename
        found = path if path.is_file() else None
        if found is None and spec.method == "stardist":
            from .stardist_seg import StarDistSegmenter

            found = StarDistSegmenter(params={"pretrained": "auto"}).pretrained_path()
        rows.append({"name": name, "method": spec.method, "path": str(found or path),
                     "present": found is not None,
                     "bytes": found.stat().st_size if found is not None and found.is_file()
                     else None})
    return rows


def sha256_file(path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def fetch(name: str, dest=None, url: str | None = None, sha256: str | None = None,
          timeout: float = 60.0) -> tuple[Path, str]:
    """Download weights ``name`` to ``dest`` (default :func:`default_dir`), atomically.

    Parameters
    ----------
    name : str
        A key of :data:`WEIGHTS`.
    dest : path-like, optional
        Folder to write ``<filename>`` into.
    url : str, optional
        Another address of the same file (a mirror); default the published one.
    sha256 : str, optional
        Expected SHA-256; default the pinned one (None for ``cyto3``: not checked).

    Returns
    -------
    (path, sha256 of the file)

    Raises
    ------
    WeightsError
        Unreachable address (the message says what to download and where to put it), a
        truncated transfer or a checksum mismatch; no file is left behind.
    """
    spec = _spec(name)
    folder = Path(dest).expanduser() if dest is not None else default_dir(name)
    target = folder / spec.filename
    url = url or spec.url
    expected = (sha256 or spec.sha256 or "").lower() or None
    manual = (f"download {url} on a connected machine and put it at {target}")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise WeightsError(f"cannot create {folder}: {error.strerror or error}") from error
    handle, tmp_name = tempfile.mkstemp(prefix=f".{spec.filename}.", suffix=".part", dir=folder)
    tmp = Path(tmp_name)
    digest = hashlib.sha256()
    received = 0
    try:
        with os.fdopen(handle, "wb") as out:
            try:
                with urllib.request.urlopen(url, timeout=timeout) as response:
                    length = response.headers.get("Content-Length")
                    while True:
                        block = response.read(1 << 16)
                        if not block:
                            break
                        out.write(block)
                        digest.update(block)
                        received += len(block)
            except urllib.error.HTTPError as error:
                raise WeightsError(f"{name}: {url} answered HTTP {error.code}; {manual}") from error
            except (urllib.error.URLError, OSError) as error:
                reason = getattr(error, "reason", None) or error
                raise WeightsError(f"{name}: cannot download {url} ({reason}); {manual}") from error
            except Exception as error:  # http.client.IncompleteRead and the like
                raise WeightsError(f"{name}: the transfer from {url} broke off after {received} "
                                   f"bytes ({type(error).__name__}); nothing was kept; retry, "
                                   f"or {manual}") from error
        if length is not None and received != int(length):
            raise WeightsError(f"{name}: the transfer from {url} broke off after {received} of "
                               f"{length} bytes; nothing was kept; retry, or {manual}")
        got = digest.hexdigest()
        if expected and got != expected:
            raise WeightsError(f"{name}: SHA-256 mismatch for {url}: got {got}, expected "
                               f"{expected}; the file was not kept")
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    if expected is None:
        log.warning("%s: no published SHA-256 to check; SHA-256 of the download: %s", name, got)
    log.info("%s -> %s (%d bytes, sha256 %s)", name, target, received, got)
    return target, got
