"""Round trips through marsdust.mdad_format: what the writers encode, the reader decodes."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from marsdust import mdad, mdad_format, outlines
from marsdust.formats import mdad_cube
from marsdust.grid import MapGrid
from marsdust.naming import parse_map_name


@pytest.mark.parametrize("subphase, number, split", [("D01", 1, False), ("R18", 133, False), ("D16", 1, True),
                                                     ("G13", 117, True)])
def test_member_id_encodes_and_decodes(subphase, number, split):
    text = mdad_format.format_member_id(subphase, number, split)
    member = mdad_format.parse_member_id(text)
    assert member.members == ((subphase, number, split),)
    assert mdad_format.cube_value_member(member.mask_value) == (number, split)
    assert mdad_format.member_cube_value(text) == member.mask_value


def test_split_and_merged_member_ids_take_the_first_members_cube_value():
    assert mdad_format.format_member_id("D16", 1, split=True) == "D16_001b"
    assert mdad_format.member_cube_value("D16_001b") == 1 + mdad_format.SPLIT_OFFSET == 134
    merged = mdad_format.parse_member_id("D01_031+032")
    assert merged.numbers == (31, 32) and merged.mask_value == 31
    assert mdad_format.cube_value_member(mdad_format.MAX_STORM_LABEL) == (mdad_format.MAX_SPLIT_NUMBER, True)
    for bad in (0, mdad_format.MISSING_VALUE):
        with pytest.raises(ValueError):
            mdad_format.cube_value_member(bad)


def test_cube_values_have_one_name_each():
    """The encoding constants and the member-id codec live in mdad_format only, under their own names."""
    assert mdad_format.member_cube_value("R18_031b") == 164
    assert mdad_format.MISSING_VALUE == 255
    assert mdad_format.SPLIT_OFFSET == 133
    for module in (mdad, mdad_cube, outlines):  # the writers' old second spellings are gone
        assert not {"MISSING_LABEL", "SPLIT_LABEL_OFFSET", "mask_cube_path", "member_label_value"} & set(vars(module))
    assert not hasattr(mdad, "MemberId") and not hasattr(mdad, "cube_grid")  # no re-exports from the front door


def test_member_cube_values_follow_mdad():
    assert mdad_format.member_cube_value("R18_031") == 31
    assert mdad_format.member_cube_value("R18_031b") == 164
    # joined ids: the first member's value, the rule the reader applies (one parser for both)
    assert mdad_format.member_cube_value("R18_031+032") == 31
    assert mdad_format.member_cube_value("G13_001b+002+017") == 134
    with pytest.raises(ValueError):
        mdad_format.member_cube_value("R18_200")


@pytest.mark.parametrize(
    "text, numbers, groups, mask_value",
    [
        ("D01_031", (31,), (("D01", (31,)),), 31),
        ("D01_031+032", (31, 32), (("D01", (31, 32)),), 31),
        ("D16_001b", (1,), (("D16", (1,)),), 134),
        ("G13_001b+002+017", (1, 2, 17), (("G13", (1, 2, 17)),), 134),
        ("P08_033+P09_010+011+013", (33, 10, 11, 13), (("P08", (33,)), ("P09", (10, 11, 13))), 33),
        ("M17_050+M18_001", (50, 1), (("M17", (50,)), ("M18", (1,))), 50),
        (" r18_005 ", (5,), (("R18", (5,)),), 5),
    ],
)
def test_parse_member_id_first_member_rule(text, numbers, groups, mask_value):
    """MDAD v1.1: every member number is kept; the cube value is the first member's, on any day."""
    member = mdad_format.parse_member_id(text)
    assert isinstance(member, mdad_format.MemberId)
    assert member.numbers == numbers and member.groups == groups
    assert member.mask_value == mask_value
    assert member.cube_values("M18") == member.cube_values("P09") == (mask_value,)


@pytest.mark.parametrize("text", ["", "D01", "D01_", "031", "D01_031+", "D01-031", "D01_000", "D01_140", "D01_120b",
                                  "D01_031+b", "D01_031++032", "031+D01_032", None])
def test_parse_member_id_rejects(text):
    with pytest.raises(ValueError, match="member"):
        mdad_format.parse_member_id(text)


def test_day_list_entry_and_cube_names_read_back():
    assert parse_map_name(mdad_format.day_list_entry("r18", 40)) == ("R18", 40)
    path = mdad_format.cube_path("out", 25)
    assert path.as_posix() == "out/MY25/MDADMY25.nc" and mdad_format.mars_year_from_name(path) == 25
    assert mdad_format.master_csv_path("out", 25).parent == path.parent
    assert mdad_format.mars_year_from_name(mdad_format.master_csv_path("out", 25)) == 25


def test_written_headers_are_the_readers_aliases(tmp_path):
    master = tmp_path / "master.csv"
    pd.DataFrame(columns=list(mdad_format.MASTER_COLUMNS)).to_csv(master, index=False)
    table = tmp_path / "v10.csv"
    pd.DataFrame(columns=list(mdad_format.V10_COLUMNS.values())).to_csv(table, index=False)
    assert mdad.table_kind(master) == "master" and mdad.table_kind(table) == "table"


def test_sol_to_ls_to_sol():
    sols = np.linspace(0.0, mdad_format.SOLS_PER_MARS_YEAR, 400, endpoint=False)
    back = mdad_format.sol_of_year_from_ls(mdad_format.ls_from_sol_of_year(sols))
    np.testing.assert_allclose(back, sols, atol=1e-6)
    assert mdad_format.sol_of_year_from_ls(0.0) == pytest.approx(0.0, abs=1e-9)


@pytest.mark.parametrize("grid", [MapGrid.moc(0.5), MapGrid.marci(1.0)])
def test_cube_slice_round_trips_through_the_latitude_registration(grid):
    rng = np.random.default_rng(0)
    labels = rng.integers(0, mdad_format.MAX_STORM_LABEL + 1, grid.shape).astype(np.uint8)
    cube_slice = mdad_format.grid_labels_to_cube(labels, grid)
    assert (mdad_format.cube_to_grid_labels(cube_slice, grid) == labels).all()
    # the reader's placement puts the rows back on the global grid's rows of the same latitudes
    global_grid, column_order, row_index = mdad_format.cube_grid(
        MapGrid.from_width(grid.width).lon_centers_deg, mdad_format.cube_latitudes_deg(grid.res_deg))
    on_global = cube_slice.T[np.ix_(row_index, column_order)]
    top = global_grid.crop_rows(grid.lat_north_deg, grid.lat_south_deg)
    assert (on_global[top] == labels).all()
    assert (np.delete(on_global, np.arange(top.start, top.stop), axis=0) == mdad_format.MISSING_VALUE).all()


def test_cube_written_by_the_writer_reads_back_with_the_same_storms(tmp_path):
    grid = MapGrid.moc(1.0)
    members = ["R18_001", "R18_002b", "R18_003+004"]
    masks = [np.zeros(grid.shape, bool) for _ in members]
    masks[0][10:20, 30:40] = True
    masks[1][50:60, :5] = masks[1][50:60, -4:] = True  # across 180°
    masks[2][100:110, 200:230] = True
    step = mdad_cube.map_mask_step("r18_040", 25, 100.0, masks, member_ids=members)
    cube = mdad_cube.write_mask_cube(mdad_format.cube_path(tmp_path, 25), [step], grid)
    labels, global_grid = mdad_cube.cube_labels(cube, "r18_040")
    band = global_grid.crop_rows(grid.lat_north_deg, grid.lat_south_deg)
    assert np.array_equal(global_grid.lat_centers_deg[band], grid.lat_centers_deg)
    for member_id, mask in zip(members, masks):
        back, _ = mdad_cube.instance_mask(cube, "r18_040", member_id)
        assert (back[band] == mask).all() and not back[:band.start].any() and not back[band.stop:].any()
        assert global_grid.mask_area_km2(back) == pytest.approx(grid.mask_area_km2(mask), rel=1e-12)
    assert (labels[band] == step.labels).all()


# --- property-based: the member-id codec ----------------------------------------------------------
hypothesis = pytest.importorskip("hypothesis")
strategies = hypothesis.strategies

SUBPHASES = strategies.from_regex(r"[A-Z]{1,3}[0-9]{1,2}", fullmatch=True)


@hypothesis.given(SUBPHASES, strategies.integers(1, mdad_format.MAX_MEMBER_NUMBER), strategies.booleans())
def test_member_id_codec_round_trips(subphase, number, split):
    hypothesis.assume(not split or number <= mdad_format.MAX_SPLIT_NUMBER)
    text = mdad_format.format_member_id(subphase, number, split)
    parsed = mdad_format.parse_member_id(text)
    assert parsed.members == ((subphase, number, split),) and parsed.text == text
    assert mdad_format.parse_member_id(text.lower()).members == parsed.members  # case-insensitive
    assert mdad_format.cube_value_member(parsed.mask_value) == (number, split)


@hypothesis.given(SUBPHASES, strategies.integers(-10**6, 10**6).filter(
    lambda n: not 1 <= n <= mdad_format.MAX_MEMBER_NUMBER))
def test_member_numbers_outside_the_range_are_refused(subphase, number):
    with pytest.raises(ValueError, match="member"):
        mdad_format.parse_member_id(f"{subphase}_{abs(number):03d}" if number >= 0 else f"{subphase}_-{-number}")


@hypothesis.given(strategies.text(max_size=12))
def test_parse_member_id_never_fails_other_than_with_value_error(text):
    try:
        parsed = mdad_format.parse_member_id(text)
    except ValueError:
        return
    assert parsed.members and all(1 <= number <= mdad_format.MAX_MEMBER_NUMBER for _, number, _ in parsed.members)
