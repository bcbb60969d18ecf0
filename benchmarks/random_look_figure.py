"""Draw docs/img/random_look.png: the same MOC and MARCI maps in their camera's look and in a drawn look.

    python benchmarks/random_look_figure.py [OUT_PNG] [--work DIR]

Synthesizes the ``twocam_ci`` preset (seed 0) twice under DIR (a temporary folder by default), as its
cameras draw it and with ``random_look`` (``marsdust synth --random-look``, :mod:`marsdust.synth.looks`),
picks the MOC and the MARCI map with the most storms and draws each in both looks, with the catalogue's
outlines (the same in both), with :func:`marsdust.plots.plot_maps_with_outlines`.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from second_look_figure import figure_arguments  # noqa: E402  (the figure scripts' one command line)

from marsdust.plots import plot_maps_with_outlines
from marsdust.synth import synthesize


def busiest_map_ids(result: dict) -> list[str]:
    """The map id with the most catalogued storms, for each camera."""
    counts = result["storms"].groupby("map_id").size()
    maps = result["maps"].assign(n_storms=lambda m: m["map_id"].map(counts).fillna(0))
    return [maps[maps["camera"] == camera].sort_values("n_storms").iloc[-1]["map_id"] for camera in ("moc", "marci")]


def main() -> None:
    args = figure_arguments(__doc__.splitlines()[0], "docs/img/random_look.png")
    with tempfile.TemporaryDirectory() as scratch:
        work = Path(args.work or scratch)
        plain = synthesize(work / "camera_look", "twocam_ci", seed=0, progress=False, overwrite=True)
        drawn = synthesize(work / "random_look", "twocam_ci", seed=0, progress=False, overwrite=True,
                           random_look=True)
        chosen = busiest_map_ids(plain)
        maps = pd.concat([result["maps"].set_index("map_id").loc[[map_id]].reset_index()
                          for map_id in chosen for result in (plain, drawn)], ignore_index=True)
        path = plot_maps_with_outlines(maps, plain["storms"], args.out_png, max_width_px=900, dpi=70)
    print(f"wrote {path} ({path.stat().st_size / 1024:.0f} KB): {', '.join(maps.map_id)}, each in its camera's "
          "look, then in a drawn look")


if __name__ == "__main__":
    main()
