"""CLI commands for studies: `sweep`, `run`, `worker`, `status`, `validate`, `list`."""
from __future__ import annotations

from typing import Optional

import typer

from steeropt.cli._app import app, console, out
from steeropt.errors import SteeroptError

@app.command()
def sweep(
    concept: str = typer.Option("wedding", help="built-in concept name or a concept YAML file"),
    alphas: str = typer.Option("0,0.1,0.2,0.3,0.4,0.6,0.8", help="comma-separated strengths (normalised units)"),
    layer: Optional[int] = typer.Option(None, help="layer (default: the concept's)"),
    controller: str = typer.Option("add", help="add | clamp | affine | ablate"),
    model: str = typer.Option("smollm2-135m-instruct", help="embedded name, .gguf file or HF model directory"),
    prompts: int = typer.Option(8, min=1, help="prompts per strength"),
    max_new_tokens: int = typer.Option(40, min=1),
    seed: int = 0,
):
    """A 1-D strength sweep: per α a sample text, the keyword hit rate and token 3-gram repetition."""
    from rich.progress import Progress
    from rich.table import Table

    from steeropt.specs.concepts import load_concept
    from steeropt.engine.generation import Decoding
    from steeropt.engine.models import load_model
    from steeropt.runner.sweep import sweep as run_sweep

    try:
        values = [float(a) for a in alphas.split(",") if a.strip()]
    except ValueError:
        raise SteeroptError(f"--alphas must be comma-separated numbers, got '{alphas}'")
    c = load_concept(concept)
    with console.status(f"loading {model}"):
        lm = load_model(model)
    n = min(prompts, len(c.prompts))
    with Progress(console=console, transient=True) as bar:
        task = bar.add_task("generating", total=n * len(values))
        rows = run_sweep(lm, c, values, layer=layer, controller=controller, n_prompts=n,
                         decoding=Decoding(max_new_tokens=max_new_tokens), seed=seed,
                         progress=lambda k: bar.advance(task, k))
    table = Table(title=f"{c.name}: {controller} at layer {layer if layer is not None else c.layer} on {lm.name}")
    for col in ("α", "raw α", "keyword rate", "rep-3", f"sample: {c.prompts[0]!r}"):
        table.add_column(col, overflow="fold")
    for r in rows:
        table.add_row(f"{r.alpha:g}", f"{r.raw_alpha:.3g}", f"{r.keyword_rate:.2f}", f"{r.rep_3:.2f}",
                      r.sample.strip().replace("\n", " ")[:160])
    out.print(table)


def _progress_columns():
    from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    return (TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[info]}"),
            TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn())


def _run_study(spec: str, trials: Optional[int], worker: bool, track: bool) -> None:
    from rich.progress import Progress

    from steeropt.runner.study import Study

    study = Study.from_spec(spec, track=track)
    with console.status(f"setting up study '{study.spec.name}' (model, vectors, judge, storage)"):
        study.setup()
    target = study.spec.budget.trials
    status = "FAILED"
    try:
        with Progress(*_progress_columns(), console=console) as bar:
            # the budget's count (runner.ledger): a stale trial re-queued as another one is not counted twice
            task = bar.add_task(f"{study.spec.name} trials", total=target, completed=study.progress.done, info="")

            def update(p):
                bar.update(task, completed=min(p.done, target),
                           info=f"judge calls {p.judge_calls} | front {p.front_size} | HV {p.hypervolume:.3f}")

            df = study.run(n_trials=trials, callback=update, worker=worker)
        status = "FINISHED"
    finally:
        study.close(status)
    _print_front(study, df)


def _print_front(study, df) -> None:
    from rich.table import Table

    from steeropt.report.analysis import pareto_front

    objectives = study.stack.objectives
    front = pareto_front(df, objectives)
    table = Table(title=f"Pareto front of '{study.spec.name}' ({len(df)} trials, {len(front)} on the front)")
    pcols = [c for c in df.columns if c.startswith("params.")]
    for col in ["trial", *[c[7:] for c in pcols], *[n for n, _ in objectives]]:
        table.add_column(col)
    for _, r in front.iterrows():
        cells = [str(r["number"]), *[f"{r[c]:.3g}" if isinstance(r[c], float) else str(r[c]) for c in pcols]]
        for n, _ in objectives:
            lo, hi = r.get(f"{n}.ci_low"), r.get(f"{n}.ci_high")
            cells.append(f"{r[n]:.3f}" + (f" [{lo:.2f}, {hi:.2f}]" if lo == lo and lo is not None else ""))
        table.add_row(*cells)
    out.print(table)
    out.print(f"artifacts: {study.runs_dir}/ (trials.csv, front.csv/png/html); "
              f"MLflow: mlflow ui --backend-store-uri {study.spec.tracking_uri or 'sqlite:///mlflow.db'}")


@app.command()
def run(spec: str = typer.Argument(..., help="study name or studies/<name>.yaml"),
        trials: Optional[int] = typer.Option(None, help="at most this many new trials from this process"),
        track: bool = typer.Option(True, help="log to MLflow")):
    """Run (or resume) a tuning study until its trial budget is spent."""
    _run_study(spec, trials, worker=False, track=track)


@app.command()
def worker(spec: str = typer.Argument(..., help="the same study spec the other workers use"),
           trials: Optional[int] = typer.Option(None, help="at most this many trials from this worker"),
           track: bool = typer.Option(True, help="log to MLflow")):
    """Join a study on shared storage (e.g. PostgreSQL); several workers may run at once."""
    _run_study(spec, trials, worker=True, track=track)


@app.command()
def status(spec: str = typer.Argument(..., help="study name or file")):
    """Trials by state and the current front, read from the study storage (no model is loaded)."""
    import optuna
    from rich.table import Table

    from steeropt.runner.ledger import count
    from steeropt.specs import build

    st = build("study", spec)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        study = optuna.load_study(study_name=st.name, storage=st.storage)
    except KeyError:
        raise SteeroptError(f"no study '{st.name}' in {st.storage} yet: start it with 'steeropt run {spec}'")
    trials = study.get_trials(deepcopy=False)
    counts: dict = {}
    for t in trials:
        counts[t.state.name] = counts.get(t.state.name, 0) + 1
    table = Table(title=f"study '{st.name}' in {st.storage}")
    table.add_column("state")
    table.add_column("trials")
    for k, v in sorted(counts.items()):
        table.add_row(k, str(v))
    out.print(table)
    c = count(trials)  # the budget's count: a stale trial re-queued as another one is not counted
    out.print(f"budget: {st.budget.trials} trials; finished {c.done}, running {c.running}"
              + (f"; {c.requeued} stale trial(s) re-queued, not counted" if c.requeued else ""))


@app.command()
def validate(spec: str = typer.Argument(..., help="study name or file")):
    """Check a study spec and everything it refers to, without loading model weights."""
    from steeropt.specs import validate_study

    parts = validate_study(spec)
    for p in parts:
        out.print(f"[green]ok[/] {p.kind:<14} {p.name:<24} {p.source}" + (f"  ({p.note})" if p.note else ""))


@app.command("list")
def list_(kind: str = typer.Argument("study", help="study | search_space | objective | judge")):
    """Specs found in the search paths (./<folder> first, then built-in presets)."""
    from steeropt.specs import list_specs

    for e in list_specs(kind):
        out.print(f"{e.name:<28} {e.path}  {e.description or ''}")
