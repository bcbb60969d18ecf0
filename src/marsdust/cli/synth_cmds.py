"""Commands of the synth stage."""

from marsdust.cli._app import app  # noqa: F401
