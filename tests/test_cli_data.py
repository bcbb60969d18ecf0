"""`marsdust index` and `marsdust catalog` through Typer's CliRunner."""

import subprocess
import sys

import numpy as np
import pandas as pd
from PIL import Image
from typer.testing import CliRunner

from marsdust.cli import app

runner = CliRunner()


def make_archive(root):
    r18 = root / "R18"
    r18.mkdir(parents=True)
    for sol in (40, 41):
        Image.fromarray(np.full((30, 90, 3), 100, np.uint8)).save(r18 / f"r18_{sol:03d}.png")
    (r18 / "list_ls.txt").write_text("r18_040 25 150.5\nr18_041 25 151\nr18_042 25 152\n")
    return root


def test_index_command(tmp_path):
    archive = make_archive(tmp_path / "archive")
    out = tmp_path / "index.csv"
    result = runner.invoke(app, ["index", str(archive), "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert "2 maps, MY25, 1 problem(s)" in result.output and "missing_map" in result.output
    assert list(pd.read_csv(out)["map_id"]) == ["r18_040", "r18_041"]
    out_parquet = tmp_path / "index.parquet"
    assert runner.invoke(app, ["index", str(archive), "-o", str(out_parquet)]).exit_code == 0
    assert len(pd.read_parquet(out_parquet)) == 2


def test_index_command_says_each_problem_and_the_count_once(tmp_path):
    """In a fresh interpreter (pytest's log handlers would hide it): no logger line repeats the command's own."""
    archive = make_archive(tmp_path / "archive")
    (archive / "R18" / "r18_099.png").write_bytes((archive / "R18" / "r18_040.png").read_bytes())  # not listed
    result = subprocess.run([sys.executable, "-m", "marsdust", "index", str(archive), "-o", str(tmp_path / "i.csv")],
                            capture_output=True, text=True, timeout=600)  # a hang guard, not a run-time limit
    assert result.returncode == 0, result.stderr
    warnings = result.stderr.splitlines()
    assert len(warnings) == 2, warnings  # one line per problem, nothing else
    assert sorted(line.split(": ")[2] for line in warnings) == ["missing_map", "unlisted_map"]
    assert result.stdout.startswith("2 maps, MY25, 2 problem(s)") and len(result.stdout.splitlines()) == 1


def test_index_missing_archive_exits_1_without_traceback(tmp_path):
    result = runner.invoke(app, ["index", str(tmp_path / "nope"), "-o", str(tmp_path / "i.csv")])
    assert result.exit_code == 1
    assert "error:" in result.output and "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1


def write_v10(path, lat=10.0):
    pd.DataFrame(
        [[24, "R18", 40, 150.5, 350.0, lat, 120000.0, 100, "R18_031", "S001"],
         [25, "S20", 1, 2.0, 10.0, -5.0, 5000.0, 50, "S20_001b", ""]],
        columns=["Mars Year", "Mission subphase", "Sol", "Ls", "Centroid longitude", "Centroid latitude",
                 "Area (square km)", "Confidence interval", "Member ID", "Sequence ID"],
    ).to_csv(path, index=False)


def test_catalog_command_csv_and_parquet(tmp_path):
    table = tmp_path / "MDAD.csv"
    write_v10(table)
    out = tmp_path / "storms.parquet"
    result = runner.invoke(app, ["catalog", str(table), "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert "2 storms, MY24–MY25" in result.output
    storms = pd.read_parquet(out)
    assert list(storms["lon"]) == [-10.0, 10.0]


def test_catalog_bad_row_exit_1_and_skip_bad(tmp_path):
    table = tmp_path / "MDAD.csv"
    write_v10(table, lat=99.0)
    out = tmp_path / "storms.csv"
    result = runner.invoke(app, ["catalog", str(table), "-o", str(out)])
    assert result.exit_code == 1
    assert "row 2" in result.output and "Centroid latitude" in result.output and "Traceback" not in result.output
    assert not out.exists()
    result = runner.invoke(app, ["catalog", str(table), "-o", str(out), "--skip-bad"])
    assert result.exit_code == 0, result.output
    assert "1 storms" in result.output and result.output.count("dropped 1 bad row") == 1  # printed once
    assert len(pd.read_csv(out)) == 1


def test_help_texts():
    for command in ("index", "catalog"):
        result = runner.invoke(app, [command, "--help"])
        assert result.exit_code == 0
        assert "-o" in result.output


def test_every_help_text_prints_as_written():
    """Typer renders help through rich markup, which silently drops a "[default: 300]" as a tag."""
    import typer
    from rich.text import Text

    root = typer.main.get_command(app)
    for name, command in root.commands.items():
        texts = [command.help or ""] + [getattr(param, "help", None) or "" for param in command.params]
        for text in texts:
            assert Text.from_markup(text).plain == text, f"marsdust {name}: {text!r}"
