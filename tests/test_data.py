"""Splits, split manifests, and the dataset's frames and augmentation on small in-memory maps."""

from dataclasses import replace
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch

from marsdust.data import (
    AugmentConfig,
    DustDataset,
    Period,
    SplitConfig,
    collate_fn,
    default_split_config,
    jitter_photometry,
    load_split,
    make_split,
    save_split,
    select_split,
)
from marsdust.grid import MapGrid

GRID = MapGrid.moc(0.4)  # 300 x 900


def index_of(years_ls):
    rows = [{"map_id": f"m{i:04d}", "mars_year": my, "ls": ls, "path": f"mem://m{i:04d}"} for i, (my, ls) in enumerate(years_ls)]
    return pd.DataFrame(rows)


def every_10_ls(first=(24, 150.0), last=(28, 120.0)):
    out, (my, ls) = [], first
    while (my, ls) <= last:
        out.append((my, ls))
        ls += 10.0
        if ls >= 360:
            my, ls = my + 1, ls - 360
    return out


def test_temporal_split_follows_the_papers_periods():
    index = index_of(every_10_ls())
    split = make_split(index, "temporal", val_fraction=0.25, seed=1)
    key = split["mars_year"] * 360 + split["ls"]
    train_period = (key >= 25 * 360) & (key < 27 * 360 + 180)
    test_period = (key >= 27 * 360 + 180) & (key <= 28 * 360 + 121)
    assert set(split.loc[train_period, "split"]) == {"train", "val"}
    assert (split.loc[test_period, "split"] == "test").all()
    assert (split.loc[~train_period & ~test_period, "split"] == "unused").all()  # MY24
    assert (split["split"] == "val").sum() == round(0.25 * train_period.sum())
    assert split.loc[split["mars_year"] == 28, "split"].eq("test").all()  # MY28 Ls120 is the last test map


def test_random_split_is_52_24_24_and_seeded():
    index = index_of([(25 + i // 36, (i % 36) * 10.0) for i in range(100)])
    split = make_split(index, "random", seed=7)
    assert split["split"].value_counts().to_dict() == {"train": 52, "val": 24, "test": 24}
    assert make_split(index, "random", seed=7)["split"].tolist() == split["split"].tolist()
    assert make_split(index, "random", seed=8)["split"].tolist() != split["split"].tolist()


def test_custom_periods_and_empty_split_error_names_ranges_and_coverage():
    index = index_of([(25, ls) for ls in range(0, 360, 30)] + [(26, ls) for ls in range(0, 360, 30)])
    with pytest.raises(ValueError, match=r"test period MY27 Ls180° – MY28 Ls121°.*covers MY25 Ls0.0° – MY26 Ls330.0° \(24 maps\)"):
        make_split(index, "temporal")
    config = SplitConfig(train_period=Period(25, 0, 26, 0), test_period=Period(26, 0, 27, 0))
    split = make_split(index, config=config)
    assert (split.loc[split["mars_year"] == 26, "split"] == "test").all()
    with pytest.raises(ValueError, match="random split"):
        make_split(index.iloc[:2], "random")


def test_split_manifest_round_trip(tmp_path):
    index = index_of(every_10_ls())
    split = make_split(index, "random", seed=3)
    path = save_split(split, tmp_path / "run" / "split.csv")
    loaded = load_split(path)
    assert loaded[["map_id", "split"]].equals(split[["map_id", "split"]])
    test_maps = select_split(index, loaded, "test")
    assert set(test_maps["map_id"]) == set(split.loc[split["split"] == "test", "map_id"])
    bad = tmp_path / "bad.csv"
    bad.write_text("map_id,split\nm0001,holdout\n")
    with pytest.raises(ValueError, match="holdout"):
        load_split(bad)


# --- dataset -------------------------------------------------------------------------------------
def bright_patch_loader(patches):
    """A load_map that returns dark maps with a bright square at each (lon, lat) of ``patches[path]``."""

    def load(path, res_deg):
        assert res_deg == pytest.approx(0.4)
        rgb = np.full((300, 900, 3), 0.2, dtype=np.float32)
        valid = np.ones((300, 900), dtype=bool)
        valid[:, 300:310] = False  # a missing swath
        rgb[~valid] = 0
        for lon, lat in patches.get(path, []):
            x, y = GRID.lonlat_to_pixel(lon, lat)
            cols = np.mod(np.arange(int(x) - 10, int(x) + 10), 900)
            rgb[int(y) - 10:int(y) + 10][:, cols] = 0.9
        return SimpleNamespace(rgb=rgb, valid=valid, grid=GRID, path=path)

    return load


def dataset(augment=False, storms=((178.0, 10.0), (-20.0, -30.0))):
    index = index_of([(26, 100.0), (26, 101.0)])
    table = pd.DataFrame({"map_id": "m0000", "lon": [s[0] for s in storms], "lat": [s[1] for s in storms],
                          "area_km2": 1e5, "confidence": [100, 50][:len(storms)], "member_id": ["a", "b"][:len(storms)]})
    loader = bright_patch_loader({"mem://m0000": list(storms)})
    return DustDataset(index, table, 0.4, augment=augment, load_map=loader)


def boxes_sit_on_bright_patches(image, boxes):
    for x0, y0, x1, y1 in boxes.round().int().tolist():
        cx, cy = (x0 + x1) // 2, (y0 + y1) // 2
        assert image[0, cy - 5:cy + 5, cx - 5:cx + 5].min() > 0.5


def test_items_are_in_a_seam_free_frame_with_boxes_on_the_storms():
    data = dataset()
    image, target = data[0]
    assert image.shape == (3, 300, 900) and image.dtype == torch.float32
    assert target["boxes"].shape == (2, 4) and target["masks"].shape == (2, 300, 900)
    assert (target["boxes"][:, 0] >= 0).all() and (target["boxes"][:, 2] <= 900).all()
    native = data.load(0)[2]["boxes"]  # storm at lon 178: x 880..910 in the native frame
    assert native[0, 2] > 900
    shift = target["shift_px"]
    np.testing.assert_allclose(target["boxes"][:, 0].numpy(), np.mod(native[:, 0] + shift, 900))
    boxes_sit_on_bright_patches(image, target["boxes"])
    assert target["map_id"] == "m0000" and target["labels"].tolist() == [1, 1]


def test_augmented_items_keep_boxes_on_the_storms():
    torch.manual_seed(0)
    data = dataset(augment=AugmentConfig(roll=True, flip_prob=0.5, brightness=0.0, contrast=0.0))
    native = data.load(0)[2]["boxes"]
    shifts, flips = set(), set()
    for _ in range(12):
        image, target = data[0]
        assert (target["boxes"][:, 0] >= 0).all() and (target["boxes"][:, 2] <= 900).all()
        boxes_sit_on_bright_patches(image, target["boxes"])
        for k, (x0, y0, x1, y1) in enumerate(target["boxes"].round().int().tolist()):
            assert target["masks"][k, y0:y1, x0:x1].all() and target["masks"][k].sum() == 900
        if not target["flipped"]:  # a roll by k moves boxes by k mod W
            np.testing.assert_allclose(target["boxes"][:, 0].numpy(), np.mod(native[:, 0] + target["shift_px"], 900), atol=1e-4)
        shifts.add(target["shift_px"])
        flips.add(target["flipped"])
    assert len(shifts) > 6 and flips == {True, False}


def test_map_without_storms_stays_in_the_data_and_collates():
    data = dataset()
    image, target = data[1]
    assert target["boxes"].shape == (0, 4) and target["masks"].shape == (0, 300, 900)
    images, targets = collate_fn([data[0], data[1]])
    assert len(images) == 2 and [t["map_id"] for t in targets] == ["m0000", "m0001"]


def test_photometric_jitter_leaves_missing_pixels_black():
    rgb = np.full((4, 6, 3), 0.5, dtype=np.float32)
    valid = np.ones((4, 6), dtype=bool)
    valid[:, 0] = False
    rgb[~valid] = 0
    out = jitter_photometry(rgb, valid, 0.1, 1.2)
    assert (out[~valid] == 0).all() and np.allclose(out[valid], 0.6)


def test_wrong_working_resolution_is_an_error():
    index = index_of([(26, 100.0)])
    table = pd.DataFrame({"map_id": [], "lon": [], "lat": []})
    data = DustDataset(index, table, 0.2, load_map=lambda path, res: bright_patch_loader({})(path, 0.4))
    with pytest.raises(ValueError, match="working resolution 0.2"):
        data[0]


def test_strong_appearance_jitter_keeps_missing_pixels_black_values_in_range_and_is_seeded():
    from marsdust.data import AUGMENT_PRESETS, augment_config, jitter_appearance

    rng = np.random.default_rng(0)
    rgb = rng.uniform(0.05, 0.9, size=(30, 90, 3)).astype(np.float32)
    valid = np.ones((30, 90), dtype=bool)
    valid[:, 40:45] = False
    rgb[~valid] = 0.0
    strong = AUGMENT_PRESETS["strong"]
    first = jitter_appearance(rgb, valid, np.random.default_rng(7), strong)
    again = jitter_appearance(rgb, valid, np.random.default_rng(7), strong)
    assert np.array_equal(first, again)
    assert (first[~valid] == 0).all() and first.min() >= 0 and first.max() <= 1
    assert np.abs(first[valid] - rgb[valid]).mean() > 1e-3  # it does change the look
    assert augment_config("none") is None and augment_config(True) is AUGMENT_PRESETS["basic"]
    with pytest.raises(ValueError, match="strong"):
        augment_config("heavy")


def test_camera_band_response_mixes_map_and_reference_bands_alike_and_keeps_grey_and_missing_pixels():
    from marsdust.data import AUGMENT_PRESETS, band_response

    rng = np.random.default_rng(1)
    image = rng.uniform(0.05, 0.9, size=(20, 40, 6)).astype(np.float32)  # map bands, then reference bands
    image[:, :10, 3:] = image[:, :10, :3]  # where the reference equals the map, the mixed ones must too
    image[:, 30:, 3:] = 0.5  # a grey reference stays grey under any band response
    image[5:8] = 0.0  # missing rows
    camera = AUGMENT_PRESETS["camera"]
    mixed = band_response(image, np.random.default_rng(3), replace(camera, gray_prob=0.0))
    assert np.array_equal(mixed, band_response(image, np.random.default_rng(3), replace(camera, gray_prob=0.0)))
    assert np.allclose(mixed[:, :10, 3:], mixed[:, :10, :3])
    assert np.allclose(np.delete(mixed, [5, 6, 7], axis=0)[:, 30:, 3:], 0.5, atol=1e-6)
    assert (mixed[5:8] == 0).all() and mixed.min() >= 0 and mixed.max() <= 1
    assert np.abs(mixed[..., :3] - image[..., :3]).mean() > 1e-3  # it does change the colours
    grey = band_response(image, np.random.default_rng(3), replace(camera, gray_prob=1.0))
    assert np.allclose(grey[..., 0], grey[..., 1]) and np.allclose(grey[..., 3], grey[..., 5])


def test_an_archive_past_the_moc_years_is_split_over_its_whole_extent():
    assert default_split_config(index_of(every_10_ls())) == SplitConfig()  # the MOC years: the paper's periods
    index = index_of(every_10_ls(last=(32, 350.0)))  # MOC, then MARCI years up to MY32 Ls350
    config = default_split_config(index)
    assert (config.train_period.describe(), config.test_period.describe()) == ("MY25 Ls0° – MY32 Ls0°",
                                                                              "MY32 Ls0° – MY32 Ls360°")
    split = make_split(index, "temporal")
    assert split.loc[split["mars_year"] == 32, "split"].eq("test").all()
    assert set(split.loc[split["mars_year"].between(29, 31), "split"]) == {"train", "val"}
    assert set(make_split(index, "random").query("mars_year >= 29")["split"]) == {"train", "val", "test"}
    # an archive ending early in a Mars year is tested on the year before as well
    early_end = default_split_config(index_of(every_10_ls(last=(32, 40.0))))
    assert early_end.test_period.describe() == "MY31 Ls0° – MY32 Ls360°"
    # a given period still overrides the derived one
    split = make_split(index, "temporal", train_period=Period(25, 0, 31, 0), test_period=Period(31, 0, 32, 0))
    assert split.loc[split["mars_year"] == 32, "split"].eq("unused").all()
