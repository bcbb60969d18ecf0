"""Tests of marsdust.schema: the value rules of storm tables and numeric options (property-based where
hypothesis is installed)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from marsdust import schema

hypothesis = pytest.importorskip("hypothesis")
strategies = hypothesis.strategies


def one_row(**changes) -> pd.DataFrame:
    row = {"map_id": "r18_040", "mars_year": 25, "ls": 100.0, "lon": 10.0, "lat": 20.0, "area_km2": 5e5,
           "sol": 40, "polygon_wkt": "POLYGON ((5 15, 15 15, 15 25, 5 25, 5 15))"}
    return pd.DataFrame([{**row, **changes}])


FLOATS = strategies.floats(allow_nan=True, allow_infinity=True)


@hypothesis.given(FLOATS)
def test_latitude_rule(lat):
    good = math.isfinite(lat) and -90 <= lat <= 90
    if good:
        schema.check_table(one_row(lat=lat), "t.csv")
    else:
        with pytest.raises(ValueError, match=r"t.csv: row 2, column 'lat': expected a latitude in \[-90, 90\]"):
            schema.check_table(one_row(lat=lat), "t.csv")


@hypothesis.given(FLOATS)
def test_longitude_and_ls_rules(value):
    for column, good in (("lon", math.isfinite(value) and -180 <= value <= 180),
                         ("ls", math.isfinite(value) and 0 <= value < 360)):
        if good:
            schema.check_table(one_row(**{column: value}), "t.csv")
        else:
            with pytest.raises(ValueError, match=rf"column '{column}'"):
                schema.check_table(one_row(**{column: value}), "t.csv")


@hypothesis.given(strategies.one_of(FLOATS, strategies.integers(-10**15, 10**15)))
def test_mars_year_is_a_whole_number_in_its_range(year):
    good = math.isfinite(year) and float(year).is_integer() and schema.MIN_MARS_YEAR <= year <= schema.MAX_MARS_YEAR
    if good:
        schema.check_table(one_row(mars_year=year), "t.csv")
    else:
        with pytest.raises(ValueError, match="column 'mars_year'"):
            schema.check_table(one_row(mars_year=year), "t.csv")


@hypothesis.given(FLOATS)
def test_area_is_finite_and_positive(area):
    if math.isfinite(area) and area > 0:
        schema.check_table(one_row(area_km2=area), "t.csv")
    else:
        with pytest.raises(ValueError, match="column 'area_km2'"):
            schema.check_table(one_row(area_km2=area), "t.csv")


def test_the_first_bad_row_and_missing_columns_are_named():
    table = pd.concat([one_row(), one_row(), one_row(lat=95.0)], ignore_index=True)
    with pytest.raises(ValueError, match="row 4, column 'lat'.*got 95.0"):
        schema.check_table(table, "t.csv")
    with pytest.raises(ValueError, match="no column.*'area_km2'"):
        schema.check_table(one_row().drop(columns="area_km2"), "t.csv")
    schema.check_table(one_row().drop(columns=["sol", "polygon_wkt"]), "t.csv")  # optional columns
    for bad in ({"map_id": np.nan}, {"map_id": " "}, {"sol": np.nan}, {"sol": 2.5}, {"polygon_wkt": "POLYGON ((1"}):
        with pytest.raises(ValueError, match=f"column '{next(iter(bad))}'"):
            schema.check_table(one_row(**bad), "t.csv")
    schema.check_table(one_row(polygon_wkt=np.nan), "t.csv")  # no outline


@hypothesis.given(FLOATS, FLOATS, FLOATS)
def test_check_option(value, low, high):
    hypothesis.assume(not math.isnan(low) and not math.isnan(high))
    good = math.isfinite(value) and low < value <= high
    if good:
        schema.check_option("--x", value, low, high, low_inclusive=False)
    else:
        with pytest.raises(ValueError, match=r"--x must be a finite number"):
            schema.check_option("--x", value, low, high, low_inclusive=False)
    schema.check_option("--x", None, low, high)  # not given


@pytest.mark.parametrize("pad_deg", [math.nan, math.inf, -1.0, 181.0])
def test_detect_settings_refuse_a_pad_outside_its_range(pad_deg):
    from marsdust.detect import DetectSettings

    with pytest.raises(ValueError, match="pad_deg.*finite number >= 0 and <= 180"):
        DetectSettings(pad_deg=pad_deg)


def test_detect_settings_refuse_an_outline_window_narrower_than_the_box():
    from marsdust.detect import DetectSettings

    with pytest.raises(ValueError, match=r"mask_box_scale must be in \[1, 3\] \(times the box\), got 0.9"):
        DetectSettings(mask_box_scale=0.9)
    assert DetectSettings(0.5, 0.5, 10.0).pad_deg == 10.0  # the window is the last field: positions unchanged
