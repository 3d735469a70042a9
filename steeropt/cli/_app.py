"""The typer app every command module registers on, and the entry point. Bad input: one message, exit 2."""
from __future__ import annotations

import sys

import typer
from rich.console import Console

from steeropt.errors import SteeroptError

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Find how strongly to steer a language model.")
console = Console(stderr=True)
out = Console()


@app.callback()
def _root(threads: int = typer.Option(None, "--threads", min=1, help="torch CPU threads for this process "
                                      "(default: $STEEROPT_NUM_THREADS, else min(2, cores))")):
    """steeropt: tuning studies, controller comparisons and deployable steering profiles."""
    if threads is not None:
        import os

        # handed over through the environment: load_model applies it (configure_threads) before any
        # model, judge or optimizer work, and commands that never load a model stay free of torch
        os.environ["STEEROPT_NUM_THREADS"] = str(threads)


def main(argv: list[str] | None = None) -> None:
    try:
        app(args=argv, prog_name="steeropt")  # usage errors: click prints them and exits 2
    except SteeroptError as exc:
        console.print(f"[bold red]error:[/] {exc}", highlight=False)
        sys.exit(exc.exit_code)
