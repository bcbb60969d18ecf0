"""`marsdust synth` through Typer's CliRunner: an earlier synthesis in OUT is refused unless --overwrite."""

from pathlib import Path

import pandas as pd
from typer.testing import CliRunner

from marsdust.cli import app

runner = CliRunner()


def test_synth_refuses_a_folder_with_an_earlier_synthesis(tmp_path):
    out = tmp_path / "data"
    (out / "archive" / "M01").mkdir(parents=True)
    stale = out / "archive" / "M01" / "m01_001.png"
    stale.write_bytes(b"old map")
    result = runner.invoke(app, ["synth", str(out), "--preset", "ci", "--quiet"])
    assert result.exit_code == 1, result.output  # a data error (docs/cli.md)
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.output
    assert lines[0].startswith("error:") and str(out) in lines[0] and "--overwrite" in lines[0]
    assert stale.read_bytes() == b"old map"  # nothing removed, nothing written
    assert not (out / "mdad").exists() and not (out / "truth").exists()


def test_synth_overwrite_replaces_only_the_synth_folders(tmp_path):
    out = tmp_path / "data"
    (out / "archive" / "Z99").mkdir(parents=True)
    stale = out / "archive" / "Z99" / "z99_001.png"
    stale.write_bytes(b"old map")
    (out / "mdad").mkdir()
    (out / "mdad" / "MDADMY30.nc").write_bytes(b"old cube")
    keep = out / "README.txt"
    keep.write_text("not synth's\n")
    result = runner.invoke(app, ["synth", str(out), "--preset", "ci", "--seed", "1", "--overwrite", "--quiet"])
    assert result.exit_code == 0, result.output
    assert not stale.exists() and not (out / "archive" / "Z99").exists()
    assert not (out / "mdad" / "MDADMY30.nc").exists()
    assert keep.read_text() == "not synth's\n"
    assert (out / "truth" / "maps.csv").is_file() and (out / "mdad" / "MDAD.csv").is_file()
    truth_paths = pd.read_csv(out / "truth" / "maps.csv")["path"]
    assert not any(Path(p).is_absolute() for p in truth_paths)  # the dataset can be moved or copied
    assert all((out / p).is_file() for p in truth_paths)
    assert "wrote" in result.output


def test_synth_writes_a_two_camera_archive_and_show_draws_its_marci_maps(tmp_path):
    from PIL import Image

    out = tmp_path / "twocam"
    result = runner.invoke(app, ["synth", str(out), "--preset", "twocam_ci", "--quiet"])
    assert result.exit_code == 0, result.output
    maps = pd.read_csv(out / "truth" / "maps.csv")
    marci = maps[maps["camera"] == "marci"]["map_id"].head(2).tolist()
    assert len(marci) == 2 and all(p.endswith(".jpg") for p in maps[maps["camera"] == "marci"]["path"])
    figure = tmp_path / "marci.png"
    result = runner.invoke(app, ["show", str(out), "--map-ids", ",".join(marci), "-o", str(figure)])
    assert result.exit_code == 0, result.output
    with Image.open(figure) as image:
        width, height = image.size
    assert width > 600 and height > 0.8 * width  # two global maps (2:1) stacked


def test_synth_look2_preset_writes_the_second_looks_test_archive(tmp_path):
    from marsdust.mdgm import index_archive

    out = tmp_path / "look2"
    result = runner.invoke(app, ["synth", str(out), "--preset", "look2_marci", "--quiet"])
    assert result.exit_code == 0, result.output
    index = index_archive(out / "archive")
    assert len(index) == 60 and index["subphase"].str.startswith("L").all()
    assert (out / "truth" / "split.csv").is_file()  # every map a test map: never trained on
    from PIL import Image

    with Image.open(out / index["path"].iloc[0] if not Path(index["path"].iloc[0]).is_absolute()
                    else index["path"].iloc[0]) as image:
        assert image.size[0] == 2 * image.size[1]  # the global MARCI layout
