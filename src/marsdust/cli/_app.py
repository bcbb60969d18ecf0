"""The Typer application every command module registers on."""

import contextlib
from typing import Iterator, NoReturn

import typer

app = typer.Typer(
    name="marsdust",
    help="Find, outline, measure and track Martian dust storms in Mars Daily Global Maps.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

LOG_FORMAT = "%(levelname)s %(name)s: %(message)s"


def fail(message: object) -> NoReturn:
    """Print ``error: MESSAGE`` on one line to stderr and exit with code 2 (no traceback).

    Parameters
    ----------
    message : object
        The error (an exception or text); its whitespace, newlines included, is collapsed.
    """
    text = " ".join(str(message).split())
    typer.echo(f"error: {text}", err=True)
    raise typer.Exit(code=2)


def setup_logging(level: int, *, lightning: bool = False) -> None:
    """Send log lines to stderr as ``LEVEL logger: message``, from ``level`` up.

    With ``lightning``, Lightning's lines are printed once, by the console handler Lightning puts on
    its ``lightning`` logger when imported; without this they also reached ours and appeared twice.
    """
    import logging

    logging.basicConfig(level=level, format=LOG_FORMAT)
    if lightning:
        import lightning as _lightning  # noqa: F401  (importing it installs Lightning's handler)

        lightning_log = logging.getLogger("lightning")
        if lightning_log.handlers:
            lightning_log.propagate = False


def quiet_lightning() -> None:
    """Show only Lightning's warnings and errors, not its INFO lines ("GPU available: ...")."""
    import logging

    import lightning  # noqa: F401  (importing sets Lightning's loggers to INFO, so quieten them after)

    for name in ("lightning", "lightning.pytorch", "lightning.fabric"):
        logging.getLogger(name).setLevel(logging.WARNING)


@contextlib.contextmanager
def without_warnings_of(logger_name: str) -> Iterator[None]:
    """Within the block, drop the WARNING (and lower) lines of logger ``logger_name``; errors still pass.

    For a command that prints the same news itself, so that each thing is said once.
    """
    import logging

    logger = logging.getLogger(logger_name)
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)
