"""The `steeropt` command line: one module per command group, all registered on one typer app."""
from steeropt.cli._app import app, main
from steeropt.cli import analysis, commands  # noqa: F401  (import registers the commands)
from steeropt.cli import judge  # noqa: F401  (`steeropt judge check|calibrate|export`)
from steeropt.cli import review  # noqa: F401  (`steeropt review`)
from steeropt.cli import new  # noqa: F401  (`steeropt new concept|study`)
from steeropt.cli import deploy  # noqa: F401  (`steeropt parity`, `steeropt serve`)

__all__ = ["app", "main"]
