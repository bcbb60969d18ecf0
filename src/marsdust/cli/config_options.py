"""Command-line options generated from :class:`marsdust.train.TrainConfig` (``marsdust train``, ``marsdust compare``).

Each TrainConfig field describes its option in its metadata (help text, flags, help group, choices,
bounds: "Command-line options" in :mod:`marsdust.train.config`); a command registered with
``cls=config_command()`` takes one option per such field, and :func:`given_settings` gives the
command the values that were given. An option left out is None there, so a YAML file
(``--config``) or the TrainConfig default decides it.

The options are built when the command first lists its parameters (parsing or ``--help``), not
when the CLI starts: reading TrainConfig imports numpy and pandas, which a command's start does not need.
"""

from __future__ import annotations

import dataclasses
import inspect
import typing
from typing import Any, Optional

import click
import typer
from typer.core import TyperCommand

_GIVEN_SETTINGS = "marsdust.given_settings"
"""Key of ``click.Context.meta`` under which a config command leaves the settings given on its command line."""

_CLI_TYPES = (bool, int, float, str)


def setting_fields(exclude: tuple[str, ...] = ()) -> list[dataclasses.Field]:
    """The TrainConfig fields with a command-line option (not in ``exclude``), in ``--help`` order:
    by help group (:data:`marsdust.train.config.SETTING_GROUPS`), then in field order."""
    from marsdust.train.config import SETTING_GROUPS, TrainConfig

    fields = [f for f in dataclasses.fields(TrainConfig) if f.metadata.get("flags") and f.name not in exclude]
    return sorted(fields, key=lambda f: SETTING_GROUPS.index(f.metadata["group"]))  # stable: field order within


def _cli_type(config_field: dataclasses.Field) -> type:
    """The type the option reads: the field's own (bool, int, float, str), else text (``devices``, ``classes``)."""
    from marsdust.train.config import TrainConfig

    hint = typing.get_type_hints(TrainConfig)[config_field.name]
    candidates = [t for t in (typing.get_args(hint) or (hint,)) if t is not type(None)]
    return candidates[0] if len(candidates) == 1 and candidates[0] in _CLI_TYPES else str


def _default_text(config_field: dataclasses.Field) -> str | None:
    """The field's default as ``--help`` shows it (None: shown nowhere)."""
    if config_field.default_factory is not dataclasses.MISSING:
        default = config_field.default_factory()
    else:
        default = config_field.default
    if default is None or isinstance(default, bool):
        return None
    return ",".join(map(str, default)) if isinstance(default, list) else str(default)


def _parameter(config_field: dataclasses.Field) -> inspect.Parameter:
    """The field's option as a Typer parameter (``name: Optional[type] = typer.Option(None, *flags, ...)``)."""
    meta = config_field.metadata
    common = dict(help=meta["help"], rich_help_panel=meta["group"])
    if "flag_value" in meta:  # a switch: given or not
        if _cli_type(config_field) is not bool:
            raise TypeError(f"TrainConfig.{config_field.name}: flag_value is for bool fields only")
        option, annotation = typer.Option(False, *meta["flags"], **common), bool
    else:
        choices = meta.get("choices")
        metavar = meta.get("metavar") or (f"[{'|'.join(choices)}]" if choices else None)
        option = typer.Option(None, *meta["flags"], metavar=metavar, min=meta.get("min"), max=meta.get("max"),
                              show_default=_default_text(config_field) or False, **common)
        annotation = Optional[_cli_type(config_field)]
    return inspect.Parameter(config_field.name, inspect.Parameter.KEYWORD_ONLY, default=option,
                             annotation=annotation)


def setting_options(exclude: tuple[str, ...] = ()) -> list[click.Parameter]:
    """One click option per TrainConfig field of :func:`setting_fields`, named after the field.

    Typer builds them (as for any command's parameters) from a signature made of :func:`_parameter`\\ s.
    """

    def settings(**values):
        return values

    settings.__signature__ = inspect.Signature([_parameter(f) for f in setting_fields(exclude)])
    scratch = typer.Typer(add_completion=False)
    scratch.command()(settings)
    return list(typer.main.get_command(scratch).params)


def _setting_value(config_field: dataclasses.Field, value: Any) -> Any:
    """What an option's parsed value sets the field to (None: not given)."""
    meta = config_field.metadata
    if "flag_value" in meta:
        return meta["flag_value"] if value else None
    if value is None or "parse" not in meta:
        return value
    return meta["parse"](value)


class ConfigCommand(TyperCommand):
    """A Typer command that also takes the options of :func:`setting_options` (see the module docs)."""

    excluded_settings: tuple[str, ...] = ()
    """TrainConfig fields the command sets itself (``compare``: ``model`` and ``strategy``)."""

    _settings_added = False

    def get_params(self, ctx: click.Context) -> list[click.Parameter]:
        if not self._settings_added:
            self.params = [*self.params, *setting_options(self.excluded_settings)]
            self._settings_added = True
        return super().get_params(ctx)

    def invoke(self, ctx: click.Context) -> Any:
        ctx.meta[_GIVEN_SETTINGS] = {f.name: _setting_value(f, ctx.params.pop(f.name))
                                     for f in setting_fields(self.excluded_settings)}
        return super().invoke(ctx)


def config_command(exclude: tuple[str, ...] = ()) -> type[ConfigCommand]:
    """The command class (``app.command(cls=...)``) of a command taking every TrainConfig option but ``exclude``."""
    return type("ConfigCommand", (ConfigCommand,), {"excluded_settings": tuple(exclude)})


def given_settings(ctx: click.Context) -> dict[str, Any]:
    """The TrainConfig settings on the command line of a :class:`ConfigCommand`: field name -> value, None where
    the option was not given."""
    return dict(ctx.meta[_GIVEN_SETTINGS])
