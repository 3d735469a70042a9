"""The `steeropt` command line: one module per command group, all registered on one typer app."""
from steeropt.cli._app import app, main
from steeropt.cli import analysis, commands  # noqa: F401  (import registers the commands)
from steeropt.cli import judge  # noqa: F401  (issue 11: `steeropt judge check|calibrate`)

__all__ = ["app", "main"]
