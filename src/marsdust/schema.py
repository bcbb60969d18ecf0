"""What the values of a storm table may be, and what a numeric command option may be.

One place for the rules that every reader of storm tables (``track``, ``climatology``: files made by
``catalog``, ``detect`` or ``synth``) applies before using the rows, and that the commands apply to
their numeric options:

* :data:`STORM_TABLE_RULES` — per column: latitude in [-90, 90]°, longitude in [-180, 180]° (east),
  Ls in [0, 360)°, Mars year a whole number in [:data:`MIN_MARS_YEAR`, :data:`MAX_MARS_YEAR`],
  area a finite number > 0 km², map ids non-empty, sols whole numbers >= 0, outlines valid WKT (or
  empty); every number finite.
* :func:`check_table` — the first bad value of a table as a ValueError naming file, row (as a
  spreadsheet shows it: header = row 1), column and the expected range.
* :func:`check_option` — a numeric option finite and within its range, else a ValueError naming it.
* :func:`check_mask_box_scale` — an outline window (times the detection box) within
  :data:`MASK_BOX_SCALE_RANGE`, for the detector's configuration and a detect run's settings alike.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np
import pandas as pd

MIN_MARS_YEAR = 1
"""Smallest plausible Mars year (Clancy et al. numbering; MDAD covers MY24 onwards)."""

MAX_MARS_YEAR = 100
"""Largest plausible Mars year."""


@dataclass(frozen=True)
class ColumnRule:
    """The values one column may hold.

    Attributes
    ----------
    column : str
        Storm-table column name.
    expected : str
        What a good value is, as error messages say it.
    is_good : callable
        ``Series -> bool array``: True where the value is good.
    required : bool
        The column must be present (else it is checked only when there).
    """

    column: str
    expected: str
    is_good: Callable[[pd.Series], np.ndarray]
    required: bool = True


def _numbers(values: pd.Series) -> np.ndarray:
    return pd.to_numeric(values, errors="coerce").to_numpy(dtype=float)


def _within(low: float, high: float, high_inclusive: bool = True) -> Callable[[pd.Series], np.ndarray]:
    def is_good(values: pd.Series) -> np.ndarray:
        numbers = _numbers(values)
        with np.errstate(invalid="ignore"):
            upper = numbers <= high if high_inclusive else numbers < high
            return np.isfinite(numbers) & (numbers >= low) & upper
    return is_good


def _whole(low: float, high: float) -> Callable[[pd.Series], np.ndarray]:
    def is_good(values: pd.Series) -> np.ndarray:
        numbers = _numbers(values)
        with np.errstate(invalid="ignore"):
            return np.isfinite(numbers) & (numbers == np.round(numbers)) & (numbers >= low) & (numbers <= high)
    return is_good


def _positive(values: pd.Series) -> np.ndarray:
    numbers = _numbers(values)
    with np.errstate(invalid="ignore"):
        return np.isfinite(numbers) & (numbers > 0)


def _non_empty_text(values: pd.Series) -> np.ndarray:
    return np.array([isinstance(v, str) and v.strip() != "" for v in values], dtype=bool)


def _wkt_or_empty(values: pd.Series) -> np.ndarray:
    import shapely

    good = np.ones(len(values), dtype=bool)
    for k, value in enumerate(values):
        if value is None or (isinstance(value, float) and math.isnan(value)) or value == "":
            continue
        try:
            good[k] = isinstance(value, str) and shapely.from_wkt(value) is not None
        except shapely.errors.ShapelyError:
            good[k] = False
    return good


STORM_TABLE_RULES = (
    ColumnRule("map_id", "a non-empty map id", _non_empty_text),
    ColumnRule("mars_year", f"a whole Mars year in [{MIN_MARS_YEAR}, {MAX_MARS_YEAR}]",
               _whole(MIN_MARS_YEAR, MAX_MARS_YEAR)),
    ColumnRule("ls", "Ls in [0, 360) degrees", _within(0.0, 360.0, high_inclusive=False)),
    ColumnRule("lon", "a longitude in [-180, 180] degrees (east-positive)", _within(-180.0, 180.0)),
    ColumnRule("lat", "a latitude in [-90, 90] degrees", _within(-90.0, 90.0)),
    ColumnRule("area_km2", "a finite area > 0 km²", _positive),
    ColumnRule("sol", "a whole sol number >= 0", _whole(0, math.inf), required=False),
    ColumnRule("polygon_wkt", "an outline in WKT (or empty)", _wkt_or_empty, required=False),
)
"""The rules of a storm table's columns (see the module docstring)."""


def check_table(table: pd.DataFrame, source: str, rules=STORM_TABLE_RULES) -> None:
    """Raise on the first missing column or bad value of ``table``.

    Parameters
    ----------
    table : DataFrame
        The rows as read (row k is spreadsheet row k + 2).
    source : str
        The file, as the message names it.
    rules : sequence of ColumnRule
        Default: :data:`STORM_TABLE_RULES`.

    Raises
    ------
    ValueError
        ``"<source>: row <n>, column '<column>': expected <range>, got <value>"``, or the missing columns.
    """
    missing = [rule.column for rule in rules if rule.required and rule.column not in table.columns]
    if missing:
        raise ValueError(f"{source}: no column(s) {', '.join(map(repr, missing))} "
                         f"(columns: {', '.join(map(str, table.columns))})")
    for rule in rules:
        if rule.column not in table.columns:
            continue
        bad = np.flatnonzero(~rule.is_good(table[rule.column]))
        if bad.size:
            row = int(bad[0])
            value = table[rule.column].iat[row]
            value = value.item() if isinstance(value, np.generic) else value  # 95.0, not np.float64(95.0)
            raise ValueError(f"{source}: row {row + 2}, column {rule.column!r}: expected {rule.expected}, "
                             f"got {value!r}")


def check_option(name: str, value: float | None, low: float = -math.inf, high: float = math.inf, *,
                 low_inclusive: bool = True) -> None:
    """Raise unless ``value`` (None: not given, accepted) is a finite number in its range.

    Parameters
    ----------
    name : str
        The option as the user wrote it (``--min-link-km``).
    low, high : float
        Bounds (``high`` inclusive; ``low`` inclusive unless ``low_inclusive`` is False).

    Raises
    ------
    ValueError
        ``"<name> must be a finite number >= low ..., got <value>"``.
    """
    if value is None:
        return
    number = float(value)
    above = number >= low if low_inclusive else number > low
    if not (math.isfinite(number) and above and number <= high):
        bounds = [f"{'>=' if low_inclusive else '>'} {low:g}"] if math.isfinite(low) else []
        bounds += [f"<= {high:g}"] if math.isfinite(high) else []
        raise ValueError(f"{name} must be a finite number {' and '.join(bounds) or ''}".rstrip()
                         + f", got {value!r}")


MASK_BOX_SCALE_RANGE = (1.0, 3.0)
"""Bounds of the window a detector outlines a storm in, times its detection box (``DetectorConfig.mask_box_scale``,
``DetectSettings.mask_box_scale``): 1 is the box itself."""


def check_mask_box_scale(name: str, value: float | None) -> None:
    """Raise unless ``value`` (None: not given, accepted) lies in :data:`MASK_BOX_SCALE_RANGE`.

    Raises
    ------
    ValueError
        ``"<name> must be in [1, 3] (times the box), got <value>"``.
    """
    low, high = MASK_BOX_SCALE_RANGE
    if value is not None and not low <= value <= high:
        raise ValueError(f"{name} must be in [{low:g}, {high:g}] (times the box), got {value}")
