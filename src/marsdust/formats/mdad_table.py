"""The MDAD v1.0 table (CSV / XLSX): header aliases, row validation, reading and writing.

The rows of every MDAD table — a v1.0 table, and a v1.1 master CSV (the same columns without the
Mars year, :mod:`marsdust.formats.mdad_cube`) — are validated here, once:

* :data:`HEADER_ALIASES` — the header spellings of each storm-table column, matched case- and
  space-insensitively (:func:`canonical_columns`, :func:`match_columns`);
* :func:`normalize_rows` → :func:`finish_rows` — values checked and converted, bad rows reported
  by :class:`RowErrors` (raise on the first, or drop them with one warning);
* :func:`read_v10_table` — a v1.0 table → the storm table (:data:`marsdust.mdad_format.STORM_COLUMNS`);
* :func:`write_v10_table` — a storm table → a v1.0 CSV with the real catalogue's headers
  (:data:`marsdust.mdad_format.V10_COLUMNS`), which :func:`read_v10_table` reads back.

Row numbers in errors are spreadsheet rows: the header is row 1, the first data row is row 2
(what a user sees in Excel / LibreOffice, and the line number in a CSV without comments).
"""

from __future__ import annotations

import os
import re
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from marsdust.fileio import write_csv_atomic
from marsdust.grid import normalize_lon
from marsdust.mdad_format import CONFIDENCE_LEVELS, STORM_COLUMNS, V10_COLUMNS, CatalogError, parse_member_id
from marsdust.naming import make_map_id
from marsdust.schema import MAX_MARS_YEAR, MIN_MARS_YEAR

HEADER_ALIASES: dict[str, tuple[str, ...]] = {
    "mars_year": ("mars_year", "my", "marsyear", "year"),
    "subphase": ("mission_subphase", "subphase", "mission_sub_phase", "sub_phase", "phase"),
    "sol": ("sol", "day"),
    "ls": ("ls", "swathls", "swath_ls", "l_s", "solar_longitude"),
    "lon": ("centroid_longitude", "centroid_lon", "lon", "longitude", "centroid_longitude_e",
            "centroid_longitude_deg_e"),
    "lat": ("centroid_latitude", "centroid_lat", "lat", "latitude", "centroid_latitude_n",
            "centroid_latitude_deg_n"),
    "area_km2": ("area_square_km", "area", "area_km2", "area_km_2", "area_sq_km", "area_km"),
    "confidence": ("confidence_interval", "confidence_flag", "confidence", "confidence_level", "conf"),
    "member_id": ("member_id", "mem_id", "memberid", "member"),
    "sequence_id": ("sequence_id", "seq_id", "sequenceid", "sequence"),
}
"""Storm-table column → the normalized headers that name it (lower case, runs of other characters as ``_``),
first match wins: ``Centroid longitude`` and ``centroid_lon`` are both ``lon``."""

REQUIRED_COLUMNS = ("subphase", "sol", "ls", "lon", "lat", "area_km2", "confidence", "member_id")
"""Columns every MDAD table needs (a v1.0 table needs ``mars_year`` too; a master CSV takes it from its cube)."""

TABLE_SUFFIXES = (".csv", ".xlsx", ".xlsm", ".xls")
"""File suffixes of MDAD tables (anything but the spreadsheet suffixes is read as CSV)."""
_EXCEL_SUFFIXES = (".xlsx", ".xlsm", ".xls")


def _normalize_header(name) -> str:
    return re.sub(r"[^a-z0-9]+", "_", str(name).strip().lower()).strip("_")


def canonical_columns(header) -> set[str]:
    """The storm-table columns a table header provides, by :data:`HEADER_ALIASES`."""
    normalized = {_normalize_header(c) for c in header}
    return {canonical for canonical, aliases in HEADER_ALIASES.items() if any(a in normalized for a in aliases)}


def match_columns(columns, source: str, required: tuple[str, ...]) -> dict[str, str]:
    """Storm-table column → the file's header, by :data:`HEADER_ALIASES`.

    Raises
    ------
    CatalogError
        A column of ``required`` is missing; the message names ``source``, an example spelling
        of each missing column and the columns found.
    """
    normalized: dict[str, str] = {}
    for column in columns:
        normalized.setdefault(_normalize_header(column), column)
    mapping = {}
    for canonical, aliases in HEADER_ALIASES.items():
        for alias in aliases:
            if alias in normalized:
                mapping[canonical] = normalized[alias]
                break
    missing = [c for c in required if c not in mapping]
    if missing:
        expected = "; ".join(f"{c} (e.g. {HEADER_ALIASES[c][0]!r})" for c in missing)
        raise CatalogError(f"{source}: missing required column(s) {expected}; found columns {list(columns)}")
    return mapping


class RowErrors:
    """Collects per-row problems of one table: raise on the first, or (``skip_bad``) drop rows with one warning."""

    def __init__(self, source: str, skip_bad: bool):
        self.source = source
        self.skip_bad = skip_bad
        self.bad: dict[int, str] = {}

    def add(self, row_numbers: np.ndarray, column: str, message: str) -> None:
        """Report ``message`` for each spreadsheet row in ``row_numbers`` (column = file header)."""
        rows = [int(r) for r in np.atleast_1d(row_numbers)]
        if not rows:
            return
        text = f"{self.source}: row {rows[0]}, column {column!r}: {message}"
        if not self.skip_bad:
            more = f" (and {len(rows) - 1} more row(s))" if len(rows) > 1 else ""
            raise CatalogError(text + more + "; pass skip_bad=True (--skip-bad) to drop bad rows")
        for row in rows:
            self.bad.setdefault(row, f"row {row}, column {column!r}: {message}")

    def warn_dropped(self) -> None:
        """One warning naming the dropped rows (none if no row was bad)."""
        if not self.bad:
            return
        rows = sorted(self.bad)
        shown = ", ".join(map(str, rows[:50])) + (" …" if len(rows) > 50 else "")
        first = self.bad[rows[0]]
        message = f"{self.source}: dropped {len(rows)} bad row(s) (spreadsheet rows {shown}); first: {first}"
        warnings.warn(message, UserWarning, stacklevel=3)  # once: the CLI prints caught warnings, not log lines


def _numeric(series: pd.Series) -> pd.Series:
    if series.dtype == object or pd.api.types.is_string_dtype(series):
        series = series.astype(str).str.strip().str.rstrip("%")
    return pd.to_numeric(series, errors="coerce")


def _clean_sequence(value) -> str:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return ""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    text = str(value).strip()
    return "" if text.lower() in ("nan", "none", "") else text


def _member_ids(values) -> tuple[list[bool], list[str]]:
    """Whether each value parses as a member ID, and its cleaned text ("" where not)."""
    parsed_ok, cleaned = [], []
    for value in values:
        try:
            cleaned.append(parse_member_id(value).text)
            parsed_ok.append(True)
        except ValueError:
            parsed_ok.append(False)
            cleaned.append("")
    return parsed_ok, cleaned


def normalize_rows(raw: pd.DataFrame, mapping: dict[str, str], errors: RowErrors,
                   mars_year: int | None = None) -> pd.DataFrame:
    """Validate and convert the rows of a table whose columns :func:`match_columns` mapped.

    Parameters
    ----------
    raw : DataFrame
        The table as read (:func:`read_table_file`), blank rows dropped.
    mapping : dict
        Storm-table column → the table's header.
    errors : RowErrors
        Where bad values go (each names its spreadsheet row and the file's header).
    mars_year : int, optional
        The Mars year of every row (a master CSV's rows); default: the table's own column.

    Returns
    -------
    DataFrame
        Storm-table columns (``lon`` normalized to [-180, 180), ``ls`` to [0, 360)) and ``_row``,
        the spreadsheet row; bad rows are still in it (:func:`finish_rows` drops them).
    """
    rows = pd.Series(np.arange(len(raw)) + 2, index=raw.index)  # spreadsheet rows, header = 1
    out = pd.DataFrame(index=raw.index)

    def check(bad_mask: pd.Series, canonical: str, message: str) -> None:
        bad_mask = bad_mask.fillna(True).astype(bool)
        if bad_mask.any():
            errors.add(rows[bad_mask].to_numpy(), mapping.get(canonical, canonical), message)

    if mars_year is not None:
        out["mars_year"] = mars_year
    else:
        year = _numeric(raw[mapping["mars_year"]])
        check(~(year.notna() & (year == year.round()) & (year >= MIN_MARS_YEAR) & (year <= MAX_MARS_YEAR)),
              "mars_year", f"Mars year must be a whole number in [{MIN_MARS_YEAR}, {MAX_MARS_YEAR}]")
        out["mars_year"] = year

    subphase = raw[mapping["subphase"]].astype(str).str.strip().str.upper()
    check(~subphase.str.fullmatch(r"[A-Z]+\d*"), "subphase", "mission subphase must look like 'R18' or 'D01'")
    out["subphase"] = subphase

    sol = _numeric(raw[mapping["sol"]])
    check(~(sol.notna() & (sol == sol.round()) & (sol >= 0)), "sol", "sol must be a whole number >= 0")
    out["sol"] = sol

    ls = _numeric(raw[mapping["ls"]])
    check(~(ls.notna() & (ls >= 0) & (ls <= 360)), "ls", "Ls must be a number in [0, 360] degrees")
    out["ls"] = ls % 360.0

    lon = _numeric(raw[mapping["lon"]])
    check(~(lon.notna() & (lon >= -180) & (lon <= 360)), "lon",
          "centroid longitude must be a number in [-180, 360] degrees (east-positive)")
    out["lon"] = normalize_lon(lon.fillna(0.0).to_numpy())

    lat = _numeric(raw[mapping["lat"]])
    check(~(lat.notna() & (lat >= -90) & (lat <= 90)), "lat", "centroid latitude must be a number in [-90, 90] degrees")
    out["lat"] = lat

    area = _numeric(raw[mapping["area_km2"]])
    check(~(area.notna() & (area >= 0)), "area_km2", "area must be a number >= 0 (km²)")
    out["area_km2"] = area

    confidence = _numeric(raw[mapping["confidence"]])
    check(~confidence.isin(CONFIDENCE_LEVELS), "confidence", "confidence must be one of 50, 75, 100")
    out["confidence"] = confidence

    parsed_ok, cleaned = _member_ids(raw[mapping["member_id"]])
    check(~pd.Series(parsed_ok, index=raw.index), "member_id",
          "member ID must look like 'D01_031', 'D16_001b', 'D01_031+032' or 'P08_033+P09_010+011+013'")
    out["member_id"] = cleaned

    if "sequence_id" in mapping:
        out["sequence_id"] = [_clean_sequence(v) for v in raw[mapping["sequence_id"]]]
    else:
        out["sequence_id"] = ""
    out["_row"] = rows
    return out


def finish_rows(out: pd.DataFrame, errors: RowErrors) -> pd.DataFrame:
    """Drop bad rows (``skip_bad``, one warning) and exact duplicates, build ``map_id``, set integer dtypes.

    ``polygon_wkt`` is added (None) where missing; ``_row`` (the spreadsheet row) is kept.
    """
    if errors.bad:
        out = out.loc[~out["_row"].isin(list(errors.bad))]
    errors.warn_dropped()
    out = _drop_duplicate_rows(out, errors.source)
    out["sol"] = out["sol"].astype("int64")
    out["mars_year"] = out["mars_year"].astype("int64")
    out["confidence"] = out["confidence"].astype("int64")
    out["map_id"] = [make_map_id(sp, sol) for sp, sol in zip(out["subphase"], out["sol"])]
    if "polygon_wkt" not in out:
        out["polygon_wkt"] = None
    return out


def _drop_duplicate_rows(out: pd.DataFrame, source: str) -> pd.DataFrame:
    """Drop exact repeats of a row (same values in every column), with one warning naming them."""
    duplicated = out.duplicated(subset=[c for c in out.columns if c != "_row"], keep="first")
    if duplicated.any():
        rows = out.loc[duplicated, "_row"].astype(int).tolist()
        shown = ", ".join(map(str, rows[:20])) + (" …" if len(rows) > 20 else "")
        warnings.warn(f"{source}: dropped {len(rows)} exact duplicate row(s) (spreadsheet rows {shown}): "
                      "each repeats an earlier row in every column", UserWarning, stacklevel=4)
    return out.loc[~duplicated].copy()


def sort_storms(df: pd.DataFrame) -> pd.DataFrame:
    """A storm table in :data:`~marsdust.mdad_format.STORM_COLUMNS` order, sorted by (mars_year, ls, map_id,
    member_id)."""
    df = df.sort_values(["mars_year", "ls", "map_id", "member_id"], kind="stable").reset_index(drop=True)
    return df[STORM_COLUMNS]


def empty_storm_table() -> pd.DataFrame:
    """A storm table with no rows and the right columns."""
    return pd.DataFrame({c: pd.Series(dtype=t) for c, t in zip(STORM_COLUMNS, [
        str, str, "int64", "int64", float, float, float, float, "int64", str, str, object])})


def read_table_file(path: Path) -> pd.DataFrame:
    """The cells of a CSV or spreadsheet as text (CSV) or objects (XLSX), nothing converted yet.

    Raises
    ------
    FileNotFoundError
        No such file.
    CatalogError
        The file cannot be parsed as a table.
    """
    suffix = path.suffix.lower()
    try:
        if suffix in _EXCEL_SUFFIXES:
            return pd.read_excel(path, dtype=object)
        return pd.read_csv(path, dtype=str, skipinitialspace=True, keep_default_na=True)
    except FileNotFoundError:
        raise
    except Exception as exc:  # pandas / openpyxl raise many kinds
        raise CatalogError(f"{path}: cannot read table ({type(exc).__name__}: {exc})") from exc


def read_table_header(path: Path):
    """The column names of a CSV or spreadsheet (nothing else is read)."""
    if path.suffix.lower() in _EXCEL_SUFFIXES:
        return pd.read_excel(path, nrows=0).columns
    return pd.read_csv(path, nrows=0, dtype=str).columns


def read_v10_table(path: str | os.PathLike, skip_bad: bool = False) -> pd.DataFrame:
    """Read an MDAD v1.0 table (CSV or XLSX) into the storm table.

    Headers are matched case- and space-insensitively against the real catalogue's names
    (``Mars Year``, ``Mission subphase``, ``Sol``, ``Ls``, ``Centroid longitude``, ``Centroid
    latitude``, ``Area (square km)``, ``Confidence interval``, ``Member ID``, ``Sequence ID``)
    and aliases (``MY``, ``swathLs``, ``centroid_lon``, ``mem_ID``, …). Longitudes in
    [0, 360) are accepted and normalized to [-180, 180). ``polygon_wkt`` is None, unless the table
    has a ``polygon_wkt`` column (a storm table written by :func:`marsdust.mdad.save_catalog`, e.g.
    pseudo-labels): its outlines (lon/lat WKT) are kept, blank cells None.

    Raises
    ------
    CatalogError
        Missing column, or a bad value (unless ``skip_bad``: those rows are dropped with one warning).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: MDAD table not found")
    raw = read_table_file(path)
    raw = raw.dropna(how="all")
    mapping = match_columns(raw.columns, str(path), ("mars_year",) + REQUIRED_COLUMNS)
    errors = RowErrors(str(path), skip_bad)
    out = normalize_rows(raw, mapping, errors)
    if "polygon_wkt" in raw.columns:
        out["polygon_wkt"] = [v.strip() if isinstance(v, str) and v.strip() else None for v in raw["polygon_wkt"]]
    return sort_storms(finish_rows(out, errors))


def write_v10_table(storms: pd.DataFrame, path: str | os.PathLike) -> Path:
    """Write a storm table as an MDAD v1.0 CSV with the real catalogue's headers, atomically.

    Columns :data:`~marsdust.mdad_format.V10_COLUMNS` (longitudes east-positive as given, area km²);
    ``map_id`` and ``polygon_wkt`` are not part of the v1.0 table.
    """
    table = storms[list(V10_COLUMNS)].rename(columns=V10_COLUMNS)
    return write_csv_atomic(table, path)
