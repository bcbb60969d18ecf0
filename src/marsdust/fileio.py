"""Atomic file output, shared by every writer in marsdust.

A file is written to a temporary name in its final folder and moved into place with
:func:`os.replace` only when the writer succeeded, so a crash, a kill or an exception never
leaves a partial or half-written product behind (and an earlier complete file stays intact).
"""

from __future__ import annotations

import errno
import os
import shutil
import tempfile
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import pandas as pd


TEMP_PREFIX = ".marsdust-"
"""Start of the names of marsdust's temporary files (hidden, and never a name a user picks by chance)."""

TEMP_MARK = ".tmp"
"""Part of every temporary file name, before the kept suffix: ``.marsdust-<name>.<random>.tmp<suffix>``."""


class DiskFullError(OSError):
    """Writing an output failed because its disk (or quota) is full; the message names the file."""


def _disk_is_full(error: BaseException, folder: Path) -> bool:
    """True if ``error`` is (or, for libraries that hide errno such as netCDF/HDF5, looks like) a full disk."""
    if isinstance(error, OSError) and (error.errno or 0) > 0:  # a system errno (netCDF uses negative codes)
        return error.errno in (errno.ENOSPC, errno.EDQUOT)
    if isinstance(error, (RuntimeError, OSError)):
        try:
            return shutil.disk_usage(folder).free < 1024 * 1024
        except OSError:
            return False
    return False


def remove_stale_temp_files(folder: str | os.PathLike, name: str | None = None) -> int:
    """Delete the temporary files :func:`atomic_output` left in ``folder`` when its process was killed.

    Only files named as marsdust names them (:data:`TEMP_PREFIX` ... :data:`TEMP_MARK`) and that are
    plain files (not links) are removed: a user's own ``.work.tmp`` stays. With ``name``, only those
    of the output file ``name`` (call this before writing it again); without, every one: only call
    that while no other marsdust writer uses ``folder``. Returns how many were removed.
    """
    import glob

    removed = 0
    pattern = f"{TEMP_PREFIX}*{TEMP_MARK}*" if name is None else f"{TEMP_PREFIX}{glob.escape(name)}.*{TEMP_MARK}*"
    for path in Path(folder).glob(pattern):
        if path.is_file() and not path.is_symlink():
            path.unlink(missing_ok=True)
            removed += 1
    return removed


def temp_path_beside(path: str | os.PathLike) -> Path:
    """A new empty temporary file in ``path``'s folder (created if missing), keeping its suffix.

    For writers that keep a file open across calls; move it into place with ``os.replace`` when
    complete (or use :func:`atomic_output`, which does that for a ``with`` block). Created with
    ``O_CREAT | O_EXCL`` (:func:`tempfile.mkstemp`), so an existing file or link is never followed.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f"{TEMP_PREFIX}{path.name}.", suffix=f"{TEMP_MARK}{path.suffix}",
                                    dir=path.parent)
    os.close(fd)
    return Path(tmp_name)


_UMASK_LOCK = threading.Lock()


def _umask() -> int:
    """The process's file-creation mask (read without changing it for long).

    Reading it means setting it, so two threads doing this at once could leave 0o022 behind for
    good: the lock keeps the set-and-restore pairs from interleaving (``detect`` writes from
    several threads on a GPU).
    """
    with _UMASK_LOCK:
        mask = os.umask(0o022)
        os.umask(mask)
    return mask


@contextmanager
def atomic_output(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; move it onto ``path`` only if the block succeeds.

    The temporary file keeps ``path``'s suffix (format drivers pick formats by suffix) and is
    removed if the block raises. A full disk is raised as :class:`DiskFullError` naming ``path``.
    """
    try:
        tmp = temp_path_beside(path)
    except OSError as err:
        if _disk_is_full(err, Path(path).parent):
            raise DiskFullError(f"{path}: cannot write, the disk is full ({err})") from err
        raise
    try:
        yield tmp
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp's private 0600 would stick to the product
        os.replace(tmp, path)
    except BaseException as err:
        tmp.unlink(missing_ok=True)
        if not isinstance(err, DiskFullError) and isinstance(err, Exception) and _disk_is_full(err, Path(path).parent):
            raise DiskFullError(f"{path}: cannot write, the disk is full ({type(err).__name__}: {err})") from err
        raise


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    """Write UTF-8 text to ``path`` atomically; returns the path."""
    with atomic_output(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
"""First characters with which a spreadsheet reads a CSV cell as a formula."""


def neutralize_formulas(table: pd.DataFrame) -> pd.DataFrame:
    """``table`` with every text cell that a spreadsheet would run as a formula prefixed by ``'``.

    Only text (object / string) columns are touched, and in them only strings starting with one of
    :data:`FORMULA_STARTS` that are not numbers (``-5`` stays): ``=HYPERLINK(...)`` becomes
    ``'=HYPERLINK(...)``. Numeric columns are written as they are. Returns ``table`` itself when
    nothing changes.
    """
    changed = {}
    for column in table.columns:
        if table[column].dtype != object and not pd.api.types.is_string_dtype(table[column]):
            continue
        values = table[column]
        risky = values.map(_is_formula_text)
        if risky.any():
            changed[column] = values.where(~risky, "'" + values.astype(str))
    return table.assign(**changed) if changed else table


def _is_formula_text(value) -> bool:
    if not isinstance(value, str) or not value.startswith(FORMULA_STARTS):
        return False
    try:
        float(value)
    except ValueError:
        return True
    return False


def write_csv_atomic(table: pd.DataFrame, path: str | os.PathLike) -> Path:
    """Write a DataFrame as CSV (no index) to ``path`` atomically, formulas neutralized
    (:func:`neutralize_formulas`); returns the path."""
    with atomic_output(path) as tmp:
        neutralize_formulas(table).to_csv(tmp, index=False)
    return Path(path)


def write_table_atomic(table: pd.DataFrame, path: str | os.PathLike) -> Path:
    """Write a DataFrame atomically: Parquet for ``.parquet``/``.pq``, CSV (formulas neutralized,
    :func:`neutralize_formulas`) for anything else."""
    path = Path(path)
    with atomic_output(path) as tmp:
        if path.suffix.lower() in (".parquet", ".pq"):
            table.to_parquet(tmp, index=False)
        else:
            neutralize_formulas(table).to_csv(tmp, index=False)
    return path


def write_table(table: pd.DataFrame, path: str | os.PathLike) -> Path:
    """Write a product table as CSV (``.csv``) or Parquet (``.parquet``/``.pq``), chosen by extension, atomically.

    Unlike :func:`write_table_atomic`, any other extension is refused.

    Raises
    ------
    ValueError
        ``path`` has another extension.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in (".csv", ".parquet", ".pq"):
        raise ValueError(f"{path}: unknown table format {suffix!r}; use .csv, .parquet or .pq")
    return write_table_atomic(table, path)
