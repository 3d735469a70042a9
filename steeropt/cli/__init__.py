"""The `steeropt` command line: one module per command group, all registered on one typer app."""
from steeropt.cli._app import app, main
from steeropt.cli import analysis, commands  # noqa: F401  (import registers the commands)

__all__ = ["app", "main"]
