"""File formats marsdust reads and writes, one module per format, reader and writer together.

* :mod:`marsdust.formats.mdad_table` — the MDAD v1.0 table (CSV / XLSX): header aliases, row
  validation, reading into the storm table, writing with the real catalogue's headers.
* :mod:`marsdust.formats.mdad_cube` — the MDAD v1.1 netCDF cube and its master CSV: opening and
  reading a cube, one instance's pixels, writing cubes (whole, or per-map chunks and their merge).
* :mod:`marsdust.formats.cloud_mask` — the MARCI water-ice cloud mask netCDF: reading, writing,
  reading onto a map's grid.
* :mod:`marsdust.formats.geojson` — detections as GeoJSON with the Mars CRS.
* :mod:`marsdust.formats.geotiff` — per-map probability / mask rasters and the Mars CRS.
* :mod:`marsdust.formats.quicklook` — quick-look PNGs of a map with its storm outlines.
* :mod:`marsdust.formats.netcdf` — what the netCDF formats share when reading: opening a file
  with clear errors and telling its longitude and latitude axes apart.

The rules of the MDAD encoding (member ids, cube values, layout, names) live in
:mod:`marsdust.mdad_format`; the catalog front door (any MDAD file or folder → the storm table,
with the cube / master consistency checks) is :mod:`marsdust.mdad`. Every writer here is atomic
(:func:`marsdust.fileio.atomic_output`).
"""
