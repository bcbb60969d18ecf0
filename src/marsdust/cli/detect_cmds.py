"""Commands of the detect stage."""

from marsdust.cli._app import app  # noqa: F401
