"""Draw docs/img/second_look.png: a main-generator map above a second-look map, each with its catalogue outlines.

    python benchmarks/second_look_figure.py [OUT_PNG] [--work DIR]

Synthesizes the ``ci`` preset and the default second look (seed 0) under DIR (a temporary folder
by default), picks the map with the most storms in each and draws both with
:func:`marsdust.plots.plot_maps_with_outlines`.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import pandas as pd

from marsdust.plots import plot_maps_with_outlines
from marsdust.synth import synthesize
from marsdust.synth.second_look import synthesize_second_look


def busiest_map(result: dict) -> pd.DataFrame:
    """The maps-table row (as a one-row frame) of the map with the most catalogued storms."""
    busiest = result["storms"].groupby("map_id").size().idxmax()
    return result["maps"][result["maps"]["map_id"] == busiest]


def figure_arguments(description: str, default_png: str) -> argparse.Namespace:
    """The command line of a synthesis figure: ``[OUT_PNG] [--work DIR]``."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("out_png", nargs="?", default=default_png)
    parser.add_argument("--work", default=None, help="Folder for the two syntheses (default: a temporary one).")
    return parser.parse_args()


def main() -> None:
    args = figure_arguments(__doc__.splitlines()[0], "docs/img/second_look.png")
    with tempfile.TemporaryDirectory() as scratch:
        work = Path(args.work or scratch)
        main_result = synthesize(work / "main", "ci", seed=0, progress=False, overwrite=True)
        look_result = synthesize_second_look(work / "second_look", seed=0, overwrite=True)
        maps = pd.concat([busiest_map(main_result), busiest_map(look_result)], ignore_index=True)
        storms = pd.concat([main_result["storms"], look_result["storms"]], ignore_index=True)
        path = plot_maps_with_outlines(maps, storms, args.out_png, max_width_px=900, dpi=70)
    print(f"wrote {path} ({path.stat().st_size / 1024:.0f} KB): {', '.join(maps.map_id)}")


if __name__ == "__main__":
    main()
