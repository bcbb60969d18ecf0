"""Commands of the train stage."""

from marsdust.cli._app import app  # noqa: F401
