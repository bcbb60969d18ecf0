"""Torch datasets of MDGMs with their storm targets, train/val/test splits, and planet-aware augmentation.

Splits (the paper's section 5.3)
--------------------------------
* Strategy 1, ``"temporal"``: train on MY25 Ls0° – MY27 Ls180°, test on MY27 Ls180° – MY28 Ls121°;
  the validation maps are drawn at random (``val_fraction``, default 0.33 ≈ the paper's
  614 / (1216 + 614)) from the training period.
* Strategy 2, ``"random"``: maps of MY25 Ls0° – MY28 Ls121° shuffled with a seed and cut
  52 / 24 / 24 % into train / validation / test.

These are the periods of an archive of the MOC years (the paper's data, up to MY28 Ls121°); an
archive that runs on into the MARCI years gets periods over its whole extent
(:func:`default_split_config`). Periods are half-open ``[start, end)`` on the Mars time axis of
:func:`marsdust.mdad_format.mars_time_sols`, except that a period marked ``end_inclusive`` (the
defaults ending at MY28 Ls121°, the end of the MOC archive) keeps its last instant. Maps outside
every period are written as ``"unused"``. Maps without storms stay in the data (they teach the
detector what a quiet Mars looks like). A split is saved as ``split.csv`` (``map_id, split,
mars_year, ls``) so a run can be reproduced and re-loaded.

Frames and augmentation
-----------------------
:class:`DustDataset` serves every map in a frame rolled along longitude so that no target
box crosses the 180° seam: without augmentation the smallest such roll (0 when no box
crosses), with augmentation a random one. Only when boxes cover every column is a box cut
in two at the seam (:func:`marsdust.labels.split_at_seam`). ``target["shift_px"]`` records
the roll (image column ``j`` shows native column ``(j - shift_px) mod W``).

Augmentation (``augment=True``) keeps the planet's geometry: the longitude roll (storms move
with the image), a left–right flip (longitudes mirrored: a mirror-image planet, whose
topography is not Mars's, but whose dust texture and latitude structure are valid), and a
brightness / contrast jitter applied to observed pixels only (missing pixels stay black).
No vertical flip — the hemispheres differ (the seasonal cap edges, the Ls–latitude pattern
of dust activity, the MOC band's relation to them) — and no rotation, which would tilt the
map's meridians and parallels.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable, Literal

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset

from marsdust.cloudmask import with_clouds
from marsdust.fileio import write_csv_atomic
from marsdust.labels import (DUST_LABEL, flip_target, in_outlined_span, map_targets, mask_supervised, outlined_span,
                             roll_target, seam_free_shift, split_at_seam)
from marsdust.history import MapHistory
from marsdust.mdad_format import mars_time_sols
from marsdust.reference import ReferenceConfig, stack_bands

SPLIT_NAMES = ("train", "val", "test", "unused")


# --- splits ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Period:
    """A span of Mars time from ``(start_my, start_ls)`` to ``(end_my, end_ls)``, Ls in degrees.

    Half-open (the end excluded) unless ``end_inclusive``.
    """

    start_my: int
    start_ls: float
    end_my: int
    end_ls: float
    end_inclusive: bool = False

    def __post_init__(self):
        for name, ls in (("start_ls", self.start_ls), ("end_ls", self.end_ls)):
            if not 0.0 <= ls <= 360.0:
                raise ValueError(f"period {name} must be an Ls in [0, 360] degrees, got {ls}")
        if mars_time_sols(self.end_my, self.end_ls) <= mars_time_sols(self.start_my, self.start_ls):
            raise ValueError(f"period {self.describe()} ends before it starts")

    def contains(self, mars_year, ls) -> np.ndarray:
        """Boolean array: which (Mars year, Ls) instants fall in the period."""
        key = mars_time_sols(mars_year, ls)
        start, end = mars_time_sols(self.start_my, self.start_ls), mars_time_sols(self.end_my, self.end_ls)
        return (key >= start) & ((key <= end) if self.end_inclusive else (key < end))

    def describe(self) -> str:
        """Human-readable span, e.g. ``MY25 Ls0° – MY27 Ls180°``."""
        return f"MY{self.start_my} Ls{self.start_ls:g}° – MY{self.end_my} Ls{self.end_ls:g}°"


@dataclass(frozen=True)
class SplitConfig:
    """How maps are split (see the module docstring); every field can be overridden.

    Attributes
    ----------
    strategy : {"temporal", "random"}
    train_period, test_period : Period
        Strategy 1's training (validation drawn from it) and test periods.
    val_fraction : float
        Strategy 1: fraction of the training period's maps moved to validation.
    random_period : Period
        Strategy 2: the maps that are shuffled.
    random_fractions : tuple of 3 floats
        Strategy 2: train, validation, test fractions (summing to 1).
    seed : int
        Seed of every random draw.
    """

    strategy: Literal["temporal", "random"] = "temporal"
    train_period: Period = Period(25, 0.0, 27, 180.0)
    test_period: Period = Period(27, 180.0, 28, 121.0, end_inclusive=True)
    val_fraction: float = 0.33
    random_period: Period = Period(25, 0.0, 28, 121.0, end_inclusive=True)
    random_fractions: tuple[float, float, float] = (0.52, 0.24, 0.24)
    seed: int = 0

    def __post_init__(self):
        if self.strategy not in ("temporal", "random"):
            raise ValueError(f"split strategy must be 'temporal' or 'random', got {self.strategy!r}")
        if not 0.0 <= self.val_fraction < 1.0:
            raise ValueError(f"val_fraction must be in [0, 1), got {self.val_fraction}")
        fractions = tuple(float(f) for f in self.random_fractions)
        if len(fractions) != 3 or min(fractions) < 0 or abs(sum(fractions) - 1.0) > 1e-6:
            raise ValueError(f"random_fractions must be three non-negative fractions summing to 1, got {self.random_fractions}")


MOC_ARCHIVE_END = (28, 121.0)
"""End of the MGS MOC maps (MY28 Ls121°), the end of the paper's data and of :class:`SplitConfig`'s periods."""


def default_split_config(index_df: pd.DataFrame) -> SplitConfig:
    """The split periods of an archive when none are given.

    An archive whose maps all end by MY28 Ls121° (the MOC years) gets the paper's
    (:class:`SplitConfig`). One that runs on past it (MRO MARCI years) gets periods over its
    whole extent, so that its later maps are used: the temporal split tests on its last Mars
    year ``Y`` (``MY{Y} Ls0° – its last map``; ``Y`` is the year before the last when the last
    map comes before Ls180°, so that the test holds half a Mars year at least) and trains on
    MY25 Ls0° – MY{Y} Ls0°; the random split shuffles MY25 Ls0° – its last map.
    """
    if len(index_df) == 0:
        return SplitConfig()
    key = mars_time_sols(index_df["mars_year"], index_df["ls"])
    if float(np.max(key)) <= float(mars_time_sols(*MOC_ARCHIVE_END)):
        return SplitConfig()
    last = index_df.iloc[int(np.argmax(key))]
    last_my = int(last["mars_year"])
    test_my = last_my if float(last["ls"]) >= 180.0 else last_my - 1
    end = Period(test_my, 0.0, last_my, 360.0, end_inclusive=True)
    return SplitConfig(train_period=Period(25, 0.0, test_my, 0.0), test_period=end,
                       random_period=replace(end, start_my=25))


def make_split(index_df: pd.DataFrame, strategy: str | None = None, config: SplitConfig | None = None, **overrides) -> pd.DataFrame:
    """Assign every map of an archive index to ``train``, ``val``, ``test`` or ``unused``.

    Parameters
    ----------
    index_df : DataFrame
        Archive index with ``map_id``, ``mars_year``, ``ls`` (degrees).
    strategy : {"temporal", "random"}, optional
        Overrides ``config.strategy``.
    config : SplitConfig, optional
        Periods, fractions and seed; defaults to :func:`default_split_config` of the index (the
        paper's for an archive of the MOC years).
    **overrides
        Fields of :class:`SplitConfig` to replace (e.g. ``val_fraction=0.2, seed=3``).

    Returns
    -------
    DataFrame
        ``map_id, split, mars_year, ls`` in the index's row order.

    Raises
    ------
    ValueError
        If a split comes out empty; the message names the period and what the index covers.
    """
    config = config or default_split_config(index_df)
    if strategy is not None:
        overrides["strategy"] = strategy
    if overrides:
        config = replace(config, **overrides)
    missing = [c for c in ("map_id", "mars_year", "ls") if c not in index_df.columns]
    if missing:
        raise ValueError(f"index table lacks column(s) {missing}; it has {list(index_df.columns)}")
    if index_df["map_id"].duplicated().any():
        dupes = index_df.loc[index_df["map_id"].duplicated(), "map_id"].unique()[:5].tolist()
        raise ValueError(f"index table has duplicate map_id values, e.g. {dupes}")
    split = np.full(len(index_df), "unused", dtype=object)
    rng = np.random.default_rng(config.seed)
    years, ls = index_df["mars_year"].to_numpy(), index_df["ls"].to_numpy()
    if config.strategy == "temporal":
        in_train = np.flatnonzero(config.train_period.contains(years, ls))
        in_test = np.flatnonzero(config.test_period.contains(years, ls) & ~config.train_period.contains(years, ls))
        _require(in_train, "temporal", "training period", config.train_period, index_df)
        _require(in_test, "temporal", "test period", config.test_period, index_df)
        n_val = int(round(config.val_fraction * len(in_train)))
        if config.val_fraction > 0:
            n_val = min(max(n_val, 1), len(in_train) - 1)
            if n_val < 1:
                raise ValueError(_empty_message("temporal", "validation split (drawn from the training period)",
                                                config.train_period, index_df, extra=f"only {len(in_train)} map(s) there"))
        val = rng.choice(in_train, size=n_val, replace=False) if n_val else np.array([], dtype=int)
        split[in_train] = "train"
        split[val] = "val"
        split[in_test] = "test"
    else:
        pool = np.flatnonzero(config.random_period.contains(years, ls))
        _require(pool, "random", "period", config.random_period, index_df)
        order = rng.permutation(pool)
        n_train = int(round(config.random_fractions[0] * len(pool)))
        n_val = int(round(config.random_fractions[1] * len(pool)))
        counts = {"train": n_train, "val": n_val, "test": len(pool) - n_train - n_val}
        for name, count in counts.items():
            if count <= 0:
                raise ValueError(_empty_message("random", f"{name} split", config.random_period, index_df,
                                                extra=f"{len(pool)} map(s) cut {config.random_fractions}"))
        split[order[:n_train]] = "train"
        split[order[n_train:n_train + n_val]] = "val"
        split[order[n_train + n_val:]] = "test"
    return pd.DataFrame({"map_id": index_df["map_id"].to_numpy(), "split": split,
                         "mars_year": years, "ls": ls})


def _coverage(index_df: pd.DataFrame) -> str:
    if len(index_df) == 0:
        return "the index is empty"
    key = mars_time_sols(index_df["mars_year"], index_df["ls"])
    first, last = index_df.iloc[int(np.argmin(key))], index_df.iloc[int(np.argmax(key))]
    return (f"the index covers MY{int(first['mars_year'])} Ls{float(first['ls']):.1f}° – "
            f"MY{int(last['mars_year'])} Ls{float(last['ls']):.1f}° ({len(index_df)} maps)")


def _empty_message(strategy: str, what: str, period: Period, index_df: pd.DataFrame, extra: str = "") -> str:
    detail = f" ({extra})" if extra else ""
    return (f"{strategy} split: the {what} {period.describe()} holds no maps{detail}; {_coverage(index_df)}. "
            f"Change the periods (SplitConfig) or use another strategy.")


def _require(rows: np.ndarray, strategy: str, what: str, period: Period, index_df: pd.DataFrame) -> None:
    if len(rows) == 0:
        raise ValueError(_empty_message(strategy, what, period, index_df))


def save_split(split_df: pd.DataFrame, path: str | os.PathLike) -> Path:
    """Write a split manifest CSV (``map_id, split, ...``) atomically; returns the path."""
    return write_csv_atomic(split_df, path)


def load_split(path: str | os.PathLike) -> pd.DataFrame:
    """Read a split manifest written by :func:`save_split`, checking its columns and split names."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"split manifest {path} does not exist")
    split_df = pd.read_csv(path, dtype={"map_id": str, "split": str})
    missing = [c for c in ("map_id", "split") if c not in split_df.columns]
    if missing:
        raise ValueError(f"split manifest {path} lacks column(s) {missing}; it has {list(split_df.columns)}")
    unknown = sorted(set(split_df["split"]) - set(SPLIT_NAMES))
    if unknown:
        raise ValueError(f"split manifest {path} has unknown split name(s) {unknown}; expected {SPLIT_NAMES}")
    return split_df


def select_split(index_df: pd.DataFrame, split_df: pd.DataFrame, name: str) -> pd.DataFrame:
    """Rows of ``index_df`` whose map is in split ``name``; maps the manifest names but the index lacks are an error."""
    if name not in SPLIT_NAMES:
        raise ValueError(f"split name must be one of {SPLIT_NAMES}, got {name!r}")
    wanted = split_df.loc[split_df["split"] == name, "map_id"]
    absent = sorted(set(wanted) - set(index_df["map_id"]))
    if absent:
        raise ValueError(f"{len(absent)} map(s) of the {name} split are not in the index, e.g. {absent[:5]}")
    return index_df[index_df["map_id"].isin(set(wanted))].reset_index(drop=True)


# --- augmentation ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class AugmentConfig:
    """Planet-respecting augmentation (see the module docstring).

    Attributes
    ----------
    roll : bool
        Random longitude roll (seam-free when possible).
    flip_prob : float
        Probability of the left–right (longitude-mirroring) flip.
    brightness : float
        Half-range of the additive brightness shift (reflectance units, 0–1 scale).
    contrast : float
        Half-range of the multiplicative contrast factor around 1.
    color_gain : float
        Half-range of an independent multiplicative gain per band around 1 (colour balance).
    gamma : float
        Half-range of the natural log of a gamma exponent (0.3: gamma in [0.74, 1.35]).
    blur_prob, blur_sigma_px : float
        Probability of a Gaussian blur and its largest σ in working pixels (smallest 0.3 px).
    noise_std : float
        Largest σ of additive Gaussian noise (reflectance units); each map draws its σ in [0, this].
    swath_step : float
        Half-range of additive brightness offsets between ``swath_count`` vertical swaths.
    swath_count : int
        Number of equal-width vertical swaths for ``swath_step``.
    band_mix : float
        σ of the off-diagonal weights of a random band-mixing matrix (another camera's band
        response): each output band is a mix of the input bands, rows summing to 1 (grey stays
        grey). Applied to the map's bands and its reference bands alike (one camera).
    gray_prob : float
        Probability that the map and its reference bands become grey (every band their mean),
        as a camera without colour would see them.
    """

    roll: bool = True
    flip_prob: float = 0.5
    brightness: float = 0.08
    contrast: float = 0.15
    color_gain: float = 0.0
    gamma: float = 0.0
    blur_prob: float = 0.0
    blur_sigma_px: float = 0.0
    noise_std: float = 0.0
    swath_step: float = 0.0
    swath_count: int = 13
    band_mix: float = 0.0
    gray_prob: float = 0.0

    @property
    def has_appearance_jitter(self) -> bool:
        """True when any of the camera / processing jitters beyond brightness and contrast is on."""
        return any(v > 0 for v in (self.color_gain, self.gamma, self.blur_prob, self.noise_std, self.swath_step))

    @property
    def has_band_response(self) -> bool:
        """True when the camera's band response is drawn (``band_mix`` or ``gray_prob``)."""
        return self.band_mix > 0 or self.gray_prob > 0


AUGMENT_PRESETS: dict[str, AugmentConfig] = {
    "basic": AugmentConfig(),
    "strong": AugmentConfig(color_gain=0.15, gamma=0.3, blur_prob=0.3, blur_sigma_px=1.0, noise_std=0.02,
                            swath_step=0.04),
    "camera": AugmentConfig(color_gain=0.25, gamma=0.4, blur_prob=0.3, blur_sigma_px=1.0, noise_std=0.02,
                            swath_step=0.05, band_mix=0.25, gray_prob=0.1),
}
"""Named augmentations (``TrainConfig.augment_preset``, ``--augment``).

``basic``
    Longitude roll, left–right flip, brightness ±0.08 and contrast ×(1 ± 0.15).
``strong``
    ``basic`` plus what differs between cameras, missions and map processing, so that a detector
    trained on one archive's look holds up on another's: a gain per band of ×(1 ± 0.15) (colour
    balance), a gamma of exp(±0.3), a Gaussian blur of up to 1 px (σ, working pixels) on 30 % of
    the maps, Gaussian noise of up to 0.02 (σ, reflectance), and brightness steps of up to ±0.04
    between 13 vertical swaths (as mosaicking leaves between orbits). All on observed pixels only.
``camera``
    ``strong``, wider (gain ×(1 ± 0.25), gamma exp(±0.4), swath steps ±0.05), plus another camera's
    band response: a random band-mixing matrix (off-diagonal weights of σ 0.25, rows summing to 1)
    and, on 10 % of the maps, grey bands, both applied to the map and its reference bands alike. A
    camera whose green band is synthesized from red and blue (MOC's maps) teaches fixed relations
    between the bands that another camera's bands (MARCI's) break; this draws them per map.
"""


def augment_config(name: str | bool | None) -> AugmentConfig | None:
    """The :data:`AUGMENT_PRESETS` entry ``name`` (True = ``basic``; False, None or ``none`` = no augmentation)."""
    if name is True:
        return AUGMENT_PRESETS["basic"]
    if name is False or name is None or name == "none":
        return None
    if name not in AUGMENT_PRESETS:
        raise ValueError(f"unknown augmentation {name!r}; valid names: none, {', '.join(AUGMENT_PRESETS)}")
    return AUGMENT_PRESETS[name]


def jitter_appearance(rgb: np.ndarray, valid: np.ndarray, rng: np.random.Generator, augment: AugmentConfig) -> np.ndarray:
    """Camera and processing jitter of an ``(H, W, 3)`` [0, 1] image (see ``strong`` in :data:`AUGMENT_PRESETS`).

    Draws from ``rng`` in a fixed order; missing pixels stay 0.
    """
    out = rgb.astype(np.float32, copy=True)
    if augment.color_gain > 0:
        out *= rng.uniform(1.0 - augment.color_gain, 1.0 + augment.color_gain, size=3).astype(np.float32)
    if augment.gamma > 0:
        out = np.power(np.clip(out, 0.0, 1.0), np.float32(np.exp(rng.uniform(-augment.gamma, augment.gamma))))
    if augment.swath_step > 0:
        edges = np.linspace(0, out.shape[1], augment.swath_count + 1).astype(int)
        steps = rng.uniform(-augment.swath_step, augment.swath_step, size=augment.swath_count).astype(np.float32)
        out += np.repeat(steps, np.diff(edges))[None, :, None]
    if augment.blur_prob > 0 and rng.random() < augment.blur_prob:
        from scipy.ndimage import gaussian_filter

        sigma = rng.uniform(0.3, augment.blur_sigma_px)
        out = gaussian_filter(out, sigma=(sigma, sigma, 0), mode=("nearest", "wrap", "nearest"))
    if augment.noise_std > 0:
        out += rng.normal(0.0, rng.uniform(0.0, augment.noise_std), size=out.shape).astype(np.float32)
    out = np.clip(out, 0.0, 1.0)
    out[~valid] = 0.0
    return out


def band_response(rgb: np.ndarray, rng: np.random.Generator, augment: AugmentConfig) -> np.ndarray:
    """Another camera's band response for an ``(H, W, 3 k)`` [0, 1] image: one random band-mixing matrix
    (see ``camera`` in :data:`AUGMENT_PRESETS`) applied to each group of three bands (the map, then its
    reference bands), or grey bands with probability ``gray_prob``. The weights are non-negative, so
    missing pixels (all bands 0) stay 0."""
    if rng.random() < augment.gray_prob:
        mix = np.full((3, 3), 1.0 / 3.0, dtype=np.float32)
    else:
        mix = np.eye(3, dtype=np.float32) + rng.normal(0.0, augment.band_mix, size=(3, 3)).astype(np.float32)
        np.fill_diagonal(mix, 1.0)
        mix = np.clip(mix, 0.0, None)
        mix /= mix.sum(axis=1, keepdims=True)
    groups = rgb.reshape(*rgb.shape[:2], -1, 3).astype(np.float32)
    return np.clip(np.einsum("hwgc,bc->hwgb", groups, mix), 0.0, 1.0).reshape(rgb.shape)


def jitter_photometry(rgb: np.ndarray, valid: np.ndarray, brightness_shift: float, contrast_factor: float) -> np.ndarray:
    """Brightness/contrast jitter of an ``(H, W, 3)`` [0, 1] image on observed pixels; missing pixels stay 0."""
    out = rgb.copy()
    if not valid.any():
        return out
    mean = rgb[valid].mean(axis=0)
    out[valid] = np.clip((rgb[valid] - mean) * contrast_factor + mean + brightness_shift, 0.0, 1.0)
    return out


def place_in_frame(rgb, valid, target, width: int, rng: np.random.Generator | None, augment: AugmentConfig | None):
    """Roll (and with ``augment`` flip and jitter) a map and its target; returns ``(rgb, valid, target)``.

    Without augmentation the smallest seam-free roll is used; with it, a random seam-free roll.
    Boxes are cut at the seam only when no roll frees it. ``rgb`` may carry reference bands after
    its first three (:mod:`marsdust.reference`): they roll and flip with the map, but the
    photometric jitter is the map's own (a background is a median over many sols, so a sol's
    camera and processing differences are in the map, not in it).
    """
    random_roll = augment is not None and augment.roll and rng is not None
    shift = seam_free_shift(target["boxes"], width, rng if random_roll else None)
    needs_split = shift is None
    if needs_split:
        shift = int(rng.integers(width)) if random_roll else 0
    target = roll_target(target, shift, width)
    if needs_split:
        target = split_at_seam(target, width)
    rgb, valid = np.roll(rgb, shift, axis=1), np.roll(valid, shift, axis=1)
    flipped = False
    if augment is not None and rng is not None:
        if rng.random() < augment.flip_prob:
            rgb, valid, target = rgb[:, ::-1], valid[:, ::-1], flip_target(target, width)
            flipped = True
        if augment.has_band_response and rgb.shape[-1] % 3 == 0:
            rgb = band_response(rgb, rng, augment)
        bands, reference = np.ascontiguousarray(rgb[..., :3]), rgb[..., 3:]
        if augment.brightness > 0 or augment.contrast > 0:
            bands = jitter_photometry(bands, np.ascontiguousarray(valid),
                                      rng.uniform(-augment.brightness, augment.brightness),
                                      rng.uniform(1.0 - augment.contrast, 1.0 + augment.contrast))
        if augment.has_appearance_jitter:
            bands = jitter_appearance(bands, np.ascontiguousarray(valid), rng, augment)
        rgb = np.concatenate([bands, reference], axis=-1) if reference.shape[-1] else bands
    target["shift_px"] = int(shift)
    target["flipped"] = flipped
    return np.ascontiguousarray(rgb), np.ascontiguousarray(valid), target


def map_latitudes(index_df: pd.DataFrame, res_deg: float) -> tuple[float, float] | None:
    """``(south, north)`` in degrees: the latitudes the maps of ``index_df`` cover together (their grids'
    extents, read from the file headers of one map per subphase, a subphase being one camera's in one
    layout, and of every map without one), or None for no maps. What a trained detector records as the
    latitudes it has seen (:func:`marsdust.models.training_latitudes`).

    Raises
    ------
    marsdust.mdgm.MapReadError
        A map whose header cannot be read or whose shape is no known grid (names the file).
    """
    from marsdust.mdgm import working_grid

    south, north = None, None
    named = index_df["subphase"].notna() if "subphase" in index_df else pd.Series(False, index=index_df.index)
    paths = [*index_df.loc[named].groupby("subphase", sort=False).head(1)["path"], *index_df.loc[~named, "path"]]
    for path in paths:
        grid = working_grid(path, res_deg)
        south = grid.lat_south_deg if south is None else min(south, grid.lat_south_deg)
        north = grid.lat_north_deg if north is None else max(north, grid.lat_north_deg)
        if south <= -90.0 and north >= 90.0:
            break  # global already
    return None if south is None else (float(south), float(north))


# --- the dataset -----------------------------------------------------------------------------------
def _default_loader(path: str, res_deg: float):
    from marsdust import mdgm

    return mdgm.read_map_resampled(path, res_deg)


class DustDataset(Dataset):
    """MDGMs at the working resolution with their dust-storm detection targets (a torch map-style Dataset).

    Parameters
    ----------
    index_df : DataFrame
        Archive index rows (``map_id, mars_year, ls, path``) of the maps to serve.
    storms_df : DataFrame
        Storm table (:func:`marsdust.mdad.read_catalog`); rows of other maps are ignored.
    map_res_deg : float
        Working resolution in degrees per pixel (a whole multiple of the maps' resolution).
    label_mode : {"fixed", "area", "outline"}
        Ground-truth shape, see :mod:`marsdust.labels`.
    augment : bool, str or AugmentConfig
        ``True`` for the default :class:`AugmentConfig`, or a name of :data:`AUGMENT_PRESETS`.
    cache : bool
        Keep the downsampled images and their targets in memory (about 1 MB per 0.4° map).
    label_options : dict, optional
        Extra keyword arguments of :func:`marsdust.labels.map_targets` (e.g. ``box_size_deg``).
    load_map : callable, optional
        ``load_map(path, res_deg) -> MapImage``; defaults to :func:`marsdust.mdgm.read_map_resampled`.
    backgrounds : dict, optional
        ``map_id -> (H, W, 3)`` reference background on the working grid
        (:func:`dataset_backgrounds`); served as three more bands after R, G, B.
    cloud_masks : marsdust.cloudmask.CloudMasks, optional
        Add each map's water-ice cloud instances (label 2) after its storms; maps without a
        cloud mask get storms only.
    reference_dropout : float
        With augmentation and ``backgrounds``: the probability that an item's background is
        replaced by "no history" (0 in every band, what the first map of an archive or a lone map
        gets), so the detector also learns to work without one.

    Items are ``(image, target)``: ``image`` a float32 tensor ``(3, H, W)`` in [0, 1] (``(6, H, W)``
    with ``backgrounds``);
    ``target`` a dict with tensors ``boxes`` (n, 4) float32, ``labels`` (n,) int64, ``masks``
    (n, H, W) uint8, ``confidence`` (n,) int64, ``area_km2`` (n,) float32, ``has_outline`` (n,) bool,
    ``mask_supervised`` (n,) bool (whether the mask is a target of the mask loss,
    :func:`marsdust.labels.mask_supervised`: in outline mode only outlined instances'), ``valid`` (H, W)
    bool (observed pixels), plus ``map_id`` (str), ``ls`` (float, degrees), ``shift_px`` (int),
    ``flipped`` (bool) and ``outline_truth`` (bool: in ``outline`` mode, the map's dust masks are all the
    dust the catalogue outlines there, so its pixels can be scored).
    """

    def __init__(self, index_df: pd.DataFrame, storms_df: pd.DataFrame, map_res_deg: float = 0.4,
                 label_mode: str = "fixed", augment: bool | AugmentConfig = False, cache: bool = True,
                 *, label_options: dict | None = None, load_map: Callable | None = None,
                 backgrounds: dict[str, np.ndarray] | None = None, cloud_masks=None,
                 reference_dropout: float = 0.0):
        missing = [c for c in ("map_id", "path") if c not in index_df.columns]
        if missing:
            raise ValueError(f"index table lacks column(s) {missing}; it has {list(index_df.columns)}")
        if "map_id" not in storms_df.columns:
            raise ValueError(f"storm table lacks column 'map_id'; it has {list(storms_df.columns)}")
        self.index = index_df.reset_index(drop=True)
        self.map_res_deg = float(map_res_deg)
        self.label_mode = label_mode
        self.label_options = dict(label_options or {})
        self.augment = augment if isinstance(augment, AugmentConfig) else augment_config(augment)
        self.cache = cache
        self._load_map = load_map or _default_loader
        self.cloud_masks = cloud_masks
        wanted = set(self.index["map_id"])
        self._storms = {k: g for k, g in storms_df[storms_df["map_id"].isin(wanted)].groupby("map_id", sort=False)}
        self._empty_storms = storms_df.iloc[0:0]
        self._outlined_span = outlined_span(storms_df) if label_mode == "outline" else None
        self._memory: dict[int, tuple] = {}
        self.backgrounds = backgrounds
        self.reference_dropout = float(reference_dropout)
        if backgrounds is not None:
            lacking = sorted(wanted - set(backgrounds))
            if lacking:
                raise ValueError(f"no reference background for {len(lacking)} map(s), e.g. {lacking[:3]}")

    def __len__(self) -> int:
        return len(self.index)

    def storms_of(self, map_id: str) -> pd.DataFrame:
        """Storm-table rows of one map (empty for a map without storms)."""
        return self._storms.get(map_id, self._empty_storms)

    def _has_outline_truth(self, row, target: dict) -> bool:
        """Whether the dust masks of a map's target are its whole outline truth: in ``outline`` mode, every
        storm of the map outlined and the map inside the span of the outlining catalogue (as evaluation's
        :func:`marsdust.evaluate.runner.outline_truth`), so that a map without storms there is truly clear."""
        if "mars_year" not in row or "ls" not in row:
            return False
        if not in_outlined_span(self._outlined_span, row["mars_year"], row["ls"]):
            return False
        return bool(np.all(np.asarray(target["has_outline"])[np.asarray(target["labels"]) == DUST_LABEL]))

    def load(self, i: int):
        """Map ``i`` at the working resolution in its native frame: ``(rgb (H, W, 3), valid (H, W), target, grid)``.

        The target is :func:`marsdust.labels.map_targets` on the working grid (numpy arrays).
        """
        if i in self._memory:
            return self._memory[i]
        row = self.index.iloc[i]
        image = self._load_map(str(row["path"]), self.map_res_deg)
        if abs(image.grid.res_deg - self.map_res_deg) > 1e-9:
            raise ValueError(f"map {row['map_id']} ({row['path']}) loaded at {image.grid.res_deg}° per pixel, "
                             f"expected the working resolution {self.map_res_deg}°")
        target = map_targets(self.storms_of(row["map_id"]), image.grid, self.label_mode, **self.label_options)
        clouds = self.cloud_masks.instances(row, image.grid) if self.cloud_masks is not None else None
        if clouds is not None:
            target = with_clouds(target, clouds)
        rgb = image.rgb.astype(np.float32, copy=False)
        if self.backgrounds is not None:
            background = self.backgrounds[row["map_id"]]
            if background.shape[:2] != rgb.shape[:2]:
                raise ValueError(f"map {row['map_id']} ({row['path']}): reference background of shape "
                                 f"{background.shape[:2]}, map of shape {rgb.shape[:2]} at the working resolution")
            rgb = stack_bands(rgb, background.astype(np.float32))
        item = (rgb, image.valid, target, image.grid)
        if self.cache:
            self._memory[i] = item
        return item

    def __getitem__(self, i: int):
        if not 0 <= i < len(self):
            raise IndexError(f"map index {i} out of range for a dataset of {len(self)} maps")
        rgb, valid, target, grid = self.load(i)
        rng = _item_rng() if self.augment is not None else None
        rgb, valid, target = place_in_frame(rgb, valid, target, grid.width, rng, self.augment)
        if rng is not None and self.reference_dropout > 0 and rgb.shape[-1] > 3 and rng.random() < self.reference_dropout:
            rgb = rgb.copy()
            rgb[..., 3:] = 0.0  # as a map without history
        row = self.index.iloc[i]
        out = {
            "boxes": torch.as_tensor(target["boxes"], dtype=torch.float32).reshape(-1, 4),
            "labels": torch.as_tensor(target["labels"], dtype=torch.int64),
            "masks": torch.as_tensor(target["masks"], dtype=torch.uint8),
            "confidence": torch.as_tensor(target["confidence"], dtype=torch.int64),
            "area_km2": torch.as_tensor(target["area_km2"], dtype=torch.float32),
            "has_outline": torch.as_tensor(target["has_outline"], dtype=torch.bool),
            "mask_supervised": torch.as_tensor(mask_supervised(target["has_outline"], self.label_mode)),
            "map_id": str(row["map_id"]),
            "ls": float(row["ls"]) if "ls" in row else float("nan"),
            "shift_px": target["shift_px"],
            "flipped": target["flipped"],
            "valid": torch.from_numpy(np.ascontiguousarray(valid, dtype=bool)),
            "outline_truth": self._has_outline_truth(row, target),
        }
        image = torch.from_numpy(np.ascontiguousarray(rgb.transpose(2, 0, 1)))
        return image, out


def dataset_backgrounds(index_df: pd.DataFrame, map_res_deg: float, reference: ReferenceConfig, *,
                        map_ids=None, progress: bool = False,
                        load_map: Callable | None = None) -> dict[str, np.ndarray] | None:
    """Reference backgrounds of the maps ``map_ids`` (default: every map) of an archive index at the working
    resolution (None without a reference).

    The whole archive is history: a map's background comes from the maps before it, whatever
    their split (only images are used, never labels); built by :class:`marsdust.history.MapHistory`,
    which reads each history map once and refuses maps without a Mars year and Ls (there is no
    detector yet that works without history).
    """
    if not reference.enabled:
        return None
    loader = load_map or _default_loader

    def load(path):
        image = loader(str(path), map_res_deg)
        return image.rgb, image.valid

    return MapHistory(reference, index_df, load).backgrounds(map_ids, progress=progress)


def _item_rng() -> np.random.Generator:
    """A numpy generator drawn from torch's RNG, which Lightning / DataLoader seed per worker."""
    return np.random.default_rng(int(torch.randint(0, 2**62, ()).item()))


def collate_fn(batch):
    """Detection batches: ``(list of images, list of targets)`` (images may differ in size)."""
    images, targets = zip(*batch) if batch else ((), ())
    return list(images), list(targets)
