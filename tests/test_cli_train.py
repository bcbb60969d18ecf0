"""The options of ``marsdust train`` and ``marsdust compare``: one per TrainConfig setting, generated from the
field's metadata (:mod:`marsdust.cli.config_options`), each parsing to the TrainConfig the hand-written options
they replaced gave.

The commands' work (``marsdust.train.train``, ``marsdust.evaluate.compare.compare``) is replaced by a stand-in that
stops the command with the configuration it was given, so nothing is trained here.
"""

from __future__ import annotations

import dataclasses

import pytest
import yaml
from typer.testing import CliRunner

from marsdust.cli import app
from marsdust.train import TrainConfig


class Captured(Exception):
    """Raised by the stand-ins with what the command passed on."""

    def __init__(self, config: TrainConfig, **passed):
        super().__init__("captured")
        self.config = config
        self.passed = passed


@pytest.fixture
def captured(monkeypatch):
    """Both commands stop with their TrainConfig instead of training."""
    import marsdust.evaluate.compare
    import marsdust.train

    def fake_train(config, run_dir, *, resume=False):
        raise Captured(config, run_dir=run_dir, resume=resume)

    def fake_compare(out_dir, base, models, strategies, *, our_label, progress):
        raise Captured(base, models=models, strategies=strategies, our_label=our_label, progress=progress)

    monkeypatch.setattr(marsdust.train, "train", fake_train, raising=False)  # the command imports it from here
    monkeypatch.setattr(marsdust.evaluate.compare, "compare", fake_compare)


def parsed(command: str, argv: list[str]) -> Captured:
    result = CliRunner().invoke(app, [command, "-o", "out", *argv])
    assert isinstance(result.exception, Captured), result.output
    return result.exception


# Every flag of the hand-written options, each away from its default; the expected configurations are what
# those options produced (the code before the options were generated, commit 492d9c3).
ALL_TRAIN_FLAGS = [
    "--data", "d", "--archive", "a", "--catalog", "c", "--master", "m.csv", "--strict", "--model", "maskrcnn",
    "--strategy", "random", "--max-steps", "7", "--label-mode", "fixed", "--classes", "dust,cloud",
    "--cloud-masks", "cm", "--cloud-max-width-deg", "120", "--schedule", "paper", "--lr", "0.003",
    "--weight-decay", "0.01", "--warmup-steps", "5", "--batch-size", "2", "--map-res-deg", "0.4",
    "--model-preset", "stock_like", "--backbone", "resnet34", "--seed", "3", "--train-period", "MY25 0 - MY26 0",
    "--test-period", "MY26 0 - MY27 0]", "--random-period", "MY25 0 - MY27 0", "--val-fraction", "0.3",
    "--split-file", "s.csv", "--val-every", "9", "--num-workers", "0", "--threads", "2", "--accelerator", "cpu",
    "--devices", "2", "--num-nodes", "3", "--trainer-strategy", "ddp_spawn", "--precision", "bf16-mixed",
    "--no-augment", "--augment", "basic", "--reference", "none", "--reference-sols", "30",
    "--reference-dropout", "0.5", "--quiet",
]
ALL_TRAIN_VALUES = dict(
    data="d", archive="a", catalog="c", master="m.csv", strict=True, model="maskrcnn", strategy="random",
    max_steps=7, label_mode="fixed", classes=["dust", "cloud"], cloud_masks="cm", cloud_max_width_deg=120.0,
    schedule="paper", lr=0.003, weight_decay=0.01, warmup_steps=5, batch_size=2, map_res_deg=0.4,
    model_preset="stock_like", backbone="resnet34", seed=3, train_period="MY25 0 - MY26 0",
    test_period="MY26 0 - MY27 0]", random_period="MY25 0 - MY27 0", val_fraction=0.3, split_file="s.csv",
    val_every_n_steps=9, num_workers=0, threads=2, accelerator="cpu", devices=2, num_nodes=3,
    trainer_strategy="ddp_spawn", precision="bf16-mixed", augment=False, augment_preset="basic", reference="none",
    reference_sols=30, reference_dropout=0.5, progress=False,
)
RUN_YAML = {"max_steps": 50, "lr": 0.01, "devices": 2, "augment": False, "model_preset": "stock_like",
            "classes": "dust,cloud", "seed": 5}

TRAIN_CASES = [
    ([], {}),
    (["--data", "d"], {"data": "d"}),
    (ALL_TRAIN_FLAGS, ALL_TRAIN_VALUES),
    (["--devices", "-1", "--ddp-strategy", "ddp", "--strict"], {"devices": -1, "trainer_strategy": "ddp",
                                                                 "strict": True}),
    (["--devices", " 0,1 ", "--model-preset", "compact"], {"devices": "0,1", "model_preset": "compact"}),
    (["--devices", "auto", "--classes", "dust"], {"devices": "auto", "classes": ["dust"]}),
    # a YAML file under the options: the options given win, the others keep the file's values
    (["--config", "RUN_YAML", "--max-steps", "9", "--devices", "0,1", "--trainer-strategy", "ddp"],
     {**RUN_YAML, "classes": ["dust", "cloud"], "max_steps": 9, "devices": "0,1", "trainer_strategy": "ddp"}),
]


def with_yaml(argv: list[str], tmp_path) -> list[str]:
    run_yaml = tmp_path / "run.yaml"
    run_yaml.write_text(yaml.safe_dump(RUN_YAML))
    return [str(run_yaml) if arg == "RUN_YAML" else arg for arg in argv]


@pytest.mark.parametrize(("argv", "values"), TRAIN_CASES, ids=range(len(TRAIN_CASES)))
def test_train_options_parse_as_the_hand_written_ones_did(captured, tmp_path, argv, values):
    done = parsed("train", with_yaml(argv, tmp_path))
    assert done.config == TrainConfig(**values)
    assert done.passed["resume"] is False


def test_train_resume_and_output_stay_the_command_s_own(captured):
    done = parsed("train", ["--resume"])
    assert done.config == TrainConfig() and done.passed["resume"] is True and str(done.passed["run_dir"]) == "out"


COMPARE_FLAGS = [  # every TrainConfig flag compare had before its options were generated
    "--data", "d", "--archive", "a", "--catalog", "c", "--master", "m.csv", "--strict", "--max-steps", "7",
    "--model-preset", "stock_like", "--schedule", "paper", "--batch-size", "2", "--val-every", "9", "--seed", "3",
    "--reference", "none", "--reference-sols", "30", "--reference-dropout", "0.5", "--classes", "dust,cloud",
    "--quiet",
]
COMPARE_VALUES = dict(data="d", archive="a", catalog="c", master="m.csv", strict=True, max_steps=7,
                      model_preset="stock_like", schedule="paper", batch_size=2, val_every_n_steps=9, seed=3,
                      reference="none", reference_sols=30, reference_dropout=0.5, classes=["dust", "cloud"],
                      progress=False)


@pytest.mark.parametrize(("argv", "values"), [
    ([], {}),
    (COMPARE_FLAGS, COMPARE_VALUES),
    (["--config", "RUN_YAML", "--seed", "1"], {**RUN_YAML, "classes": ["dust", "cloud"], "seed": 1}),
], ids=["none", "all", "yaml"])
def test_compare_options_parse_as_the_hand_written_ones_did(captured, tmp_path, argv, values):
    done = parsed("compare", with_yaml(argv, tmp_path) + ["--models", "maskrcnn,sppnet", "--strategies", "random",
                                                          "--label", "ours"])
    assert done.config == TrainConfig(**values)
    assert done.passed == {"models": ["maskrcnn", "sppnet"], "strategies": ["random"], "our_label": "ours",
                           "progress": TrainConfig(**values).progress}


@pytest.mark.parametrize("command", ["train", "compare"])
@pytest.mark.parametrize(("argv", "option"), [
    (["--max-steps", "0"], "--max-steps"), (["--batch-size", "0"], "--batch-size"),
    (["--reference-dropout", "1.5"], "--reference-dropout"), (["--reference-sols", "0"], "--reference-sols"),
    (["--val-every", "0"], "--val-every"), (["--seed", "x"], "--seed"),
])
def test_out_of_range_values_are_refused_naming_the_option(captured, command, argv, option):
    result = CliRunner().invoke(app, [command, "-o", "out", *argv])
    assert result.exit_code == 2 and f"Invalid value for '{option}'" in result.output, result.output


# ------------------------------------------------------------------------- the options generated from TrainConfig
def command_options(command: str) -> dict[str, tuple[str, ...]]:
    """Parameter name -> option names of a command, as its --help and parser see them."""
    import click
    import typer

    click_command = typer.main.get_command(app).commands[command]
    params = click_command.get_params(click.Context(click_command))
    return {param.name: tuple(param.opts) for param in params}


def test_every_train_config_field_is_an_option_of_train_and_compare_described_once():
    from marsdust.train.config import SETTING_GROUPS

    fields = dataclasses.fields(TrainConfig)
    assert all(f.metadata["help"] and f.metadata["group"] in SETTING_GROUPS for f in fields)
    assert [f.name for f in fields if not f.metadata["flags"]] == ["model_config"]  # a mapping: YAML only
    train, compare = command_options("train"), command_options("compare")
    for f in fields:
        if f.metadata["flags"]:
            assert train[f.name] == f.metadata["flags"]
            assert f.name in ("model", "strategy") or compare[f.name] == f.metadata["flags"]
    assert "model" not in compare and "strategy" not in compare  # --models and --strategies set them per run
    assert {"output", "config_file", "resume", "help"} | {f.name for f in fields if f.metadata["flags"]} == set(train)
    assert {"output", "config_file", "models", "strategies", "label", "help"} | (
        {f.name for f in fields if f.metadata["flags"]} - {"model", "strategy"}) == set(compare)


def test_settings_only_yaml_could_set_before_are_options_too(captured):
    done = parsed("train", ["--optimizer", "sgd", "--decay", "step", "--decay-every-steps", "100",
                            "--decay-factor", "0.5", "--min-lr-ratio", "0.1", "--clip-grad-norm", "5",
                            "--ckpt-every", "10"])
    assert done.config == TrainConfig(optimizer="sgd", decay="step", decay_every_steps=100, decay_factor=0.5,
                                      min_lr_ratio=0.1, clip_grad_norm=5.0, ckpt_every_n_steps=10)
    optim = done.config.optim()
    assert (optim["optimizer"], optim["decay"], optim["decay_every_steps"]) == ("sgd", "step", 100)


def test_help_lists_the_command_s_own_options_first_then_the_settings_by_group():
    from marsdust.train.config import SETTING_GROUPS

    for command, own in (("train", "--resume"), ("compare", "--strategies")):
        shown = CliRunner().invoke(app, [command, "--help"], terminal_width=160).output
        panels = [shown.index(f"─ {title} ─") for title in ("Options", *SETTING_GROUPS)]
        assert panels == sorted(panels), shown
        assert shown.index(own, panels[0]) < panels[1]
        assert shown.index("--reference-dropout") > shown.index("─ Reference ─")
        assert "[default: (300)]" in shown  # the field's default, where the option reads None when not given
        assert "[none|prior-median]" in shown  # the field's choices


def test_the_options_are_built_when_their_command_needs_them_without_torch():
    """The CLI starts without reading TrainConfig, and reading it for ``train --help`` leaves torch unimported."""
    import subprocess
    import sys

    code = ("import sys, click, typer; from marsdust.cli import app; "
            "command = typer.main.get_command(app).commands['train']; "
            "print('marsdust.train.config' in sys.modules); command.get_params(click.Context(command)); "
            "print('marsdust.train.config' in sys.modules, 'torch' in sys.modules)")
    shown = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert shown.split() == ["False", "True", "False"]
