"""Commands of the data stage."""

from marsdust.cli._app import app  # noqa: F401
