"""The Typer application every command module registers on, and the command line's conventions.

Conventions (docs/cli.md lists them for users)
-----------------------------------------------
* ``-h`` / ``--help`` on every command; ``marsdust --version`` / ``-V``.
* Exit status: 0 success; :data:`EXIT_DATA_ERROR` (1) when the command was well formed but its
  input cannot be used (a missing or malformed file, a catalog that does not read, an unreadable
  checkpoint): :func:`fail`; :data:`EXIT_USAGE` (2) when the command line itself is wrong (an
  unknown option or value, a missing argument; Click's own usage errors exit 2 too):
  :func:`usage_error`. Both print one ``error: ...`` line to stderr, no traceback; an error raised in
  a torch data-loader worker is printed as its own message (:func:`original_message`), not the
  worker's traceback torch wraps it in.
* ``-o`` is always ``--output`` (a file or folder the command writes); every command that
  writes prints where it wrote.
"""

import contextlib
import re
from typing import Iterator, NoReturn

import typer

app = typer.Typer(
    name="marsdust",
    help="Find, outline, measure and track Martian dust storms in Mars Daily Global Maps.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)

EXIT_DATA_ERROR = 1
"""Exit status of a well-formed command whose input cannot be used (:func:`fail`)."""
EXIT_USAGE = 2
"""Exit status of a wrong command line (:func:`usage_error`; Click's usage errors use it too)."""


def _print_version(value: bool) -> None:
    if value:
        from importlib.metadata import version

        typer.echo(f"marsdust {version('marsdust')}")
        raise typer.Exit()


@app.callback()
def main_options(
    version: bool = typer.Option(False, "--version", "-V", callback=_print_version, is_eager=True,
                                 help="Print the version and exit."),
) -> None:
    """Find, outline, measure and track Martian dust storms in Mars Daily Global Maps."""

LOG_FORMAT = "%(levelname)s %(name)s: %(message)s"


def fail(message: object) -> NoReturn:
    """A data error: print ``error: MESSAGE`` on one line to stderr and exit with :data:`EXIT_DATA_ERROR` (1).

    Parameters
    ----------
    message : object
        The error (an exception or text); its whitespace, newlines included, is collapsed.
    """
    _exit_with(message, EXIT_DATA_ERROR)


def usage_error(message: object) -> NoReturn:
    """A wrong command line (an option value the command does not take): ``error: MESSAGE``, exit
    :data:`EXIT_USAGE` (2)."""
    _exit_with(message, EXIT_USAGE)


_WORKER_TRACEBACK = "\nOriginal Traceback (most recent call last):\n"
"""What torch puts between ``Caught X in DataLoader worker process N.`` and a worker's whole traceback
when it re-raises the worker's exception in the main process."""


def original_message(text: str) -> str:
    """The message of an exception re-raised from a torch DataLoader worker, without the worker's traceback
    (the lines after its last ``File`` line, less the ``module.ExceptionType:`` prefix); other text as it is."""
    head, found, traceback_text = text.partition(_WORKER_TRACEBACK)
    if not found or not head.startswith("Caught "):
        return text
    lines = traceback_text.rstrip().splitlines()
    last_frame = max((i for i, line in enumerate(lines) if line.startswith("  File ")), default=-1)
    message = [line for line in lines[last_frame + 1:] if line and not line[0].isspace()]
    return re.sub(r"^[A-Za-z_][\w.]*: ", "", "\n".join(message)) if message else text


def _exit_with(message: object, code: int) -> NoReturn:
    text = " ".join(original_message(str(message)).split())
    typer.echo(f"error: {text}", err=True)
    raise typer.Exit(code=code)


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
