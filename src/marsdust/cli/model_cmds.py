"""Commands of the model stage."""

from marsdust.cli._app import app  # noqa: F401
