"""The command line's conventions (marsdust.cli._app, docs/cli.md): --version, -h everywhere, exit 2 for a wrong
command line and 1 for unusable input, -o always --output."""

from __future__ import annotations

import pandas as pd
import pytest
from typer.testing import CliRunner

import marsdust
from marsdust.cli import app

runner = CliRunner()


def _command_names():
    import typer.main

    return sorted(typer.main.get_command(app).commands)


@pytest.mark.parametrize("flag", ["--version", "-V"])
def test_version(flag):
    result = runner.invoke(app, [flag])
    assert result.exit_code == 0 and result.output.strip() == f"marsdust {marsdust.__version__}"


def test_every_command_takes_h_for_help():
    names = _command_names()
    assert {"catalog", "detect", "train", "climatology", "demo"} <= set(names)
    for name in names:
        result = runner.invoke(app, [name, "-h"])
        assert result.exit_code == 0 and "Usage" in result.output, (name, result.output)
    assert runner.invoke(app, ["-h"]).exit_code == 0


def test_every_o_is_output():
    import typer.main

    for name, command in typer.main.get_command(app).commands.items():
        for param in command.params:
            if "-o" in getattr(param, "opts", []):
                assert "--output" in param.opts, (name, param.opts)


def test_usage_errors_exit_2_and_data_errors_exit_1(tmp_path):
    assert runner.invoke(app, ["catalog", str(tmp_path), "--no-such-option"]).exit_code == 2
    assert runner.invoke(app, ["catalog"]).exit_code == 2  # missing argument
    result = runner.invoke(app, ["synth", str(tmp_path / "d"), "--preset", "nope", "--quiet"])
    assert result.exit_code == 2 and "unknown synth preset 'nope'" in result.output and "look2_marci" in result.output
    result = runner.invoke(app, ["catalog", str(tmp_path / "missing.csv"), "-o", str(tmp_path / "s.csv")])
    assert result.exit_code == 1 and result.output.startswith("error:")


def test_climatology_takes_output_and_its_former_name_out(tmp_path):
    from marsdust.synth import synthesize

    data = tmp_path / "data"
    synthesize(data, preset="ci", seed=0, progress=False)
    storms = tmp_path / "storms.csv"
    assert runner.invoke(app, ["catalog", str(data / "mdad"), "-o", str(storms)]).exit_code == 0
    for flag, folder in (("--output", "a"), ("--out", "b")):
        result = runner.invoke(app, ["climatology", str(storms), flag, str(tmp_path / folder)])
        assert result.exit_code == 0, result.output
        assert str(tmp_path / folder) in result.output and (tmp_path / folder / "members.csv").is_file()
    assert len(pd.read_csv(tmp_path / "a" / "members.csv")) == len(pd.read_csv(tmp_path / "b" / "members.csv"))


def test_an_error_of_a_loader_worker_is_its_own_message():
    import torch

    from marsdust.cli._app import original_message

    class Failing(torch.utils.data.Dataset):
        def __len__(self):
            return 1

        def __getitem__(self, i):
            raise ValueError("maps/r18_040.png: corrupt\nsecond line")

    with pytest.raises(ValueError) as caught:
        next(iter(torch.utils.data.DataLoader(Failing(), num_workers=1)))
    assert "Original Traceback" in str(caught.value)
    assert original_message(str(caught.value)) == "maps/r18_040.png: corrupt\nsecond line"
    assert original_message("Caught nothing: a message of ours") == "Caught nothing: a message of ours"
