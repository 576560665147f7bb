"""File input/output at the edges: robust image reading and atomic writing.

Every reader turns a low-level failure (truncated TIFF, corrupt PNG, missing
file) into a :class:`DataError` that names the file and says what was
expected, so a user can fix the input instead of reading a traceback.

Images of any size are read: Pillow's "decompression bomb" refusal (images over
89 million pixels, e.g. NCL-SM's 12272 x 15129 IF sections) protects servers that
decode images from strangers and is switched off for the local files read here.
In its place a memory cap (:func:`check_memory`) refuses, with one clear line, only
an image whose decoded pixels would not fit in the memory available now.

:func:`read_microscope` reads a researcher's own microscope file with its channel
axis, channel names and physical pixel size: TIFF and OME-TIFF (tifffile), PNG and
JPEG (Pillow through imageio), and vendor formats (CZI, ND2, LIF, ...) through
bioio's reader plugins when the optional ``formats`` extra is installed.
"""
from __future__ import annotations

import contextlib
import dataclasses
import os
import tempfile
import threading
from pathlib import Path

import numpy as np

from .errors import NclsmError

IMAGE_SUFFIXES = (".tif", ".tiff", ".png", ".jpg", ".jpeg")
#: Suffixes read through bioio's plugins (``pip install "nclsm[formats]"`` plus the plugin).
BIOIO_SUFFIXES = {".czi": "bioio-czi", ".nd2": "bioio-nd2", ".lif": "bioio-lif",
                  ".ome.zarr": "bioio-ome-zarr", ".zarr": "bioio-ome-zarr",
                  ".vsi": "bioio-bioformats", ".svs": "bioio-tifffile",
                  ".ims": "bioio-imaris"}
#: Share of the available memory one decoded image may take (:func:`check_memory`).
MEMORY_SHARE = 1.0

_PILLOW_LOCK = threading.RLock()


class DataError(NclsmError, ValueError):
    """A problem with an input file or folder; the message names the file and the fix."""


@contextlib.contextmanager
def pillow_without_pixel_limit():
    """Let Pillow open images of any pixel count (local files; see :func:`check_memory`).

    Pillow refuses images over ``Image.MAX_IMAGE_PIXELS`` (89 million) as possible
    decompression bombs; the limit is lifted inside this context (thread-safe) and restored
    after it.
    """
    from PIL import Image

    with _PILLOW_LOCK:
        previous = Image.MAX_IMAGE_PIXELS
        Image.MAX_IMAGE_PIXELS = None
        try:
            yield
        finally:
            Image.MAX_IMAGE_PIXELS = previous


def available_memory() -> int:
    """Bytes of memory available to a new allocation now (``psutil``'s ``available``)."""
    import psutil

    return int(psutil.virtual_memory().available)


def check_memory(path, shape, dtype, available: int | None = None) -> int:
    """Refuse an image whose decoded pixels would not fit in the available memory.

    Parameters
    ----------
    path : path-like
        Named in the message.
    shape : tuple of int
        Decoded pixel shape, e.g. ``(H, W, C)``.
    dtype : numpy dtype
        Decoded pixel type.
    available : int, optional
        Bytes available (default :func:`available_memory`); the image may take
        :data:`MEMORY_SHARE` of it.

    Returns
    -------
    int
        The decoded size in bytes.

    Raises
    ------
    DataError
        When the decoded image needs more than the available memory.

    Examples
    --------
    >>> check_memory("big.png", (12272, 15129, 3), np.uint8, available=10**9)
    556989264
    >>> check_memory("big.png", (12272, 15129, 3), np.uint8, available=10**8)
    Traceback (most recent call last):
    ...
    nclsm_utils.core.io.DataError: big.png: decoding this 12272 x 15129 image needs 0.52 GiB of memory but 0.09 GiB is available; close other programs or use a machine with more memory
    """
    needed = int(np.prod([int(s) for s in shape], dtype=np.int64)) * np.dtype(dtype).itemsize
    available = available_memory() if available is None else int(available)
    if needed > MEMORY_SHARE * available:
        size = " x ".join(str(int(s)) for s in shape[:2])
        raise DataError(f"{path}: decoding this {size} image needs {needed / 2 ** 30:.2f} GiB of "
                        f"memory but {available / 2 ** 30:.2f} GiB is available; close other "
                        "programs or use a machine with more memory")
    return needed


def _pillow_header(path: Path):
    """``(shape, dtype, mode)`` of a PNG/JPEG from its header (no pixels decoded)."""
    from PIL import Image

    with pillow_without_pixel_limit(), Image.open(path) as image:
        width, height = image.size
        mode = image.mode
    bands = {"1": 1, "L": 1, "P": 3, "I": 1, "F": 1, "LA": 2, "PA": 4, "RGB": 3, "RGBA": 4,
             "CMYK": 4, "YCbCr": 3, "I;16": 1, "I;16B": 1, "I;16L": 1}.get(mode, 4)
    dtype = {"I": np.int32, "F": np.float32}.get(mode, np.uint16 if mode.startswith("I;16")
                                                    else np.uint8)
    return ((height, width) if bands == 1 else (height, width, bands)), np.dtype(dtype), mode


def _read_pillow(path: Path) -> np.ndarray:
    """Read a PNG/JPEG of any size with imageio (Pillow), after the memory check."""
    import imageio.v3 as iio

    shape, dtype, _ = _pillow_header(path)
    check_memory(path, shape, dtype)
    with pillow_without_pixel_limit():
        return np.asarray(iio.imread(path))


def read_array(path: str | os.PathLike) -> np.ndarray:
    """Read a TIFF or PNG file into a numpy array.

    Parameters
    ----------
    path : path-like
        ``.tif``/``.tiff`` (read with tifffile) or ``.png``/``.jpg`` (imageio), of
        any pixel count that fits in memory (:func:`check_memory`).

    Returns
    -------
    ndarray
        The pixel array as stored: ``(H, W)`` for masks, ``(H, W, C)`` for
        colour images. Multi-channel TIFFs stored channel-first ``(C, H, W)``
        with C <= 4 are returned channel-last.

    Raises
    ------
    DataError
        When the file is missing, truncated or not a readable image, or when its
        decoded pixels would not fit in the available memory.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found. Expected an image or mask file here; "
                        "check the data folder or regenerate it with `nclsm synth`.")
    suffix = path.suffix.lower()
    try:
        if suffix in (".tif", ".tiff"):
            import tifffile

            with tifffile.TiffFile(path) as tif:
                series = tif.series[0]
                check_memory(path, series.shape, series.dtype)
                array = series.asarray()
        elif suffix in (".png", ".jpg", ".jpeg"):
            array = _read_pillow(path)
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
            shape = tuple(int(s) for s in _pillow_header(path)[0])
    except DataError:
        raise
    except Exception as error:
        raise DataError(f"{path}: cannot read the file header ({type(error).__name__}: "
                        f"{error}). It may be truncated or corrupt.") from error
    if len(shape) == 3 and shape[0] <= 4 and shape[-1] > 4:
        shape = (shape[1], shape[2], shape[0])
    return shape


# ---------------------------------------------------------------------------- microscope files
#: Most channels a plain TIFF/PNG axis may have to be taken as the channel axis.
MAX_CHANNELS = 16
_LENGTH_UNITS_UM = {"um": 1.0, "µm": 1.0, "\u03bcm": 1.0, "micron": 1.0, "microns": 1.0,
                    "nm": 1e-3, "mm": 1e3, "cm": 1e4, "m": 1e6, "pixel": None, "": None}


@dataclasses.dataclass
class MicroscopeImage:
    """One 2-D multichannel image with the metadata segmentation and measurement need.

    Attributes
    ----------
    path : Path
    channels : ndarray, shape (H, W, C)
        The pixels as stored (no stretch), channel last; an alpha channel is dropped.
    channel_names : tuple of str
        One name per channel: from the file's metadata, else ``"channel 0"``, ...
    pixel_size : float or None
        Side of a pixel in micrometres, from the metadata; None when the file has none.
    axes : str
        The axes as the file stores them (e.g. ``"CYX"``, ``"YXS"``).
    """

    path: Path
    channels: np.ndarray
    channel_names: tuple
    pixel_size: float | None
    axes: str = ""

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self.channels.shape[:2])

    def channel_index(self, key) -> int:
        """Index of a channel given as an index (int or digit string) or a channel name.

        >>> image = MicroscopeImage(Path("x.tif"), np.zeros((2, 2, 2)), ("laminin", "COX"), None)
        >>> image.channel_index("COX"), image.channel_index("0"), image.channel_index(1)
        (1, 0, 1)
        """
        count = self.channels.shape[-1]
        names = ", ".join(f"{i} = {n}" for i, n in enumerate(self.channel_names))
        if isinstance(key, (int, np.integer)) or (isinstance(key, str) and key.strip().isdigit()):
            index = int(key)
            if not 0 <= index < count:
                raise DataError(f"{self.path}: channel {index} does not exist; the file has "
                                f"{count} channel(s): {names}")
            return index
        lowered = [str(n).lower() for n in self.channel_names]
        if str(key).lower() in lowered:
            return lowered.index(str(key).lower())
        raise DataError(f"{self.path}: no channel named {key!r}; the file has {count} "
                        f"channel(s): {names}")


def _length_um(value, unit) -> float | None:
    if value is None:
        return None
    factor = _LENGTH_UNITS_UM.get(str(unit if unit is not None else "µm").strip().lower()
                                  .replace("\\u00b5", "µ"))
    if factor is None:
        return None
    size = float(value) * factor
    return size if np.isfinite(size) and size > 0 else None


def _square(path, x, y) -> float | None:
    if x is None or y is None:
        return x if y is None else y
    if abs(x - y) > 0.01 * max(x, y):
        raise DataError(f"{path}: the pixels are not square ({x:g} x {y:g} µm); resample the "
                        "image to square pixels or give --pixel-size")
    return x


def _to_yxc(path, array: np.ndarray, axes: str) -> np.ndarray:
    """Reorder an array with named axes to ``(H, W, C)``; singleton other axes dropped."""
    shape = array.shape
    keep = []
    for i, axis in enumerate(axes):
        if axis in "YXCS":
            keep.append(i)
        elif shape[i] != 1:
            raise DataError(f"{path}: expected one 2-D plane, got an array of shape {shape} "
                            f"(axes {axes}: {shape[i]} planes along {axis}); save one plane "
                            "(e.g. a maximum projection or one time point)")
    array = array.reshape([shape[i] for i in keep])
    axes = "".join(axes[i] for i in keep)
    if "C" in axes and "S" in axes:
        if array.shape[axes.index("S")] != 1 and array.shape[axes.index("C")] != 1:
            raise DataError(f"{path}: both a channel and a sample axis ({shape}, axes {axes}); "
                            "save the channels as separate planes")
        drop = axes.index("S") if array.shape[axes.index("S")] == 1 else axes.index("C")
        array = array.reshape([s for i, s in enumerate(array.shape) if i != drop])
        axes = axes.replace(axes[drop], "")
    if "S" in axes:
        axes = axes.replace("S", "C")
    if "C" not in axes:
        return np.transpose(array, [axes.index("Y"), axes.index("X")])[..., None]
    return np.transpose(array, [axes.index("Y"), axes.index("X"), axes.index("C")])


def _plain_channels_last(path, array: np.ndarray) -> np.ndarray:
    """Channel axis of a file without axis metadata: the last one, or the first when only it
    is small (``(C, H, W)``); a 2-D array is one channel."""
    if array.ndim == 2:
        return array[..., None]
    if array.ndim == 3:
        if array.shape[-1] > MAX_CHANNELS and array.shape[0] <= MAX_CHANNELS:
            return np.moveaxis(array, 0, -1)
        if array.shape[-1] <= MAX_CHANNELS:
            return array
    raise DataError(f"{path}: expected one 2-D image (H, W) or (H, W, C), got an array of shape "
                    f"{array.shape}; save one 2-D image with its channels")


def _ome_metadata(tif) -> tuple[tuple, float | None]:
    import tifffile

    pixels = tifffile.xml2dict(tif.ome_metadata).get("OME", {}).get("Image", {})
    pixels = (pixels[0] if isinstance(pixels, list) else pixels).get("Pixels", {})
    channels = pixels.get("Channel", [])
    channels = channels if isinstance(channels, list) else [channels]
    names = tuple(str(c.get("Name", "")) if isinstance(c, dict) else "" for c in channels)
    x = _length_um(pixels.get("PhysicalSizeX"), pixels.get("PhysicalSizeXUnit"))
    y = _length_um(pixels.get("PhysicalSizeY"), pixels.get("PhysicalSizeYUnit"))
    return names, _square(tif.filehandle.path, x, y)


def _tiff_resolution_um(tif) -> float | None:
    """Pixel size from ImageJ's unit + XResolution, or from a centimetre ResolutionUnit.

    Inch units are ignored: they are screen resolutions (72 dpi), not pixel sizes.
    """
    page = tif.pages[0]
    tags = page.tags

    def size(tag):
        if tag not in tags:
            return None
        num, den = tags[tag].value
        return den / num if num else None

    x, y = size("XResolution"), size("YResolution")
    if tif.is_imagej:
        unit = (tif.imagej_metadata or {}).get("unit", "")
        factor = _LENGTH_UNITS_UM.get(str(unit).strip().lower().replace("\\u00b5", "µ"))
    else:
        unit = tags["ResolutionUnit"].value if "ResolutionUnit" in tags else None
        factor = 1e4 if unit == 3 else None            # RESUNIT.CENTIMETER
    if factor is None or x is None:
        return None
    return _square(tif.filehandle.path, x * factor, None if y is None else y * factor)


def _read_tiff_microscope(path: Path) -> MicroscopeImage:
    import tifffile

    with tifffile.TiffFile(path) as tif:
        series = tif.series[0]
        check_memory(path, series.shape, series.dtype)
        array = series.asarray()
        axes = series.axes
        names, pixel_size = (), None
        page = tif.pages[0]
        alpha = bool(page.extrasamples) and any(int(e) in (1, 2) for e in page.extrasamples)
        if tif.is_ome:
            names, pixel_size = _ome_metadata(tif)
            channels = _to_yxc(path, array, axes)
        elif tif.is_imagej:
            pixel_size = _tiff_resolution_um(tif)
            channels = _to_yxc(path, array, axes)
        else:
            pixel_size = _tiff_resolution_um(tif)
            if "S" in axes and set(axes) <= set("YXS"):       # RGB(A) as TIFF stores it
                channels = _to_yxc(path, array, axes)
            else:
                channels = _plain_channels_last(path, array)
    if alpha and channels.shape[-1] in (2, 4):
        channels = channels[..., :-1]
    return MicroscopeImage(path, channels, names, pixel_size, axes)


def _read_bioio(path: Path) -> MicroscopeImage:
    try:
        from bioio import BioImage
    except ImportError as error:
        raise DataError(f"{path}: reading {path.suffix} files needs bioio: pip install "
                        f"\"nclsm[formats]\" {BIOIO_SUFFIXES.get(path.suffix.lower(), '')}".strip()
                        ) from error
    try:
        image = BioImage(path)
        dims = image.dims
        sizes = {axis: int(getattr(dims, axis)) for axis in dims.order}
        for axis, size in sizes.items():
            if axis not in "YXCS" and size != 1:
                raise DataError(f"{path}: expected one 2-D plane, got {size} planes along "
                                f"{axis} (dims {dict(sizes)}); save one plane (e.g. a maximum "
                                "projection or one time point)")
        order = "".join(a for a in dims.order if a in "YXCS")
        check_memory(path, [sizes[a] for a in order], image.dtype)
        array = np.asarray(image.get_image_data(order, **{a: 0 for a in sizes if a not in order}))
        names = tuple(str(n) for n in (image.channel_names or ()))
        sizes_um = image.physical_pixel_sizes
        pixel_size = _square(path, sizes_um.X and float(sizes_um.X), sizes_um.Y and float(sizes_um.Y))
    except DataError:
        raise
    except Exception as error:   # bioio and its plugins raise many types
        plugin = BIOIO_SUFFIXES.get(path.suffix.lower())
        hint = f"; install its reader plugin (pip install {plugin})" if plugin else ""
        raise DataError(f"{path}: bioio cannot read the file ({type(error).__name__}: "
                        f"{error}){hint}") from error
    channels = _to_yxc(path, array, order)
    if "S" in order and channels.shape[-1] == 4:
        channels = channels[..., :3]
    return MicroscopeImage(path, channels, names, pixel_size, order)


def read_microscope(path: str | os.PathLike, reader: str | None = None) -> MicroscopeImage:
    """Read a 2-D microscope image with its channels, channel names and pixel size.

    Parameters
    ----------
    path : path-like
        TIFF or OME-TIFF (tifffile: axes from the OME-XML or ImageJ metadata; channel names
        and ``PhysicalSizeX/Y`` from the OME-XML; ImageJ's unit and resolution tags; a
        centimetre ``ResolutionUnit``), PNG or JPEG of any size (no pixel size), or a
        vendor format (CZI, ND2, LIF, ...) through bioio (``pip install "nclsm[formats]"``
        and the format's plugin).
    reader : {None, "bioio"}
        ``"bioio"`` reads any file through bioio (e.g. an OME-TIFF with bioio-ome-tiff).

    Returns
    -------
    MicroscopeImage
        ``channels`` ``(H, W, C)`` as stored (alpha dropped), names, pixel size in µm.

    Raises
    ------
    DataError
        Missing, unreadable or corrupt file; a stack of several planes (Z, T); an image that
        would not fit in memory; bioio or its plugin missing for a vendor format.

    Examples
    --------
    >>> import tempfile, tifffile
    >>> path = Path(tempfile.mkdtemp()) / "section.ome.tif"
    >>> tifffile.imwrite(path, np.zeros((4, 32, 40), np.uint16), metadata={
    ...     "axes": "CYX", "PhysicalSizeX": 0.5, "PhysicalSizeY": 0.5,
    ...     "Channel": {"Name": ["laminin", "DAPI", "MHC", "COX"]}})
    >>> image = read_microscope(path)
    >>> image.channels.shape, image.channel_names[3], image.pixel_size
    ((32, 40, 4), 'COX', 0.5)
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found. Expected an image file (TIFF, OME-TIFF, PNG, "
                        "JPEG, or CZI/ND2/LIF with the formats extra) here")
    suffix = path.suffix.lower()
    if reader == "bioio" or suffix not in IMAGE_SUFFIXES:
        image = _read_bioio(path)
    else:
        try:
            if suffix in (".tif", ".tiff"):
                image = _read_tiff_microscope(path)
            else:
                _, _, mode = _pillow_header(path)
                array = _read_pillow(path)
                if mode in ("RGBA", "LA", "PA") and array.ndim == 3:
                    array = array[..., :-1]
                image = MicroscopeImage(path, _plain_channels_last(path, array), (), None, mode)
        except DataError:
            raise
        except Exception as error:  # tifffile/imageio raise many types for corrupt files
            raise DataError(f"{path}: cannot read the file ({type(error).__name__}: {error}). "
                            "It may be truncated or corrupt; re-download or re-export it."
                            ) from error
    count = image.channels.shape[-1]
    names = tuple(image.channel_names)
    if len(names) != count or not all(names):
        names = tuple(names[i] if i < len(names) and names[i] else f"channel {i}"
                      for i in range(count))
    image.channel_names = names
    return image


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


def write_tiff(path: str | os.PathLike, array: np.ndarray, compression: str | None = "zlib",
               pixel_size: float | None = None) -> Path:
    """Write ``array`` to a TIFF atomically (temporary file + rename). Returns the path.

    With ``pixel_size`` (µm), the resolution tags say it the way Fiji reads it: an ImageJ
    TIFF with unit ``um`` for 8/16-bit and float data, a centimetre ``ResolutionUnit``
    otherwise (e.g. uint32 labels, which ImageJ TIFFs cannot hold).
    """
    import tifffile

    path = Path(path)
    with atomic_path(path) as tmp:
        if pixel_size is None:
            tifffile.imwrite(tmp, array, compression=compression)
        elif array.ndim == 2 and array.dtype in (np.uint8, np.uint16, np.float32):
            tifffile.imwrite(tmp, array, compression=compression, imagej=True,
                             resolution=(1.0 / pixel_size, 1.0 / pixel_size),
                             metadata={"unit": "um"})
        else:
            per_cm = 1e4 / pixel_size
            tifffile.imwrite(tmp, array, compression=compression,
                             resolution=(per_cm, per_cm), resolutionunit="CENTIMETER")
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


def write_npz(path: str | os.PathLike, **arrays) -> Path:
    """Write named arrays to a compressed ``.npz`` atomically (temporary file + rename).

    Returns the path. Read it back with :func:`read_npz`.
    """
    path = Path(path)
    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        np.savez_compressed(handle, **arrays)
    return path


def read_npz(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """The arrays of a ``.npz`` file (no pickled objects), all read into memory.

    Raises
    ------
    DataError
        When the file is missing, truncated or not an ``.npz`` archive.

    Examples
    --------
    >>> path = write_npz(Path(tempfile.mkdtemp()) / "a.npz", view=np.arange(3), key=np.array("k"))
    >>> arrays = read_npz(path)
    >>> arrays["view"].tolist(), str(arrays["key"])
    ([0, 1, 2], 'k')
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found.")
    try:
        with np.load(path, allow_pickle=False) as archive:
            return {name: archive[name] for name in archive.files}
    except Exception as error:  # zipfile/numpy raise many types for corrupt files
        raise DataError(f"{path}: cannot read the file ({type(error).__name__}: {error}). "
                        "It may be truncated or corrupt.") from error


def available_cores() -> int:
    """The CPU cores this process may use (its affinity on Linux, else the machine's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not on Linux
        return os.cpu_count() or 1
