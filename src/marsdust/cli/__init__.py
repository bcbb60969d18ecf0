"""The ``marsdust`` command line: thin wrappers over library functions.

Each stage of the pipeline keeps its commands in its own module; importing them here
registers them on :data:`app`. Heavy imports (torch, xarray) happen inside the commands so
that ``marsdust --help`` stays instant.
"""

from marsdust.cli._app import app
from marsdust.cli import data_cmds, synth_cmds, model_cmds, train_cmds, detect_cmds, onnx_cmds, demo_cmds, track_cmds  # noqa: F401,E501  (registers commands)
from marsdust.cli import adapt_cmds  # noqa: F401  (registers commands)


def main() -> None:
    """Console-script entry point."""
    app()
