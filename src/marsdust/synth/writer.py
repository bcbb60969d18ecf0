"""Writers of the synthetic archive (MDGM folders + list_ls.txt), and the guard that keeps a new synthesis
from mixing with an earlier one.

Files follow the real archives' and MDAD's layouts (README, "Real data") and are written atomically
(temporary file in the same folder, then ``os.replace``). The MDAD files are written by the format
modules, the same writers as detection output: the v1.0 table by
:func:`marsdust.formats.mdad_table.write_v10_table`, the v1.1 cubes and master CSVs by
:class:`marsdust.formats.mdad_cube.MaskCubeWriter` and :func:`marsdust.formats.mdad_cube.write_master_csv`,
following the layout and latitude registration of :mod:`marsdust.mdad_format`.
"""

from __future__ import annotations

import io
import shutil
from pathlib import Path

import numpy as np
import pandas as pd

from marsdust.fileio import atomic_output, write_text_atomic

SYNTH_OUTPUT_DIRS = ("archive", "mdad", "truth", "cloudmask")
"""The subfolders of an output folder that a synthesis writes, owns and (with ``overwrite``) removes."""


class SynthOutputExistsError(FileExistsError):
    """The output folder already holds an earlier synthesis (and ``overwrite`` was not given)."""


def prepare_output_dir(out_dir, overwrite: bool = False) -> Path:
    """Make ``out_dir`` ready for a new synthesis; returns it as a Path.

    An earlier synthesis left in place would mix with the new one (its maps stay in ``archive/``
    unlisted, its cubes in ``mdad/``), so a folder that already holds any of
    :data:`SYNTH_OUTPUT_DIRS` is refused with :class:`SynthOutputExistsError`, unless
    ``overwrite``: then exactly those subfolders are removed (a symbolic link among them is
    unlinked, never followed) and everything else in ``out_dir`` is left alone.
    """
    out = Path(out_dir)
    existing = [out / name for name in SYNTH_OUTPUT_DIRS if (out / name).exists() or (out / name).is_symlink()]
    if not existing:
        return out
    if not overwrite:
        names = ", ".join(f"{p.name}/" for p in existing)
        raise SynthOutputExistsError(
            f"{out} already holds a synthesis ({names}); pass --overwrite (overwrite=True) to replace it, "
            f"or choose another folder")
    for path in existing:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink()
    return out



def write_png(rgb: np.ndarray, path: Path, compress_level: int = 1) -> None:
    """Write an 8-bit RGB map as PNG.

    zlib level 1 with the run-length strategy (``Z_RLE``): on these maps (smooth ground, fine
    noise; Pillow picks the Paeth filter) it is about as small as level 6 and 4–5× faster.
    """
    import zlib

    from PIL import Image

    with atomic_output(path) as tmp:
        Image.fromarray(rgb, mode="RGB").save(tmp, format="PNG", compress_level=compress_level,
                                              compress_type=zlib.Z_RLE)


def write_jpeg(rgb: np.ndarray, path: Path, quality: int) -> None:
    """Write an 8-bit RGB map as baseline JPEG at ``quality`` (Pillow's 1–95 scale, 4:2:0 chroma)."""
    from PIL import Image

    with atomic_output(path) as tmp:
        Image.fromarray(rgb, mode="RGB").save(tmp, format="JPEG", quality=quality, subsampling="4:2:0")


def jpeg_round_trip(rgb: np.ndarray, valid: np.ndarray, quality: int) -> np.ndarray:
    """The map after JPEG compression (4:2:0 chroma) and decompression; exactly black where invalid only."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(rgb, mode="RGB").save(buffer, format="JPEG", quality=int(quality), subsampling=2)
    decoded = np.array(Image.open(io.BytesIO(buffer.getvalue())).convert("RGB"))
    decoded[~valid] = 0
    black = valid & ~decoded.any(axis=2)
    decoded[black, 0] = 1
    return decoded


def write_list_ls(rows: pd.DataFrame, path: Path, name_column: str = "map_id") -> None:
    """``list_ls.txt``: header, then ``name  mars_year  ls`` per map.

    The name is the map file's stem, taken from ``rows[name_column]`` (the map id for MOC-style
    file names like ``r18_040.png``; a ``B05_day03.jpg`` map needs its own column).
    """
    lines = ["# name mars_year ls"] + [f"{name}  {int(year)}  {ls:.3f}"
                                       for name, year, ls in zip(rows[name_column], rows["mars_year"], rows["ls"])]
    write_text_atomic(path, "\n".join(lines) + "\n")
