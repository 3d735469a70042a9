"""The typer app every command module registers on, and the entry point. Bad input: one message, exit 2."""
from __future__ import annotations

import logging
import os
import sys

import typer
from rich.console import Console
from rich.markup import escape
from typer.core import TyperGroup

from steeropt import redact
from steeropt.errors import SteeroptError

# The order `steeropt --help` lists the commands in: the order a user runs them.
WORKFLOW = ("sweep", "new", "validate", "run", "worker", "status", "pick", "generate", "compare", "plan",
            "parity", "serve", "review", "judge", "list")
# Help is click's plain formatter (typer's Rich panels cut option names and defaults at 80 columns); it
# wraps paragraphs at the terminal width, up to this many columns.
HELP = {"help_option_names": ["-h", "--help"], "max_content_width": 120}
QUIET = "STEEROPT_QUIET_LIBRARIES"  # set by the root command unless --verbose; read by quiet_optuna


# One line per command in `steeropt --help` (click would cut the docstring's first sentence mid-phrase).
SHORT = {"sweep": "a quick strength sweep: where a concept shows, where text breaks",
         "new": "write a concept file, or a study of a concept that runs as is",
         "validate": "check a study and what it refers to; list the held-out prompts",
         "run": "run or resume a study until its budget is spent",
         "worker": "join a study on shared storage (several at once)",
         "status": "what a study has done and what to run next (no model load)",
         "pick": "an α per prompt family, checked on held-out prompts; a profile",
         "generate": "answer prompts with a profile applied",
         "compare": "several studies' fronts, with paired differences",
         "plan": "before running: what the budget can tell apart",
         "parity": "check an exported profile on llama.cpp",
         "serve": "an OpenAI-compatible endpoint that steers per request",
         "review": "choose samples to label in MLflow",
         "judge": "check or calibrate scores against labels",
         "list": "the specs found (./<folder> first, then built-in)",
         # subcommands of `new` and `judge`
         "concept": "write concepts/NAME.yaml to fill in",
         "study": "write a study of a concept that runs as is",
         "check": "agreement of a scorer with labels (Spearman per axis, gates)",
         "calibrate": "fit a monotone map per axis from scores to labels",
         "export": "write the labels people added in MLflow as a JSONL file"}


def metavar(param) -> str | None:
    """A short placeholder for an option's value (N, X, PATH, TEXT) instead of typer's `<int range>`, which
    pushes the help text of a long option onto its own line; an argument shows its name (SPEC)."""
    if param.metavar or getattr(param, "is_flag", False):
        return param.metavar
    if getattr(param, "param_type_name", "") == "argument":
        return param.name.upper()
    shown = param.display_type(None) if hasattr(param, "display_type") else ""
    for kind, short in (("int", "N"), ("float", "X"), ("path", "PATH"), ("str", "TEXT")):
        if shown.strip("<>").split(" ")[0] == kind:
            return short
    return None  # choices and lists: click's own placeholder says more


class WorkflowGroup(TyperGroup):
    """A command group that lists its commands in workflow order (unknown names last, as registered), one
    line each, with short value placeholders in every command's options."""

    def list_commands(self, ctx) -> list[str]:
        names = list(self.commands)
        return sorted(names, key=lambda n: WORKFLOW.index(n) if n in WORKFLOW else len(WORKFLOW) + names.index(n))

    def get_command(self, ctx, name):
        cmd = super().get_command(ctx, name)
        if cmd is not None:
            tidy(cmd, SHORT.get(name))
        return cmd


def tidy(cmd, short: str | None = None) -> None:
    """Short help and value placeholders for a command and, for a group, its subcommands."""
    if short and not cmd.short_help:
        cmd.short_help = short
    for p in cmd.params:
        p.metavar = metavar(p)
    for sub in getattr(cmd, "commands", {}).values():
        tidy(sub)


def sub_app(help: str) -> typer.Typer:
    """A command group (`new`, `judge`) formatted like the main app."""
    return typer.Typer(no_args_is_help=True, help=help, rich_markup_mode=None, cls=WorkflowGroup,
                       context_settings=HELP)


app = typer.Typer(add_completion=False, no_args_is_help=True, rich_markup_mode=None, cls=WorkflowGroup,
                  context_settings=HELP)
console = Console(stderr=True)
out = Console()
for _c in (console, out):  # off a terminal (a log, CI) long lines stay whole instead of wrapping at 80 columns,
    _c.soft_wrap = not _c.is_terminal and "COLUMNS" not in os.environ  # unless a width was asked for


def fits_width() -> bool:
    """Whether output is shaped to a width: on a terminal, or when $COLUMNS asks for one (a log otherwise)."""
    return out.is_terminal or "COLUMNS" in os.environ


def quiet_libraries() -> None:
    """Hide the libraries' own chatter (transformers' "Loading weights" and GGUF conversion bars, MLflow,
    alembic and Optuna INFO lines): steeropt prints its own progress. `steeropt --verbose` keeps it."""
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")  # read by transformers at import
    os.environ.setdefault("TQDM_DISABLE", "1")  # the GGUF conversion's own tqdm bar
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")  # read by mlflow at import
    os.environ[QUIET] = "1"
    for name in ("mlflow", "alembic"):
        logging.getLogger(name).setLevel(logging.WARNING)


def quiet_optuna() -> None:
    """Optuna sets its logger to INFO when it is imported: call this after the import, before a study is
    created or loaded ("A new study created in RDB ..." is not news to a steeropt user)."""
    if os.environ.get(QUIET) == "1":
        import optuna  # already imported by the caller; this only reaches its logging switch

        optuna.logging.set_verbosity(optuna.logging.WARNING)


@app.callback()
def _root(threads: int = typer.Option(None, "--threads", min=1, metavar="N",
                                      help="torch CPU threads for this process (default: $STEEROPT_NUM_THREADS, "
                                           "else min(2, cores))"),
          verbose: bool = typer.Option(False, "--verbose", "-v",
                                       help="also show the libraries' progress bars and INFO logs")):
    """Find how strongly to steer a language model.

    A typical session: sweep, new study, validate, run, status, pick, generate. Every command has an example
    in its --help.
    """
    if not verbose:
        quiet_libraries()
    if threads is not None:
        # handed over through the environment: load_model applies it (configure_threads) before any
        # model, judge or optimizer work, and commands that never load a model stay free of torch
        os.environ["STEEROPT_NUM_THREADS"] = str(threads)


def main(argv: list[str] | None = None) -> None:
    redact.install()  # secrets never reach a log line or a warning
    try:
        app(args=argv, prog_name="steeropt")  # usage errors: click prints them and exits 2
    except SteeroptError as exc:
        console.print(f"[bold red]error:[/] {escape(redact.redact(str(exc)))}", highlight=False)
        sys.exit(exc.exit_code)
