"""The Typer application every command module registers on."""

import typer

app = typer.Typer(
    name="marsdust",
    help="Find, outline, measure and track Martian dust storms in Mars Daily Global Maps.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
