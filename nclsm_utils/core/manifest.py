"""The one run-manifest implementation: versioned JSON, locked updates, one hashing rule.

Two files use it: ``reports/run_manifest.json`` (the notebook batch, section ``jobs``:
which notebook ran with which key) and ``<workdir>/results/manifest.json`` (the per-section
results, sections ``outputs`` and ``files``: which per-fibre table was made from which
inputs). Both are read with :func:`read` (an empty manifest when missing, unreadable or of
another version), changed only under an advisory lock (:func:`locked`) and written
atomically; keys are made with :func:`sha` and file contents hashed with :func:`sha1_file`.

>>> import tempfile, pathlib
>>> path = pathlib.Path(tempfile.mkdtemp()) / "manifest.json"
>>> read(path, ("jobs",))
{'version': 1, 'jobs': {}}
>>> _ = update(path, ("jobs",), jobs={"a": {"status": "ok"}})
>>> read(path, ("jobs",))["jobs"]
{'a': {'status': 'ok'}}
>>> sha({"b": 1, "a": [1, 2]}) == sha({"a": [1, 2], "b": 1})
True
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import logging
from pathlib import Path

import numpy as np

from .io import write_text

log = logging.getLogger(__name__)

#: Version of every manifest written here; another version reads as an empty manifest.
VERSION = 1


def sha(payload) -> str:
    """SHA-1 (40 hex) of a JSON-able payload, keys sorted (the one key-hashing rule)."""
    return hashlib.sha1(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()


def sha1_file(path, chunk: int = 1 << 22) -> str:
    """SHA-1 (40 hex) of a file's bytes, read in chunks."""
    digest = hashlib.sha1()
    with open(path, "rb") as stream:
        while True:
            block = stream.read(chunk)
            if not block:
                break
            digest.update(block)
    return digest.hexdigest()


class FileDigests:
    """Content SHA-1 of input files, reusing a known digest when size and mtime match.

    ``known`` maps a resolved path to ``[size, mtime_ns, sha1]`` (a manifest's ``files``).
    """

    def __init__(self, known: dict | None = None):
        self.known = dict(known or {})

    def __call__(self, path) -> str:
        path = Path(path).resolve()
        stat = path.stat()
        signature = [stat.st_size, stat.st_mtime_ns]
        entry = self.known.get(str(path))
        if entry and entry[:2] == signature:
            return entry[2]
        digest = sha1_file(path)
        self.known[str(path)] = signature + [digest]
        return digest


def empty(sections) -> dict:
    """A manifest with no records: ``{"version": VERSION, <section>: {} ...}``."""
    return {"version": VERSION, **{name: {} for name in sections}}


def read(path, sections) -> dict:
    """The manifest at ``path`` with every section in ``sections`` present (as a dict).

    Missing, unreadable (logged) or of another version: :func:`empty` ``(sections)``.
    """
    path = Path(path)
    if not path.is_file():
        return empty(sections)
    try:
        manifest = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        log.warning("%s: unreadable manifest (%s); starting a fresh one", path, error)
        return empty(sections)
    if not isinstance(manifest, dict) or manifest.get("version") != VERSION:
        return empty(sections)
    for name in sections:
        if not isinstance(manifest.get(name), dict):
            manifest[name] = {}
    return manifest


@contextlib.contextmanager
def locked(path):
    """An advisory lock beside ``path`` (POSIX ``flock``), so two runs sharing a manifest do
    not interleave their read-modify-write; a no-op where locks are unavailable."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    lock = path.with_name(f".{path.name}.lock")
    with open(lock, "a") as handle:
        try:
            import fcntl

            fcntl.flock(handle, fcntl.LOCK_EX)
        except (ImportError, OSError):  # no fcntl (Windows) or a file system without locks
            pass
        yield


def _json_default(value):
    if isinstance(value, np.generic):
        return value.item()
    return str(value)


def _write(path: Path, manifest: dict) -> Path:
    manifest["version"] = VERSION
    return write_text(path, json.dumps(manifest, indent=1, sort_keys=True,
                                       default=_json_default))


def write(path, manifest: dict) -> Path:
    """Replace the manifest at ``path`` with ``manifest`` (locked, atomic)."""
    path = Path(path)
    with locked(path):
        return _write(path, manifest)


def update(path, sections, remove: dict | None = None, **changes) -> dict:
    """Merge records into the manifest at ``path`` under its lock; returns the new manifest.

    ``changes`` maps a section to the records to set in it (``jobs={"a": {...}}``); other
    top-level keys given are set as they are. ``remove`` maps a section to names to drop.
    """
    path = Path(path)
    with locked(path):
        manifest = read(path, sections)
        for section, names in (remove or {}).items():
            for name in names:
                manifest.setdefault(section, {}).pop(name, None)
        for key, value in changes.items():
            if key in sections and isinstance(value, dict):
                manifest[key].update(value)
            else:
                manifest[key] = value
        _write(path, manifest)
    return manifest
