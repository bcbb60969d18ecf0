"""Mars Daily Global Maps (MDGMs): read one map, resample it, index an archive of them.

Public API
----------
* :class:`MapImage` — one map in memory (float32 RGB in [0, 1], validity mask, grid, path).
* :func:`read_map` — PNG / JPEG / TIFF / GeoTIFF file, or ``TARFILE::MEMBER`` inside a tar.
* :func:`read_map_pixels`, :func:`read_map_array` — the 8-bit pixels only (and whether the file
  is lossy-compressed).
* :func:`valid_mask` — which pixels hold an observation (the missing-pixel rule).
* :func:`read_map_resampled`, :func:`downsample` — block averages to a coarser grid (the
  detectors' working resolution), counting only valid pixels; :func:`working_grid` — that grid
  from the file's header (:func:`read_map_shape`), without decoding it.
* :func:`index_archive` — archive folder / tars / flat folder + manifest / saved index CSV →
  index table ``map_id, subphase, sol, mars_year, ls, path`` sorted by time; problems
  (listed-but-missing maps, unlisted files, bad lines) in ``df.attrs["problems"]``.
* :func:`save_index` — write an index atomically (CSV or Parquet by extension).
* :func:`read_list_ls_file`, :func:`read_bounded` — a list or a tar member read up to a size limit
  (:data:`MAX_LIST_LS_BYTES`, :data:`MAX_MAP_FILE_BYTES`), refused when it declares more.
* :class:`MapReadError` — a :class:`ValueError` for any map that cannot be read as expected.

Conventions: maps are 8-bit RGB, simple cylindrical, row 0 at the northern edge, column 0 at
180°W (see :mod:`marsdust.grid`). Black (0, 0, 0) marks a missing observation: exactly black in
a lossless file (PNG, uncompressed or deflate TIFF); in a lossy one (JPEG, or TIFF with JPEG
compression, as many MARCI maps are) a pixel whose luma is at most :data:`LOSSY_MISSING_LUMA`
(:func:`valid_mask`), and its bands are set to 0 when read. Images with an
alpha channel (RGBA / LA) have the alpha dropped (MDGMs carry no transparency; some tools add
an opaque alpha when re-saving). Palette images are expanded to RGB. Grayscale images are
rejected: the red and blue bands carry different information (dust vs water-ice clouds).
A PNG whose image data ends before its last row is damaged (:func:`check_png_rows`), not a map
whose lower rows are missing observations.
"""

from __future__ import annotations

import io
import logging
import os
import re
import struct
import tarfile
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Iterator

import numpy as np
import pandas as pd

from marsdust.fileio import write_table_atomic
from marsdust.grid import MapGrid
from marsdust.naming import make_map_id, parse_map_name, printable

log = logging.getLogger(__name__)

MAP_EXTENSIONS = (".png", ".jpg", ".jpeg", ".tif", ".tiff")
"""File extensions recognised as map images (case-insensitive)."""

INDEX_COLUMNS = ["map_id", "subphase", "sol", "mars_year", "ls", "path"]
"""Columns of the archive index table, in order."""

TAR_SEPARATOR = "::"
"""Separator between a tar file and a member inside it in map paths: ``R18.tar::r18_040.png``."""

_TAR_SUFFIXES = (".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tar.xz")

LOSSY_MISSING_LUMA = 16
"""A pixel of a lossy (JPEG-compressed) map is missing where its luma (Rec. 601, JPEG's own Y:
0.299 R + 0.587 G + 0.114 B, 8-bit) is at most this.

JPEG's 8 × 8 blocks turn the exact black of a gap into near-black noise next to its edges, and
its half-resolution chroma bleeds the colour of the ground into the black pixels beside it (red
up to ≈ 40 on a pixel whose luma stays below 10), so neither "exactly black" nor "every band
small" finds the missing pixels. Luma is kept at full resolution: on the synthetic MARCI maps
(quality 90) missing pixels decode to luma ≤ 17 and observed ground to ≥ 24; real MDGM ground is
never that dark in all bands."""
_LOSSY_TIFF_COMPRESSIONS = ("jpeg", "tiff_jpeg")

MAX_LIST_LS_BYTES = 16 * 2**20
"""Largest ``list_ls.txt`` read, bytes (16 MiB: some 800 000 lines ``name year ls``, hundreds of times an
archive's sols). A larger one (e.g. a small tar.gz expanding to gigabytes) is an index problem
(``unreadable_list_ls``), checked on its declared size before it is read and never read past the limit."""
MAX_MAP_FILE_BYTES = 256 * 2**20
"""Largest map file read from a tar into memory, bytes (256 MiB: ten times an uncompressed RGBA global map at
0.1°, 3600 × 1800 × 4 bytes ≈ 26 MB). A larger member is a :class:`MapReadError`, found before it is read."""


class MapReadError(ValueError):
    """A map file cannot be read as an 8-bit RGB MDGM on the expected grid."""


@dataclass
class MapImage:
    """One Mars Daily Global Map in memory.

    Attributes
    ----------
    rgb : ndarray, float32, shape (H, W, 3)
        Red, green, blue reflectance values scaled to [0, 1] (8-bit value / 255).
        Missing pixels are 0 in all bands.
    valid : ndarray, bool, shape (H, W)
        True where the map has an observation (not black in all three bands).
    grid : MapGrid
        The map's simple-cylindrical grid (extent and resolution in degrees).
    path : str
        Where the map was read from (file path or ``TARFILE::MEMBER``); empty if built in memory.
    """

    rgb: np.ndarray
    valid: np.ndarray
    grid: MapGrid
    path: str = ""

    @property
    def shape(self) -> tuple[int, int]:
        """(rows, columns) of the map."""
        return self.grid.shape


# ---------------------------------------------------------------------------------------------
# reading one map
# ---------------------------------------------------------------------------------------------
def split_tar_path(path: str | os.PathLike) -> tuple[str, str | None]:
    """Split ``"TARFILE::MEMBER"`` into ``(TARFILE, MEMBER)``; a plain path gives ``(path, None)``."""
    text = os.fspath(path)
    if TAR_SEPARATOR in text:
        tar_path, member = text.split(TAR_SEPARATOR, 1)
        return tar_path, member
    return text, None


def check_file_size(declared_size: int, max_bytes: int, where: str) -> None:
    """Refuse a file or tar member that declares more than ``max_bytes`` bytes (:class:`MapReadError` naming ``where``)."""
    if declared_size > max_bytes:
        raise MapReadError(f"{where}: {declared_size:,} bytes, more than the {max_bytes:,} such a file may hold; "
                           "not read")


def read_bounded(handle, declared_size: int, max_bytes: int, where: str) -> bytes:
    """At most ``max_bytes`` bytes of an open file or tar member, refusing a larger one before reading it.

    Parameters
    ----------
    handle : binary file object
        An open file or ``TarFile.extractfile`` handle, at its start.
    declared_size : int
        Its size as declared (``os.fstat`` or ``TarInfo.size``), bytes.
    max_bytes : int
        The most bytes read (:data:`MAX_LIST_LS_BYTES`, :data:`MAX_MAP_FILE_BYTES`).
    where : str
        The file (``TARFILE::MEMBER``), named in the error.

    Raises
    ------
    MapReadError
        The file declares, or turns out to hold, more than ``max_bytes`` bytes.
    """
    check_file_size(declared_size, max_bytes, where)
    data = handle.read(max_bytes + 1)
    check_file_size(len(data), max_bytes, where)
    return data


@lru_cache(maxsize=64)
def _tar_member_offsets(tar_path: str, mtime_ns: int, size: int) -> dict[str, tuple[int, int]]:
    """Byte offset and size of every regular member of an uncompressed tar (cached per file version)."""
    with tarfile.open(tar_path, mode="r:") as tar:
        return {m.name: (m.offset_data, m.size) for m in tar.getmembers() if m.isfile()}


def _read_tar_member(tar_path: str, member: str) -> bytes:
    """Bytes of one tar member. Uncompressed tars are read by offset (fast, fork-safe)."""
    try:
        stat = os.stat(tar_path)
    except OSError as exc:
        raise MapReadError(f"{tar_path}: cannot open tar file ({exc.strerror or exc})") from exc
    try:
        offsets = _tar_member_offsets(tar_path, stat.st_mtime_ns, stat.st_size)
    except tarfile.ReadError:
        offsets = None  # compressed tar: no random access
    except (OSError, EOFError) as exc:
        raise MapReadError(f"{tar_path}: corrupt tar file ({exc})") from exc
    if offsets is not None:
        if member not in offsets:
            raise MapReadError(f"{tar_path}: no member {member!r} in the tar file")
        offset, size = offsets[member]
        check_file_size(size, MAX_MAP_FILE_BYTES, f"{tar_path}{TAR_SEPARATOR}{member}")
        with open(tar_path, "rb") as handle:
            handle.seek(offset)
            data = handle.read(size)
        if len(data) != size:
            raise MapReadError(f"{tar_path}::{member}: truncated (expected {size} bytes, got {len(data)})")
        return data
    try:
        with tarfile.open(tar_path, mode="r:*") as tar:
            info = tar.getmember(member)
            handle = tar.extractfile(info)
            if handle is None:
                raise MapReadError(f"{tar_path}: member {member!r} is not a regular file")
            return read_bounded(handle, info.size, MAX_MAP_FILE_BYTES, f"{tar_path}{TAR_SEPARATOR}{member}")
    except KeyError as exc:
        raise MapReadError(f"{tar_path}: no member {member!r} in the tar file") from exc
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise MapReadError(f"{tar_path}: cannot read member {member!r} ({exc})") from exc


_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG_CHANNELS = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}  # by colour type: grey, RGB, palette, grey + alpha, RGBA
_ADAM7_PASSES = ((0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2))


def _png_chunks(handle) -> Iterator[tuple[bytes, bytes]]:
    """``(type, data)`` of each chunk of a PNG file open at its start, up to ``IEND``."""
    if handle.read(8) != _PNG_SIGNATURE:
        raise ValueError("no PNG signature")
    while True:
        header = handle.read(8)
        if len(header) < 8:
            raise ValueError("ends before its IEND chunk")
        length, kind = int.from_bytes(header[:4], "big"), header[4:]
        data = handle.read(length)
        handle.read(4)  # CRC: PIL has checked it
        if len(data) < length:
            raise ValueError(f"its {kind.decode('latin-1')} chunk is cut short")
        if kind == b"IEND":
            return
        yield kind, data


def _png_image_bytes(width: int, height: int, bit_depth: int, colour_type: int, interlace: int) -> int:
    """Bytes of a PNG's decompressed image data (filter byte + packed samples per row, Adam7 passes if interlaced)."""
    bits = _PNG_CHANNELS[colour_type] * bit_depth
    passes = _ADAM7_PASSES if interlace else ((0, 0, 1, 1),)
    total = 0
    for x0, y0, dx, dy in passes:
        columns, rows = -(-(width - x0) // dx), -(-(height - y0) // dy)
        if columns > 0 and rows > 0:
            total += rows * (1 + -(-columns * bits // 8))
    return total


def check_png_rows(data: bytes | str, where: str) -> None:
    """Refuse a PNG whose image data ends before its last row.

    A PNG whose ``IDAT`` holds a complete zlib stream of only some of its rows decodes in PIL
    without an error, the rows it lacks black, which a map reads as missing observations; here the
    decompressed data is counted (streamed, not kept) against what the header's rows need.

    Parameters
    ----------
    data : bytes or str
        The file's bytes, or its path.
    where : str
        The file, named in the error.

    Raises
    ------
    MapReadError
        The image data is shorter than its rows need, or the file is not a well-formed PNG.
    """
    import zlib

    handle = io.BytesIO(data) if isinstance(data, (bytes, bytearray)) else open(data, "rb")
    inflate, produced, needed = zlib.decompressobj(), 0, None
    try:
        with handle:
            for kind, chunk in _png_chunks(handle):
                if kind == b"IHDR":
                    width, height, bit_depth, colour_type, _, _, interlace = struct.unpack(">IIBBBBB", chunk[:13])
                    needed = _png_image_bytes(width, height, bit_depth, colour_type, interlace)
                elif kind == b"IDAT":
                    while chunk and produced <= needed:
                        produced += len(inflate.decompress(chunk, 1 << 20))
                        chunk = inflate.unconsumed_tail
    except (ValueError, KeyError, TypeError, struct.error, zlib.error) as exc:
        raise MapReadError(f"{where}: corrupt PNG ({exc})") from exc
    if needed is not None and produced < needed:
        raise MapReadError(f"{where}: damaged PNG: its image data ends after {produced:,} of the {needed:,} bytes its "
                           f"{height} rows need (truncated IDAT)")


def _to_rgb_u8(array: np.ndarray, mode: str, where: str) -> np.ndarray:
    """Validate a decoded image array and return it as contiguous uint8 (H, W, 3)."""
    if array.dtype != np.uint8:
        raise MapReadError(f"{where}: expected an 8-bit RGB image, got pixel type {array.dtype} (mode {mode})")
    if array.ndim != 3 or array.shape[2] not in (3, 4):
        bands = 1 if array.ndim == 2 else array.shape[2]
        raise MapReadError(
            f"{where}: expected an 8-bit RGB image (3 bands), got {bands} band(s) (mode {mode}); "
            "grayscale maps are not supported because red (dust) and blue (clouds) differ"
        )
    return np.ascontiguousarray(array[:, :, :3])


def _decode_with_pil(data: bytes | str, where: str) -> tuple[np.ndarray, bool]:
    """The uint8 (H, W, 3) pixels and whether the file is lossy (JPEG, or TIFF with JPEG compression)."""
    from PIL import Image, UnidentifiedImageError

    source = io.BytesIO(data) if isinstance(data, (bytes, bytearray)) else data
    try:
        with Image.open(source) as image:
            image.load()  # forces full decode: truncated files fail here
            if image.format == "PNG":
                check_png_rows(data, where)  # ... and PNGs whose data stops early, here
            lossy = image.format == "JPEG" or (
                image.format == "TIFF" and image.info.get("compression") in _LOSSY_TIFF_COMPRESSIONS)
            mode = image.mode
            if mode == "P":
                image = image.convert("RGBA" if "transparency" in image.info else "RGB")
                mode = image.mode
            if mode == "LA":
                raise MapReadError(f"{where}: expected an 8-bit RGB image, got a grayscale image (mode LA)")
            if mode not in ("RGB", "RGBA"):
                array = np.asarray(image)
                return _to_rgb_u8(array, mode, where), lossy
            array = np.asarray(image)
    except MapReadError:
        raise
    except Image.DecompressionBombError as exc:  # a header declaring more pixels than any MDGM has
        raise MapReadError(f"{where}: image declares too many pixels to be a map ({exc})") from exc
    except UnidentifiedImageError as exc:
        raise MapReadError(f"{where}: not a readable PNG/JPEG/TIFF image ({exc})") from exc
    except (OSError, SyntaxError, ValueError) as exc:
        raise MapReadError(f"{where}: corrupt or truncated image ({exc})") from exc
    return _to_rgb_u8(array, mode, where), lossy


def _decode_with_rasterio(data: bytes | str, where: str) -> tuple[np.ndarray, bool]:
    """GeoTIFFs PIL cannot decode (e.g. some compressions) through GDAL; also whether JPEG-compressed."""
    import rasterio
    from rasterio.io import MemoryFile

    try:
        if isinstance(data, (bytes, bytearray)):
            with MemoryFile(data) as memfile, memfile.open() as dataset:
                bands, compression = dataset.read(), dataset.compression
        else:
            with rasterio.open(data) as dataset:
                bands, compression = dataset.read(), dataset.compression
    except rasterio.errors.RasterioError as exc:
        raise MapReadError(f"{where}: corrupt or unreadable TIFF ({exc})") from exc
    if bands.shape[0] not in (3, 4):
        raise MapReadError(f"{where}: expected an 8-bit RGB image (3 bands), got {bands.shape[0]} band(s)")
    lossy = compression is not None and compression.name.lower() == "jpeg"
    return _to_rgb_u8(np.moveaxis(bands, 0, -1), f"{bands.shape[0]}-band GeoTIFF", where), lossy


def read_map_array(path: str | os.PathLike) -> np.ndarray:
    """Decode a map file to a uint8 ``(H, W, 3)`` array without building float RGB (:func:`read_map_pixels`)."""
    return read_map_pixels(path)[0]


def read_map_pixels(path: str | os.PathLike) -> tuple[np.ndarray, bool]:
    """Decode a map file to a uint8 ``(H, W, 3)`` array, and tell whether the file is lossy.

    Missing pixels come back as decoded: exact black in a lossless file, near-black noise in a
    lossy one (:func:`valid_mask` with ``lossy`` tells them apart).

    Parameters
    ----------
    path : str or path-like
        Image file (PNG, JPEG, TIFF, GeoTIFF) or ``TARFILE::MEMBER``.

    Returns
    -------
    (rgb_u8, lossy)
        The pixels, and True for a JPEG or a JPEG-compressed TIFF.

    Raises
    ------
    MapReadError
        Missing, corrupt, truncated or non-RGB file.
    """
    where = os.fspath(path)
    file_path, member = split_tar_path(where)
    if member is not None:
        data: bytes | str = _read_tar_member(file_path, member)
        name = member
    else:
        if not os.path.isfile(file_path):
            raise MapReadError(f"{file_path}: map file not found")
        data = file_path
        name = file_path
    is_tiff = name.lower().endswith((".tif", ".tiff"))
    try:
        return _decode_with_pil(data, where)
    except MapReadError as pil_error:
        if not is_tiff or "band" in str(pil_error) or "8-bit" in str(pil_error):
            raise
        return _decode_with_rasterio(data, where)


def read_map_shape(path: str | os.PathLike) -> tuple[int, int]:
    """``(rows, columns)`` of a map file from its header, without decoding its pixels.

    Raises
    ------
    MapReadError
        Missing file or tar member, or not an image (a TIFF PIL cannot open is decoded instead).
    """
    from PIL import Image

    where = os.fspath(path)
    file_path, member = split_tar_path(where)
    if member is None and not os.path.isfile(file_path):
        raise MapReadError(f"{file_path}: map file not found")
    data = io.BytesIO(_read_tar_member(file_path, member)) if member is not None else file_path
    try:
        with Image.open(data) as image:
            width, height = image.size
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        if not (member or file_path).lower().endswith((".tif", ".tiff")):
            raise MapReadError(f"{where}: not a readable PNG/JPEG/TIFF image ({exc})") from exc
        height, width = read_map_pixels(where)[0].shape[:2]
    return height, width


def working_grid(path: str | os.PathLike, res_deg: float) -> MapGrid:
    """The grid a map is read on at ``res_deg`` (:func:`read_map_resampled`), from its header only.

    Raises
    ------
    MapReadError
        As :func:`read_map_shape`; a shape that is no known grid; ``res_deg`` not a whole multiple
        of the map's resolution, or blocks that do not divide the map.
    """
    where = os.fspath(path)
    native = _grid_for_shape(*read_map_shape(where), None, where)
    return native.rescaled(_integer_factor(native, float(res_deg), where))


def _grid_for_shape(height: int, width: int, grid: MapGrid | None, where: str) -> MapGrid:
    if grid is None:
        try:
            return MapGrid.from_shape(height, width)
        except ValueError as exc:
            raise MapReadError(f"{where}: {exc}") from exc
    if grid.shape != (height, width):
        raise MapReadError(
            f"{where}: map is {height} x {width} pixels but the expected grid "
            f"({grid.lat_south_deg}°–{grid.lat_north_deg}° at {grid.res_deg}°) is {grid.height} x {grid.width}"
        )
    return grid


def map_image_from_array(rgb_u8: np.ndarray, grid: MapGrid | None = None, path: str = "",
                         lossy: bool = False) -> MapImage:
    """Build a :class:`MapImage` from a uint8 ``(H, W, 3)`` array (grid inferred from shape if None).

    ``lossy``: the array was decoded from a lossy file; missing pixels are found by
    :func:`valid_mask`'s lossy rule and set to 0 in all bands.
    """
    height, width = rgb_u8.shape[:2]
    grid = _grid_for_shape(height, width, grid, path or "array")
    valid = valid_mask(rgb_u8, lossy)
    rgb = np.multiply(rgb_u8, np.float32(1.0 / 255.0), dtype=np.float32)
    if lossy:
        rgb[~valid] = 0.0
    return MapImage(rgb=rgb, valid=valid, grid=grid, path=path)


def read_map(path: str | os.PathLike, grid: MapGrid | None = None) -> MapImage:
    """Read one MDGM.

    Parameters
    ----------
    path : str or path-like
        PNG, JPEG, TIFF or GeoTIFF file, or ``TARFILE::MEMBER`` for a map inside a tar file.
    grid : MapGrid, optional
        Expected grid. If omitted, inferred from the image shape with
        :meth:`MapGrid.from_shape` (MOC: height = width / 3; MARCI: height = width / 2).

    Returns
    -------
    MapImage
        float32 RGB in [0, 1], validity mask (:func:`valid_mask`: not black in all bands; for a
        JPEG, luma above :data:`LOSSY_MISSING_LUMA`), grid and path.

    Raises
    ------
    MapReadError
        Missing, corrupt or truncated file; not 8-bit RGB; shape not a known grid or not the
        given ``grid``'s shape.
    """
    where = os.fspath(path)
    rgb_u8, lossy = read_map_pixels(where)
    return map_image_from_array(rgb_u8, grid, where, lossy)


def _block_sum(array: np.ndarray, factor: int, row_dtype, out_dtype) -> np.ndarray:
    """Sum ``factor x factor`` blocks of an ``(H, W)`` or ``(H, W, C)`` array.

    Adds whole contiguous row slices and then column slices (``factor`` vector additions
    each), which is several times faster than ``reshape(...).sum(axis=(1, 3))`` on strided
    axes.
    """
    height, width = array.shape[:2]
    channels = array.shape[2:]
    out_h, out_w = height // factor, width // factor
    rows = array.reshape(out_h, factor, width, *channels)
    row_sum = rows[:, 0].astype(row_dtype)
    for i in range(1, factor):
        row_sum += rows[:, i]
    cols = row_sum.reshape(out_h, out_w, factor, *channels)
    total = cols[:, :, 0].astype(out_dtype)
    for i in range(1, factor):
        total += cols[:, :, i]
    return total


def _block_average(rgb: np.ndarray, valid: np.ndarray, factor: int, scale: float):
    """Block average ``rgb`` over valid pixels; a block is valid if >= half its pixels are.

    ``rgb`` is uint8 (scale 1/255) or float32 (scale 1); invalid pixels must be 0 in all bands,
    so the plain block sum is the sum over valid pixels.
    """
    if rgb.dtype == np.uint8:
        row_dtype = np.uint16 if factor * 255 <= np.iinfo(np.uint16).max else np.uint32
    else:
        row_dtype = np.float32
    sums = _block_sum(rgb, factor, row_dtype, np.float32)
    count_dtype = np.uint8 if factor * factor <= 255 else np.uint32
    counts = _block_sum(valid.view(np.uint8), factor, count_dtype, count_dtype)
    valid_out = counts.astype(np.int64) * 2 >= factor * factor
    inv = np.float32(scale) / np.maximum(counts, 1).astype(np.float32)
    sums *= inv[..., None]
    sums[~valid_out] = 0.0
    return sums, valid_out


def valid_mask(rgb_u8: np.ndarray, lossy: bool = False) -> np.ndarray:
    """Pixels of a uint8 ``(H, W, 3)`` map that hold an observation.

    Lossless maps (``lossy=False``): every pixel not exactly black (0, 0, 0). Lossy maps (JPEG):
    every pixel whose luma 0.299 R + 0.587 G + 0.114 B exceeds :data:`LOSSY_MISSING_LUMA`.
    """
    if not lossy:
        return (rgb_u8[..., 0] | rgb_u8[..., 1] | rgb_u8[..., 2]) != 0
    luma_x1000 = rgb_u8[..., 0] * np.uint32(299) + rgb_u8[..., 1] * np.uint32(587) + rgb_u8[..., 2] * np.uint32(114)
    return luma_x1000 > 1000 * LOSSY_MISSING_LUMA


def _integer_factor(grid: MapGrid, res_deg: float, where: str) -> int:
    ratio = res_deg / grid.res_deg
    factor = int(round(ratio))
    if factor < 1 or abs(ratio - factor) > 1e-6:
        raise MapReadError(
            f"{where}: cannot block-average a {grid.res_deg}° map to {res_deg}°: "
            "the target resolution must be a whole multiple of the map's"
        )
    if grid.height % factor or grid.width % factor:
        raise MapReadError(f"{where}: {grid.height} x {grid.width} map is not divisible into {factor} x {factor} blocks "
                           f"for the {res_deg}° working resolution; use a detector trained at a resolution whose "
                           "blocks divide the map (--map-res-deg)")
    return factor


def downsample(image: MapImage, factor: int) -> MapImage:
    """Block-average a map to a grid ``factor`` times coarser, counting valid pixels only.

    Parameters
    ----------
    image : MapImage
    factor : int
        Block size in pixels (4 turns a 0.1° map into 0.4°). Must divide height and width.

    Returns
    -------
    MapImage
        ``rgb`` is the mean of the block's valid pixels; a block is valid where at least half
        of its pixels are; invalid blocks are 0 (black) in all bands.
    """
    factor = int(factor)
    if factor == 1:
        return image
    _integer_factor(image.grid, image.grid.res_deg * factor, image.path or "map")
    rgb, valid = _block_average(image.rgb, image.valid, factor, 1.0)
    return MapImage(rgb=rgb, valid=valid, grid=image.grid.rescaled(factor), path=image.path)


def read_map_resampled(path: str | os.PathLike, res_deg: float, grid: MapGrid | None = None) -> MapImage:
    """Read a map and block-average it to ``res_deg`` degrees per pixel (see :func:`downsample`).

    Averages straight from the 8-bit pixels, so the full-resolution float image is never built
    (about 3x faster than ``downsample(read_map(path), factor)`` for 0.1° → 0.4°).
    ``res_deg`` must be a whole multiple of the map's resolution.
    """
    return read_map_resampled_with_grid(path, res_deg, grid)[0]


def read_map_resampled_with_grid(
    path: str | os.PathLike, res_deg: float, grid: MapGrid | None = None
) -> tuple[MapImage, MapGrid]:
    """:func:`read_map_resampled`, also returning the map's native grid (file decoded once).

    Parameters
    ----------
    path : str or path-like
        Map file or ``TARFILE::MEMBER`` (see :func:`read_map`).
    res_deg : float
        Target resolution in degrees per pixel; a whole multiple of the map's resolution.
    grid : MapGrid, optional
        Expected native grid; inferred from the image shape if omitted.

    Returns
    -------
    (MapImage, MapGrid)
        The map block-averaged to ``res_deg``, and the grid of the file's own pixels (e.g. to
        convert boxes found at ``res_deg`` back to native pixels).

    Raises
    ------
    MapReadError
        As :func:`read_map`; also when ``res_deg`` is not a whole multiple of the native
        resolution or the native shape does not divide into blocks.
    """
    where = os.fspath(path)
    rgb_u8, lossy = read_map_pixels(where)
    native = _grid_for_shape(rgb_u8.shape[0], rgb_u8.shape[1], grid, where)
    factor = _integer_factor(native, float(res_deg), where)
    if factor == 1:
        return map_image_from_array(rgb_u8, native, where, lossy), native
    valid = valid_mask(rgb_u8, lossy)
    if lossy:
        rgb_u8 = np.where(valid[..., None], rgb_u8, np.uint8(0))  # block sums count valid pixels only
    rgb, valid_out = _block_average(rgb_u8, valid, factor, 1.0 / 255.0)
    return MapImage(rgb=rgb, valid=valid_out, grid=native.rescaled(factor), path=where), native


# ---------------------------------------------------------------------------------------------
# archive index
# ---------------------------------------------------------------------------------------------
def _is_map_name(name: str) -> bool:
    return name.lower().endswith(MAP_EXTENSIONS)


def _strip_map_extension(name: str) -> str:
    base = name.rsplit("/", 1)[-1].strip()
    lower = base.lower()
    for ext in MAP_EXTENSIONS:
        if lower.endswith(ext):
            return base[: -len(ext)]
    return base


def _is_tar_name(name: str) -> bool:
    return name.lower().endswith(_TAR_SUFFIXES)


_NUMBER = re.compile(r"^[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?$")


def parse_list_ls(text: str, source: str) -> tuple[list[tuple[str, int, float]], list[dict]]:
    """Parse a ``list_ls.txt``: lines ``name  mars_year  ls``.

    Whitespace or commas separate fields; ``#`` starts a comment; the first non-comment line
    may be a header (non-numeric year/Ls fields and a first field that is not a map name, e.g.
    ``name mars_year ls``). Names may carry an extension. Mars years must be whole numbers >= 0
    and Ls in [0, 360] degrees (360 is read as 0); other lines are problems, not wrapped.

    Returns
    -------
    entries : list of (stem, mars_year, ls_deg)
    problems : list of dict
        One per unusable line (``kind="bad_list_line"``), ``where`` = ``source:LINE`` (1-based).
    """
    entries, problems = _parse_list_ls_lines(text, source)
    return [entry[:3] for entry in entries], problems


def _list_line_problem(source: str, line_no: int, detail: str) -> dict:
    return {"kind": "bad_list_line", "where": f"{source}:{line_no}", "detail": detail}


def _is_header_line(fields: list[str]) -> bool:
    """A first line is a header if its first field is not a map name (``name``, ``MDGM``, ``file``)."""
    try:
        parse_map_name(_strip_map_extension(fields[0]))
    except ValueError:
        return True
    return False


def _parse_list_ls_lines(text: str, source: str) -> tuple[list[tuple[str, int, float, int]], list[dict]]:
    """:func:`parse_list_ls` with the line number of each entry (``(stem, year, ls, line)``)."""
    entries: list[tuple[str, int, float, int]] = []
    problems: list[dict] = []
    first = True
    for line_no, raw in enumerate(text.splitlines(), start=1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        fields = [f for f in re.split(r"[,\s;]+", line) if f]
        numeric = len(fields) >= 3 and _NUMBER.match(fields[1]) and _NUMBER.match(fields[2])
        if first and not numeric and _is_header_line(fields):
            first = False
            continue
        first = False
        if not numeric:
            problems.append(_list_line_problem(source, line_no, f"expected 'name mars_year ls', got {raw.strip()!r}"))
            continue
        year, ls = float(fields[1]), float(fields[2])
        if year != int(year) or year < 0:
            problems.append(_list_line_problem(source, line_no, f"Mars year {fields[1]!r} is not a whole number >= 0"))
            continue
        if not 0.0 <= ls <= 360.0:
            problems.append(_list_line_problem(source, line_no, f"Ls {fields[2]!r} is outside [0, 360] degrees"))
            continue
        entries.append((_strip_map_extension(fields[0]), int(year), ls % 360.0, line_no))
    return entries, problems


@dataclass
class _Subphase:
    """Files of one subphase (folder or tar): map stem -> path string, and the list_ls text."""

    source: str
    maps: dict[str, str]
    list_text: str | None
    problems: list[dict]


def read_list_ls_file(path: str | os.PathLike) -> str:
    """The text of a ``list_ls.txt`` file (UTF-8, undecodable bytes replaced), at most :data:`MAX_LIST_LS_BYTES`.

    Raises
    ------
    MapReadError
        The file is larger than :data:`MAX_LIST_LS_BYTES`.
    OSError
        It cannot be read.
    """
    with open(path, "rb") as handle:
        data = read_bounded(handle, os.fstat(handle.fileno()).st_size, MAX_LIST_LS_BYTES, os.fspath(path))
    return data.decode("utf-8", errors="replace")


def _list_ls_problem(where: str, error: MapReadError) -> dict:
    detail = str(error).removeprefix(f"{where}: ")
    return {"kind": "unreadable_list_ls", "where": where, "detail": f"{detail}; the subphase's maps are not indexed"}


def _collect_folder(folder: Path) -> _Subphase:
    maps: dict[str, str] = {}
    problems: list[dict] = []
    list_text, list_found = None, False
    candidates = sorted(p for p in folder.rglob("*") if p.is_file())
    for path in candidates:
        if path.name.lower() == "list_ls.txt":
            if not list_found:
                list_found = True
                try:
                    list_text = read_list_ls_file(path)
                except MapReadError as exc:
                    problems.append(_list_ls_problem(str(path), exc))
            continue
        if _is_map_name(path.name):
            _add_map(maps, path.name, str(path.resolve()), str(folder), problems)
    return _Subphase(str(folder), maps, list_text, problems)


def _collect_tar(tar_path: Path) -> _Subphase:
    maps: dict[str, str] = {}
    problems: list[dict] = []
    list_text, list_found = None, False
    resolved = str(tar_path.resolve())
    try:
        with tarfile.open(tar_path, mode="r:*") as tar:
            for member in tar.getmembers():
                if not member.isfile():
                    continue
                base = member.name.rsplit("/", 1)[-1]
                if base.lower() == "list_ls.txt":
                    if not list_found:
                        list_found = True
                        list_text = _tar_list_text(tar, member, f"{tar_path}{TAR_SEPARATOR}{member.name}", problems)
                elif _is_map_name(base):
                    _add_map(maps, base, f"{resolved}{TAR_SEPARATOR}{member.name}", str(tar_path), problems)
    except (tarfile.TarError, OSError, EOFError) as exc:
        problems.append({"kind": "unreadable_tar", "where": str(tar_path), "detail": str(exc)})
    return _Subphase(str(tar_path), maps, list_text, problems)


def _tar_list_text(tar: tarfile.TarFile, member: tarfile.TarInfo, where: str, problems: list[dict]) -> str | None:
    """The text of a tar's ``list_ls.txt`` member, or None with an ``unreadable_list_ls`` problem if it is too large."""
    handle = tar.extractfile(member)
    if handle is None:
        return ""
    try:
        return read_bounded(handle, member.size, MAX_LIST_LS_BYTES, where).decode("utf-8", errors="replace")
    except MapReadError as exc:
        problems.append(_list_ls_problem(where, exc))
        return None


def _add_map(maps: dict[str, str], name: str, path: str, source: str, problems: list[dict]) -> None:
    if printable(path) != path:
        problems.append({"kind": "undecodable_name", "where": source,
                         "detail": f"{printable(path)}: the file name is not UTF-8 (no table could name it); "
                                   "rename it to index the map"})
        return
    stem = _strip_map_extension(name)
    if stem in maps:
        problems.append({"kind": "duplicate_map", "where": source,
                         "detail": f"{stem}: both {maps[stem]} and {path}; using the first"})
        return
    maps[stem] = path


def _rows_from_subphase(sub: _Subphase) -> tuple[list[dict], list[dict]]:
    problems = list(sub.problems)
    if sub.list_text is None:
        if sub.maps and not any(p["kind"] == "unreadable_list_ls" for p in problems):
            problems.append({"kind": "missing_list_ls", "where": sub.source,
                             "detail": f"no list_ls.txt; {len(sub.maps)} map(s) not indexed"})
        return [], problems
    list_path = f"{sub.source}/list_ls.txt"
    entries, list_problems = _parse_list_ls_lines(sub.list_text, list_path)
    problems.extend(list_problems)
    rows = []
    listed = set()
    for stem, year, ls, line_no in entries:
        listed.add(stem)
        path = sub.maps.get(stem)
        if path is None:
            problems.append({"kind": "missing_map", "where": f"{list_path}:{line_no}",
                             "detail": f"{stem} is in list_ls.txt but no map file exists"})
            continue
        row = _index_row(stem, year, ls, path, sub.source, problems)
        if row:
            rows.append(row)
    for stem in sorted(set(sub.maps) - listed):
        problems.append({"kind": "unlisted_map", "where": sub.source,
                         "detail": f"{sub.maps[stem]} is not in list_ls.txt (no Mars year / Ls): not indexed"})
    return rows, problems


def _index_row(stem: str, year: int, ls: float, path: str, source: str, problems: list[dict]) -> dict | None:
    try:
        subphase, sol = parse_map_name(stem)
    except ValueError as exc:
        problems.append({"kind": "bad_map_name", "where": source, "detail": str(exc)})
        return None
    return {"map_id": make_map_id(subphase, sol), "subphase": subphase, "sol": sol,
            "mars_year": int(year), "ls": float(ls), "path": path}


def _first_column(columns, names: tuple[str, ...]) -> str | None:
    lookup = {str(c).strip().lower(): c for c in columns}
    for name in names:
        if name in lookup:
            return lookup[name]
    return None


def _rows_from_manifest(folder: Path, manifest: Path) -> tuple[list[dict], list[dict]]:
    try:
        table = pd.read_csv(manifest, dtype=str, skipinitialspace=True, comment="#")
    except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise ValueError(f"{manifest}: cannot read manifest CSV ({exc})") from exc
    name_col = _first_column(table.columns, ("map_id", "name", "file", "filename"))
    year_col = _first_column(table.columns, ("mars_year", "my", "mars year"))
    ls_col = _first_column(table.columns, ("ls", "l_s", "swathls"))
    missing = [n for n, c in (("map_id (or name/file)", name_col), ("mars_year", year_col), ("ls", ls_col)) if c is None]
    if missing:
        raise ValueError(f"{manifest}: manifest CSV lacks column(s) {', '.join(missing)}; found {list(table.columns)}")
    maps: dict[str, str] = {}
    problems: list[dict] = []
    for path in sorted(folder.iterdir()):
        if path.is_file() and _is_map_name(path.name):
            _add_map(maps, path.name, str(path.resolve()), str(folder), problems)
    rows = []
    listed = set()
    for line_no, record in enumerate(table.itertuples(index=False), start=2):
        record_map = dict(zip(table.columns, record))
        stem = _strip_map_extension(str(record_map[name_col]))
        try:
            year_f = float(record_map[year_col])
            ls = float(record_map[ls_col])
            if not np.isfinite(ls) or year_f != int(year_f):
                raise ValueError
        except (TypeError, ValueError):
            problems.append({"kind": "bad_manifest_row", "where": f"{manifest}:{line_no}",
                             "detail": f"need a whole Mars year and a numeric Ls, got {record_map}"})
            continue
        listed.add(stem)
        if stem not in maps:
            problems.append({"kind": "missing_map", "where": str(manifest),
                             "detail": f"{stem} is in the manifest but no map file exists in {folder}"})
            continue
        row = _index_row(stem, int(year_f), ls % 360.0, maps[stem], str(folder), problems)
        if row:
            rows.append(row)
    for stem in sorted(set(maps) - listed):
        problems.append({"kind": "unlisted_map", "where": str(folder),
                         "detail": f"{maps[stem]} is not in the manifest (no Mars year / Ls): not indexed"})
    return rows, problems


def _subphase_sources(root: Path) -> list[_Subphase]:
    if root.is_file():
        return [_collect_tar(root)]
    if (root / "list_ls.txt").is_file():
        return [_collect_folder(root)]
    sources = []
    for child in sorted(root.iterdir()):
        if child.is_dir() and not child.name.startswith("."):
            sources.append(_collect_folder(child))
        elif child.is_file() and _is_tar_name(child.name):
            sources.append(_collect_tar(child))
    return sources


def _finish_index(rows: list[dict], problems: list[dict], source: str) -> pd.DataFrame:
    df = pd.DataFrame(rows, columns=INDEX_COLUMNS)
    duplicated = df["map_id"].duplicated(keep="first")
    for map_id in df.loc[duplicated, "map_id"]:
        problems.append({"kind": "duplicate_map", "where": source,
                         "detail": f"{map_id} appears in more than one subphase; keeping the first"})
    df = df.loc[~duplicated]
    df = df.astype({"sol": "int64", "mars_year": "int64", "ls": "float64"})
    df = df.sort_values(["mars_year", "ls", "map_id"], kind="stable").reset_index(drop=True)
    df.attrs["problems"] = problems
    if problems:
        counts: dict[str, int] = {}
        for problem in problems:
            counts[problem["kind"]] = counts.get(problem["kind"], 0) + 1
        summary = ", ".join(f"{n} {kind}" for kind, n in sorted(counts.items()))
        log.warning("%s: indexed %d maps; %d problem(s): %s (see df.attrs['problems'])",
                    source, len(df), len(problems), summary)
    return df


def read_index(path: str | os.PathLike) -> pd.DataFrame:
    """Load an index saved by :func:`save_index` (CSV or Parquet); relative paths resolve against its folder."""
    path = Path(path)
    try:
        if path.suffix.lower() == ".parquet":
            df = pd.read_parquet(path)
        else:
            df = pd.read_csv(path, dtype={"map_id": str, "subphase": str, "path": str})
    except (OSError, ValueError, pd.errors.ParserError) as exc:
        raise ValueError(f"{path}: cannot read archive index ({exc})") from exc
    missing = [c for c in INDEX_COLUMNS if c not in df.columns]
    if missing:
        raise ValueError(f"{path}: not an archive index: missing column(s) {missing}; found {list(df.columns)}")
    base = path.resolve().parent

    def absolute(p: str) -> str:
        file_part, member = split_tar_path(p)
        resolved = str(base / file_part) if not os.path.isabs(file_part) else file_part
        return resolved if member is None else f"{resolved}{TAR_SEPARATOR}{member}"

    df = df[INDEX_COLUMNS].copy()
    _check_index_numbers(df, path)
    df["path"] = [absolute(p) for p in df["path"].astype(str)]
    return _finish_index(df.to_dict("records"), [], str(path))


def _check_index_numbers(df: pd.DataFrame, path: Path) -> None:
    """Raise ValueError naming file, row and column for the first non-numeric or out-of-range value."""
    checks = (
        ("sol", lambda v: (v == v.round()) & (v >= 0), "a whole sol number >= 0"),
        ("mars_year", lambda v: (v == v.round()) & (v >= 0), "a whole Mars year >= 0"),
        ("ls", lambda v: (v >= 0) & (v < 360), "Ls in [0, 360) degrees"),
    )
    for column, valid, expected in checks:
        values = pd.to_numeric(df[column], errors="coerce")
        bad = ~(values.notna() & valid(values))
        if bad.any():
            position = int(np.argmax(bad.to_numpy()))
            more = f" (and {int(bad.sum()) - 1} more row(s))" if bad.sum() > 1 else ""
            raise ValueError(f"{path}: row {position + 2}, column {column!r}: expected {expected}, got "
                             f"{df[column].iloc[position]!r}{more}")
        df[column] = values


def index_archive(path: str | os.PathLike, manifest: str | os.PathLike | None = None) -> pd.DataFrame:
    """Index an MDGM archive.

    Parameters
    ----------
    path : str or path-like
        One of: an archive folder holding one folder or tar file per mission subphase (each
        with a ``list_ls.txt``); a single subphase folder or tar; a flat folder of maps (with
        ``manifest``); or a saved index (``.csv`` / ``.parquet``), which is loaded.
    manifest : str or path-like, optional
        CSV with columns ``map_id`` (or ``name`` / ``file``), ``mars_year``, ``ls`` for a flat folder.

    Returns
    -------
    DataFrame
        Columns ``map_id, subphase, sol, mars_year, ls, path`` (``ls`` in degrees [0, 360),
        ``path`` a file path or ``TARFILE::MEMBER``), sorted by (mars_year, ls, map_id).
        ``df.attrs["problems"]`` is a list of dicts ``{kind, where, detail}``: maps listed but
        missing (``missing_map``), map files not listed (``unlisted_map``), unparseable
        list/manifest lines, subphases without ``list_ls.txt`` (or with one larger than
        :data:`MAX_LIST_LS_BYTES`), duplicates, map files whose names are not UTF-8
        (``undecodable_name``, not indexed). A warning with the
        counts is logged when there are any.

    Raises
    ------
    FileNotFoundError
        ``path`` does not exist.
    ValueError
        Unreadable manifest or saved index.
    """
    root = Path(path)
    if not root.exists():
        raise FileNotFoundError(f"{root}: archive not found")
    if root.is_file() and root.suffix.lower() in (".csv", ".parquet") and manifest is None:
        return read_index(root)
    if manifest is not None:
        if not root.is_dir():
            raise ValueError(f"{root}: with a manifest, the archive must be a folder of maps")
        rows, problems = _rows_from_manifest(root, Path(manifest))
        return _finish_index(rows, problems, str(root))
    if root.is_file() and not _is_tar_name(root.name):
        raise ValueError(f"{root}: expected an archive folder, a subphase tar file or an index CSV")
    rows: list[dict] = []
    problems: list[dict] = []
    for sub in _subphase_sources(root):
        sub_rows, sub_problems = _rows_from_subphase(sub)
        rows.extend(sub_rows)
        problems.extend(sub_problems)
    return _finish_index(rows, problems, str(root))


def problems_table(index: pd.DataFrame) -> pd.DataFrame:
    """The problems found while indexing, as a table ``kind, where, detail``."""
    return pd.DataFrame(index.attrs.get("problems", []), columns=["kind", "where", "detail"])



def save_index(df: pd.DataFrame, path: str | os.PathLike) -> None:
    """Write an archive index atomically: Parquet if ``path`` ends in ``.parquet``, else CSV."""
    table = df[INDEX_COLUMNS]
    table.attrs = {}
    write_table_atomic(table, path)
