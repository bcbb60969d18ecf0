"""Map grids of Mars Daily Global Maps: lon/lat <-> pixel, wrap-around at 180°, areas on the sphere.

Conventions used everywhere in marsdust
---------------------------------------
* Longitudes are east-positive degrees in [-180, 180); latitudes are degrees north.
* A map is simple cylindrical ("equirectangular"): row 0 is the northern edge, column 0 the
  western edge at 180°W. Pixels are squares of ``res_deg`` degrees.
* Continuous pixel coordinates follow torchvision's box convention: pixel ``j`` covers
  ``[j, j + 1)``, so its centre is at ``j + 0.5``. ``x`` runs along longitude (columns), ``y``
  along latitude (rows, downwards).
* Areas are on a sphere of radius :data:`MARS_RADIUS_KM` (3396.19 km, the IAU 2015 equatorial
  radius used by MDAD). A lon/lat cell's area is ``R^2 * dlon * (sin(lat_n) - sin(lat_s))``;
  polygons with lon/lat vertices are measured exactly through the cylindrical equal-area
  projection ``(R * lon, R * sin(lat))``, in which pixel outlines stay straight lines.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

MARS_RADIUS_KM = 3396.19
"""Mars equatorial radius in km (IAU 2015), the sphere on which areas are computed."""


def normalize_lon(lon_deg, convention: Literal["east", "west"] = "east"):
    """Longitudes to east-positive degrees in [-180, 180).

    Parameters
    ----------
    lon_deg : float or array_like
        Longitudes in degrees, in any range: [0, 360), [-180, 180) or beyond.
    convention : {"east", "west"}
        ``"west"`` means the input is west-positive (as in some MDAD exports and the paper's
        figure captions, e.g. "89.25° W") and is negated first.

    Returns
    -------
    float or ndarray
        East-positive longitudes in [-180, 180), same shape as the input.
    """
    if convention not in ("east", "west"):
        raise ValueError(f"longitude convention must be 'east' or 'west', got {convention!r}")
    lon = np.asarray(lon_deg, dtype=np.float64)
    if convention == "west":
        lon = -lon
    in_range = (lon >= -180.0) & (lon < 180.0)
    # values already in range come back bit for bit: the modulo would add rounding noise
    # (63.406 -> 63.406000000000006) that then shows in every written table
    out = np.where(in_range, lon, (lon + 180.0) % 360.0 - 180.0)
    return float(out) if out.ndim == 0 else out


def lon_difference_deg(lon_a_deg, lon_b_deg):
    """Signed shortest difference ``a - b`` in degrees, in [-180, 180) (wraps at 180°)."""
    return normalize_lon(np.asarray(lon_a_deg, dtype=np.float64) - np.asarray(lon_b_deg, dtype=np.float64))


def lonlat_box_area_km2(lon_min_deg, lon_max_deg, lat_min_deg, lat_max_deg, radius_km: float = MARS_RADIUS_KM):
    """Area in km² of a lon/lat box on the sphere.

    ``lon_max < lon_min`` means the box crosses 180° (e.g. 170 → -170 is 20° wide).
    """
    width_deg = np.mod(np.asarray(lon_max_deg, float) - np.asarray(lon_min_deg, float), 360.0)
    width_deg = np.where((width_deg == 0) & (np.asarray(lon_max_deg) != np.asarray(lon_min_deg)), 360.0, width_deg)
    band = np.sin(np.radians(lat_max_deg)) - np.sin(np.radians(lat_min_deg))
    area = radius_km**2 * np.radians(width_deg) * band
    return float(area) if np.ndim(area) == 0 else area


def polygon_area_km2(geometry, radius_km: float = MARS_RADIUS_KM) -> float:
    """Area in km² of a shapely (Multi)Polygon whose coordinates are (lon°, lat°).

    Exact for polygons whose edges follow meridians and parallels (pixel outlines) and a good
    approximation for any other polygon of sub-degree edges. A polygon that was split at 180°
    (a MultiPolygon) is measured part by part.
    """
    from shapely import transform

    def to_equal_area(coords: np.ndarray) -> np.ndarray:
        lon_rad = np.radians(coords[:, 0])
        lat_rad = np.radians(np.clip(coords[:, 1], -90.0, 90.0))
        return np.column_stack([radius_km * lon_rad, radius_km * np.sin(lat_rad)])

    return float(transform(geometry, to_equal_area).area)


def occupied_column_span(columns_occupied: np.ndarray, ties_cross_seam: bool = False) -> tuple[int, int]:
    """Westernmost and easternmost occupied columns of a storm, allowing it to wrap across 180°.

    The storm is taken to span everything but the widest circular run of empty columns, so a
    mask touching both map edges is one storm across 180°.

    Parameters
    ----------
    columns_occupied : ndarray of bool, shape (width,)
    ties_cross_seam : bool
        When the widest empty run inside the map is as wide as the run across the 180° seam:
        False (the detections table's rule) leaves the seam run out, so the span stays inside the
        map; True (the training targets' rule) leaves the inner run out, so the span crosses 180°.

    Returns
    -------
    (start, stop) : tuple of int
        Pixel columns ``x0 = start`` and ``x1 = stop`` (exclusive), with ``stop`` possibly larger
        than the width for a storm across 180° (``stop - start`` is its width in pixels).

    Raises
    ------
    ValueError
        If no column is occupied.
    """
    cols = np.flatnonzero(columns_occupied)
    width = columns_occupied.size
    if cols.size == 0:
        raise ValueError("empty mask: no storm pixels")
    if cols.size == width:
        return 0, width
    gaps = np.diff(cols) - 1
    seam_gap = cols[0] + width - cols[-1] - 1
    if gaps.size:
        k = int(np.argmax(gaps))
        if gaps[k] > seam_gap or (ties_cross_seam and gaps[k] == seam_gap):
            return int(cols[k + 1]), int(cols[k]) + 1 + width  # the storm crosses 180°
    return int(cols[0]), int(cols[-1]) + 1


def wrapped_columns(x0: float, x1: float, width: int) -> np.ndarray:
    """Map columns of the pixels a span ``[x0, x1)`` of pixel x touches, west to east, wrapping at 180°.

    ``x`` may run past the map edges (a box across 180° kept whole has ``x0 < 0`` or
    ``x1 > width``): column ``c`` is map column ``c mod width``. The span touches at least the
    column of ``x0``; a span of ``width`` columns or more gives every column once, starting at
    the column of ``x0``.

    Returns
    -------
    ndarray of int, shape (n,), 1 <= n <= width
    """
    start = int(np.floor(x0))
    stop = min(max(int(np.ceil(x1)), start + 1), start + int(width))
    return np.arange(start, stop) % int(width)


def wrap_aware_bbox(mask: np.ndarray, ties_cross_seam: bool = False) -> tuple[int, int, int, int]:
    """Pixel bounding box ``(x0, y0, x1, y1)`` of a ``(H, W)`` mask whose columns wrap at 180°.

    Rows are the first and one past the last occupied row; columns come from
    :func:`occupied_column_span`, so a mask with pixels at both map edges gets ``x1 > W`` and a
    mask occupying every column gets ``(0, W)``.

    Raises
    ------
    ValueError
        If the mask is empty.
    """
    mask = np.asarray(mask, dtype=bool)
    rows = np.flatnonzero(mask.any(axis=1))
    if rows.size == 0:
        raise ValueError("empty mask: no storm pixels")
    x0, x1 = occupied_column_span(mask.any(axis=0), ties_cross_seam)
    return x0, int(rows[0]), x1, int(rows[-1]) + 1


def wrapped_components(mask: np.ndarray, wraps: bool = True) -> tuple[np.ndarray, int]:
    """Connected components (8-connected) of a ``(H, W)`` mask whose columns wrap at 180°.

    With ``wraps``, the first and last columns are neighbours (a whole-longitude map): a pixel of
    column 0 joins the pixels of column ``W - 1`` in its own and the adjacent rows, so a storm
    cut by the seam is one component. Without it (a window of a map, or a map already
    wrap-padded), the image edges are edges.

    Returns
    -------
    (labels, n) : ndarray of int32 (H, W) and int
        0 for background, components numbered 1..n.
    """
    from scipy import ndimage

    mask = np.asarray(mask, dtype=bool)
    labels, n = ndimage.label(mask, structure=np.ones((3, 3), dtype=bool))
    if not wraps or n < 2 or mask.shape[1] < 2:
        return labels.astype(np.int32, copy=False), int(n)
    parent = np.arange(n + 1)

    def root(a: int) -> int:
        while parent[a] != a:
            parent[a] = parent[parent[a]]
            a = parent[a]
        return a

    west, east, height = labels[:, 0], labels[:, -1], mask.shape[0]
    for row_step in (-1, 0, 1):  # column 0, row r touches column W - 1, rows r - 1 .. r + 1
        rows = np.arange(max(0, -row_step), height - max(0, row_step))
        a, b = west[rows], east[rows + row_step]
        for i, j in set(zip(a[(a > 0) & (b > 0)].tolist(), b[(a > 0) & (b > 0)].tolist())):
            parent[root(i)] = root(j)
    roots = np.array([root(i) for i in range(n + 1)])
    _, renumbered = np.unique(roots, return_inverse=True)  # root 0 (background) stays 0
    return renumbered[labels].astype(np.int32), int(renumbered.max())


@dataclass(frozen=True)
class MapGrid:
    """A simple-cylindrical global map grid spanning 360° of longitude from 180°W.

    Parameters
    ----------
    lat_north_deg, lat_south_deg : float
        Latitudes of the northern and southern map edges (degrees north).
    res_deg : float
        Pixel size in degrees (same along longitude and latitude).

    Examples
    --------
    >>> grid = MapGrid.moc()
    >>> grid.shape
    (1200, 3600)
    """

    lat_north_deg: float = 60.0
    lat_south_deg: float = -60.0
    res_deg: float = 0.1

    def __post_init__(self):
        if not (-90.0 <= self.lat_south_deg < self.lat_north_deg <= 90.0):
            raise ValueError(f"grid latitudes must satisfy -90 <= south < north <= 90, got {self}")
        if self.res_deg <= 0:
            raise ValueError(f"grid resolution must be positive, got {self.res_deg}")
        for name, span in (("longitude", 360.0), ("latitude", self.lat_north_deg - self.lat_south_deg)):
            n = span / self.res_deg
            if abs(n - round(n)) > 1e-6:
                raise ValueError(f"{name} span {span}° is not a whole number of {self.res_deg}° pixels")

    # --- constructors -------------------------------------------------------------------------
    @classmethod
    def moc(cls, res_deg: float = 0.1) -> "MapGrid":
        """The MGS MOC non-polar MDGM grid: 60°S–60°N (1200 × 3600 at 0.1°)."""
        return cls(60.0, -60.0, res_deg)

    @classmethod
    def marci(cls, res_deg: float = 0.1) -> "MapGrid":
        """The MRO MARCI global MDGM grid: 90°S–90°N (1800 × 3600 at 0.1°)."""
        return cls(90.0, -90.0, res_deg)

    @classmethod
    def from_width(cls, width: int, lat_north_deg: float = 90.0, lat_south_deg: float = -90.0) -> "MapGrid":
        """The grid of ``width`` columns spanning 360° (``res = 360° / width``) over a latitude band.

        The default band is the MARCI global map's (90°S–90°N), the band of MDAD v1.1 cubes.
        """
        if width <= 0:
            raise ValueError(f"map width must be positive, got {width}")
        return cls(lat_north_deg, lat_south_deg, 360.0 / width)

    @classmethod
    def from_shape(cls, height: int, width: int) -> "MapGrid":
        """Infer the grid of a map from its pixel shape.

        The width fixes the resolution (360° / width); a height of 120°/res is the MOC non-polar
        band, 180°/res the MARCI global map. Anything else is an error.
        """
        if width <= 0 or height <= 0:
            raise ValueError(f"map shape must be positive, got {height} x {width}")
        res = 360.0 / width
        for north, south in ((60.0, -60.0), (90.0, -90.0)):
            if abs((north - south) / res - height) < 1e-6:
                return cls.from_width(width, north, south)
        raise ValueError(
            f"a {height} x {width} map is neither a MOC non-polar map (height = width / 3, "
            f"60°S–60°N) nor a MARCI global map (height = width / 2, 90°S–90°N)"
        )

    # --- shape and coordinates ---------------------------------------------------------------
    @property
    def height(self) -> int:
        return int(round((self.lat_north_deg - self.lat_south_deg) / self.res_deg))

    @property
    def width(self) -> int:
        return int(round(360.0 / self.res_deg))

    @property
    def shape(self) -> tuple[int, int]:
        """(rows, columns)."""
        return self.height, self.width

    @property
    def lon_centers_deg(self) -> np.ndarray:
        """Longitude of each column's centre, east-positive, ascending from -180 + res/2."""
        return -180.0 + (np.arange(self.width) + 0.5) * self.res_deg

    @property
    def lat_centers_deg(self) -> np.ndarray:
        """Latitude of each row's centre, descending from the northern edge."""
        return self.lat_north_deg - (np.arange(self.height) + 0.5) * self.res_deg

    def rescaled(self, factor: float) -> "MapGrid":
        """The same extent at ``res_deg * factor`` (factor 4 turns 0.1° into 0.4°)."""
        return MapGrid(self.lat_north_deg, self.lat_south_deg, self.res_deg * factor)

    def lonlat_to_pixel(self, lon_deg, lat_deg):
        """Continuous pixel coordinates ``(x, y)`` of lon/lat points.

        Longitudes are normalized first, so 350° and -10° land on the same column. Points
        outside the grid's latitude band get ``y`` outside ``[0, height)``; check with
        :meth:`contains_lat`.
        """
        lon = normalize_lon(lon_deg)
        x = (np.asarray(lon) + 180.0) / self.res_deg
        y = (self.lat_north_deg - np.asarray(lat_deg, dtype=np.float64)) / self.res_deg
        return x, y

    def pixel_to_lonlat(self, x, y):
        """Lon/lat of continuous pixel coordinates ``(x, y)``; longitudes wrap into [-180, 180)."""
        lon = normalize_lon(-180.0 + np.asarray(x, dtype=np.float64) * self.res_deg)
        lat = self.lat_north_deg - np.asarray(y, dtype=np.float64) * self.res_deg
        return lon, lat

    def contains_lat(self, lat_deg):
        """Whether latitudes fall inside the grid's band."""
        lat = np.asarray(lat_deg, dtype=np.float64)
        return (lat >= self.lat_south_deg) & (lat <= self.lat_north_deg)

    # --- georeferencing and outlines -----------------------------------------------------------
    def window_affine(self, row0: int = 0, col0: int = 0):
        """Affine geotransform (pixel → lon/lat degrees) of a window whose top-left pixel is ``(row0, col0)``.

        Returns
        -------
        affine.Affine
            ``lon = -180 + (col0 + col) * res``, ``lat = lat_north - (row0 + row) * res`` at pixel
            corners, as rasterio expects.
        """
        from affine import Affine

        res = self.res_deg
        return Affine(res, 0.0, -180.0 + col0 * res, 0.0, -res, self.lat_north_deg - row0 * res)

    @property
    def affine(self):
        """Affine geotransform of the whole map: west edge -180°, north edge :attr:`lat_north_deg`."""
        return self.window_affine(0, 0)

    def outline_of(self, window_mask: np.ndarray, row0: int = 0, col0: int = 0):
        """Pixel-edge outline (lon/lat degrees) of the True pixels of a mask window of this grid.

        Parameters
        ----------
        window_mask : ndarray of bool, shape (rows, columns)
            A window of a map on this grid; its top-left pixel is ``(row0, col0)`` of the map.
        row0, col0 : int
            Where the window lies on the map.

        Returns
        -------
        shapely geometry
            The union of the polygons :func:`rasterio.features.shapes` traces around the True
            pixels (holes kept): a Polygon, a MultiPolygon, or empty for an empty window. Pixels
            never cross the map's edge, so a storm across 180° comes out as parts ending at ±180°.
        """
        import shapely
        from rasterio.features import shapes

        window = np.ascontiguousarray(window_mask, dtype=np.uint8)
        traced = shapes(window, mask=window.astype(bool), transform=self.window_affine(row0, col0))
        return shapely.unary_union([shapely.geometry.shape(geometry) for geometry, _ in traced])

    def mask_to_polygon(self, mask: np.ndarray):
        """Pixel-edge outline (lon/lat degrees) of the True pixels of a ``(height, width)`` map mask.

        The outline is traced on the mask's wrap-aware bounding box (:meth:`wrap_aware_bbox`;
        the full width for a storm across 180°), so the polygon's vertices are the same whichever
        map the storm sits on. See :meth:`outline_of`.

        Raises
        ------
        ValueError
            If the mask is empty or not of the grid's shape.
        """
        x0, y0, x1, y1 = self.wrap_aware_bbox(mask)
        if x1 > self.width:  # across 180°: keep full width so both edge pieces are traced
            x0, x1 = 0, self.width
        return self.outline_of(np.asarray(mask, dtype=bool)[y0:y1, x0:x1], y0, x0)

    def wrap_aware_bbox(self, mask: np.ndarray, ties_cross_seam: bool = False) -> tuple[int, int, int, int]:
        """Pixel bounding box ``(x0, y0, x1, y1)`` of a map mask, ``x1 > width`` across 180° (:func:`wrap_aware_bbox`)."""
        if np.shape(mask) != self.shape:
            raise ValueError(f"mask shape {np.shape(mask)} does not match grid shape {self.shape}")
        return wrap_aware_bbox(mask, ties_cross_seam)

    # --- areas ---------------------------------------------------------------------------------
    def row_pixel_area_km2(self, radius_km: float = MARS_RADIUS_KM) -> np.ndarray:
        """Area of one pixel in each row, km² (shape ``(height,)``)."""
        north = self.lat_north_deg - np.arange(self.height) * self.res_deg
        south = north - self.res_deg
        return lonlat_box_area_km2(0.0, self.res_deg, south, north, radius_km)

    def mask_area_km2(self, mask: np.ndarray, radius_km: float = MARS_RADIUS_KM) -> float:
        """Area in km² of the True pixels of a ``(height, width)`` boolean mask."""
        if mask.shape != self.shape:
            raise ValueError(f"mask shape {mask.shape} does not match grid shape {self.shape}")
        return float(np.asarray(mask, dtype=bool).sum(axis=1) @ self.row_pixel_area_km2(radius_km))

    # --- boxes -----------------------------------------------------------------------------------
    def lonlat_box_to_pixel_boxes(self, lon_min_deg, lon_max_deg, lat_min_deg, lat_max_deg):
        """Pixel boxes ``[x0, y0, x1, y1]`` covering a lon/lat box, split at 180° when it crosses.

        ``lon_max < lon_min`` (after normalization) means the box crosses 180°: it comes back as
        two boxes, one ending at the eastern map edge and one starting at the western edge.
        Latitudes are clipped to the grid's band; a box wholly outside it gives no boxes.

        Returns
        -------
        ndarray of shape (n, 4), n in {0, 1, 2}, float64
        """
        lat_hi = min(max(lat_min_deg, lat_max_deg), self.lat_north_deg)
        lat_lo = max(min(lat_min_deg, lat_max_deg), self.lat_south_deg)
        if lat_hi <= lat_lo:
            return np.zeros((0, 4))
        y0 = (self.lat_north_deg - lat_hi) / self.res_deg
        y1 = (self.lat_north_deg - lat_lo) / self.res_deg
        span = lon_max_deg - lon_min_deg
        if span >= 360.0:
            return np.array([[0.0, y0, float(self.width), y1]])
        x0 = (normalize_lon(lon_min_deg) + 180.0) / self.res_deg
        x1 = (normalize_lon(lon_max_deg) + 180.0) / self.res_deg
        if x1 == 0.0 and span > 0:
            x1 = float(self.width)  # a box ending exactly at 180°E
        if x1 > x0:
            return np.array([[x0, y0, x1, y1]])
        return np.array([[x0, y0, float(self.width), y1], [0.0, y0, x1, y1]])

    def pixel_box_to_lonlat_box(self, x0, y0, x1, y1):
        """Lon/lat bounds ``(lon_min, lon_max, lat_min, lat_max)`` of a pixel box.

        ``x`` may run past the map edges (boxes found on a wrap-padded map); longitudes are
        wrapped, so a box across 180° comes back with ``lon_max < lon_min``.
        """
        lon_min, lat_max = self.pixel_to_lonlat(x0, y0)
        lon_max, lat_min = self.pixel_to_lonlat(x1, y1)
        if x1 - x0 >= self.width:
            lon_min, lon_max = -180.0, 180.0
        return float(lon_min), float(lon_max), float(lat_min), float(lat_max)

    # --- cropping --------------------------------------------------------------------------------
    def crop_rows(self, lat_north_deg: float, lat_south_deg: float) -> slice:
        """Row slice of this grid that covers the band ``[lat_south, lat_north]``."""
        if lat_north_deg > self.lat_north_deg + 1e-9 or lat_south_deg < self.lat_south_deg - 1e-9:
            raise ValueError(
                f"band {lat_south_deg}°–{lat_north_deg}° is not inside this grid's "
                f"{self.lat_south_deg}°–{self.lat_north_deg}°"
            )
        start = int(round((self.lat_north_deg - lat_north_deg) / self.res_deg))
        stop = int(round((self.lat_north_deg - lat_south_deg) / self.res_deg))
        return slice(start, stop)

    def crop_to(self, image: np.ndarray, target: "MapGrid") -> np.ndarray:
        """Crop a map on this grid (rows first) to ``target``'s latitude band, same resolution.

        Use it to bring a MARCI global map to the MOC non-polar band:
        ``MapGrid.marci().crop_to(image, MapGrid.moc())``.
        """
        if abs(target.res_deg - self.res_deg) > 1e-9:
            raise ValueError(f"cannot crop a {self.res_deg}° map to a {target.res_deg}° grid; resample first")
        if image.shape[:2] != self.shape:
            raise ValueError(f"image shape {image.shape[:2]} does not match grid shape {self.shape}")
        return image[self.crop_rows(target.lat_north_deg, target.lat_south_deg)]


MOC_GRID = MapGrid.moc()
"""The MGS MOC non-polar MDGM grid at 0.1° (1200 × 3600)."""

MARCI_GRID = MapGrid.marci()
"""The MRO MARCI global MDGM grid at 0.1° (1800 × 3600)."""
