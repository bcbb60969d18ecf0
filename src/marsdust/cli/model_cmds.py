"""Commands of the model stage: ``marsdust models`` lists the detectors and the model presets."""

from __future__ import annotations

from typing import Optional

import typer

from marsdust.cli._app import app


@app.command("models")
def models_command(
    config: Optional[str] = typer.Option(
        None, "--config", metavar="NAME", help="Print the default configuration of detector NAME as YAML."
    ),
) -> None:
    """List the detectors and the model presets (one line each), or print one detector's default config as YAML."""
    import yaml

    from marsdust.models import MODEL_PRESET_DESCRIPTIONS, available_models, default_config
    from marsdust.train.config import DEFAULT_MAP_RES_DEG, DEFAULT_MODEL_PRESET

    models = available_models()
    if config is None:
        width = max(len(name) for name in models)
        for name, description in models.items():
            typer.echo(f"{name:<{width}}  {description}")
        typer.echo(f"model presets (--model-preset NAME, model_preset: NAME in a run YAML; marsdust train's default is "
                   f"{DEFAULT_MODEL_PRESET} at {DEFAULT_MAP_RES_DEG} degrees, the recipe the README measures):")
        width = max(len(name) for name in MODEL_PRESET_DESCRIPTIONS)
        for name, description in MODEL_PRESET_DESCRIPTIONS.items():
            typer.echo(f"  {name:<{width}}  {description}")
        return
    if config not in models:
        raise typer.BadParameter(f"unknown detector {config!r}; available: {', '.join(models)}", param_hint="--config")
    typer.echo(f"# default configuration of {config} (fields of marsdust.models.DetectorConfig)")
    typer.echo(yaml.safe_dump(default_config(config).to_dict(), sort_keys=False).rstrip())
