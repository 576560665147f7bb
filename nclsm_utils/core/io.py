"""File input/output at the edges: robust image reading and atomic writing.

Every reader turns a low-level failure (truncated TIFF, corrupt PNG, missing
file) into a :class:`DataError` that names the file and says what was
expected, so a user can fix the input instead of reading a traceback.
"""
from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

import numpy as np

from .errors import NclsmError

IMAGE_SUFFIXES = (".tif", ".tiff", ".png", ".jpg", ".jpeg")


class DataError(NclsmError, ValueError):
    """A problem with an input file or folder; the message names the file and the fix."""


def read_array(path: str | os.PathLike) -> np.ndarray:
    """Read a TIFF or PNG file into a numpy array.

    Parameters
    ----------
    path : path-like
        ``.tif``/``.tiff`` (read with tifffile) or ``.png``/``.jpg`` (imageio).

    Returns
    -------
    ndarray
        The pixel array as stored: ``(H, W)`` for masks, ``(H, W, C)`` for
        colour images. Multi-channel TIFFs stored channel-first ``(C, H, W)``
        with C <= 4 are returned channel-last.

    Raises
    ------
    DataError
        When the file is missing, truncated or not a readable image.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found. Expected an image or mask file here; "
                        "check the data folder or regenerate it with `nclsm synth`.")
    suffix = path.suffix.lower()
    try:
        if suffix in (".tif", ".tiff"):
            import tifffile

            array = tifffile.imread(path)
        elif suffix in (".png", ".jpg", ".jpeg"):
            import imageio.v3 as iio

            array = iio.imread(path)
        else:
            raise DataError(f"{path}: unsupported file type {suffix!r}; expected one of "
                            f"{', '.join(IMAGE_SUFFIXES)}.")
    except DataError:
        raise
    except Exception as error:  # tifffile/imageio raise many types for corrupt files
        raise DataError(f"{path}: cannot read the file ({type(error).__name__}: {error}). "
                        "It may be truncated or corrupt; re-download or regenerate it.") from error
    array = np.asarray(array)
    if array.ndim == 3 and array.shape[0] <= 4 and array.shape[-1] > 4:
        array = np.moveaxis(array, 0, -1)
    return array


def read_shape(path: str | os.PathLike) -> tuple[int, ...]:
    """Return the pixel shape ``(H, W[, C])`` of an image file without reading its pixels.

    Falls back to a full read for formats whose header cannot be parsed alone.
    Raises :class:`DataError` for missing or corrupt files.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found.")
    try:
        if path.suffix.lower() in (".tif", ".tiff"):
            import tifffile

            with tifffile.TiffFile(path) as tif:
                series = tif.series[0]
                shape = tuple(int(s) for s in series.shape)
                page = tif.pages[0]
                # a truncated file still parses its header: check the data is there
                end = max(o + c for o, c in zip(page.dataoffsets, page.databytecounts)) \
                    if page.dataoffsets else 0
                if end > os.path.getsize(path):
                    raise DataError(f"{path}: the TIFF is truncated ({os.path.getsize(path)} "
                                    f"bytes, its header promises {end}). Re-download or "
                                    "regenerate it.")
        else:
            import imageio.v3 as iio

            props = iio.improps(path)
            shape = tuple(int(s) for s in props.shape)
    except DataError:
        raise
    except Exception as error:
        raise DataError(f"{path}: cannot read the file header ({type(error).__name__}: "
                        f"{error}). It may be truncated or corrupt.") from error
    if len(shape) == 3 and shape[0] <= 4 and shape[-1] > 4:
        shape = (shape[1], shape[2], shape[0])
    return shape


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike):
    """Yield a temporary path beside ``path``; rename it onto ``path`` on success.

    A crash or exception while writing leaves any previous ``path`` untouched
    and removes the temporary file.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=f".tmp{path.suffix}",
                                   dir=path.parent)
    os.close(handle)
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def write_tiff(path: str | os.PathLike, array: np.ndarray, compression: str | None = "zlib") -> Path:
    """Write ``array`` to a TIFF atomically (temporary file + rename). Returns the path."""
    import tifffile

    path = Path(path)
    with atomic_path(path) as tmp:
        tifffile.imwrite(tmp, array, compression=compression)
    return path


def write_text(path: str | os.PathLike, text: str) -> Path:
    """Write text atomically. Returns the path."""
    path = Path(path)
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    return path


def write_csv(path: str | os.PathLike, frame) -> Path:
    """Write a DataFrame to CSV atomically, without the index. Returns the path."""
    path = Path(path)
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, index=False)
    return path


def available_cores() -> int:
    """The CPU cores this process may use (its affinity on Linux, else the machine's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not on Linux
        return os.cpu_count() or 1
