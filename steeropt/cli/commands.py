"""CLI commands for studies: `sweep`, `run`, `worker`, `status`, `validate`, `list`.

Output fits the terminal: cells never wrap mid-word; a value too long for its column (a storage URL, a path)
is elided in the middle. When stderr is not a terminal (CI, nohup, a log file), `run` and `worker` print one
plain log line per finished batch instead of a progress bar.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Optional

import typer

from steeropt.cli._app import app, console, out, quiet_optuna
from steeropt.cli.tables import SEPARATORS, elide, fit_table, print_front, print_status  # noqa: F401
from steeropt.errors import SteeroptError
from steeropt.redact import redact

def _num(x, fmt: str = ".2f") -> str:
    return "—" if x is None or x != x else format(x, fmt)


# ---- sweep ----------------------------------------------------------------------------------------

def _text(t: str) -> str:
    t = " ".join(t.split())
    return t if t else "(empty)"


def write_sweep(path: Path, s, concept: str) -> None:
    """Every text of a sweep: one record per (α, prompt); .jsonl or .csv by the file ending."""
    import csv
    import json

    recs = [{"concept": concept, "layer": s.layer, "controller": s.controller,
             "alpha": None if r is s.baseline else r.alpha, "raw_alpha": r.raw_alpha, "prompt": x.prompt,
             "text": x.text, "empty": x.empty, "keyword_hits": x.keyword_hits, "rep_3": x.rep_3,
             "distinct_1": x.distinct_1, "fluency_proxy": x.fluency_proxy, "broken": x.broken}
            for r in [s.baseline, *s.rows] for x in r.samples]
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".jsonl":
        path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in recs), encoding="utf-8")
    else:
        with path.open("w", newline="", encoding="utf-8") as f:
            w = csv.DictWriter(f, fieldnames=list(recs[0]))
            w.writeheader()
            w.writerows(recs)


def sweep_progress():
    from rich.progress import BarColumn, Progress, SpinnerColumn, TaskProgressColumn, TextColumn, TimeElapsedColumn

    return Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), TaskProgressColumn(),
                    TimeElapsedColumn(), console=console, transient=True)


def run_sweeps(model: str, concept, layers: list[int], alphas: list[float], *, controller: str, n_prompts: int,
               max_new_tokens: int, seed: int = 0):
    """Load the model and sweep each layer under one progress bar that moves from the first second."""
    from steeropt.engine.generation import Decoding
    from steeropt.engine.models import load_model
    from steeropt.runner.sweep import sweep as run_sweep, sweep_units

    units = sweep_units(len(alphas), n_prompts, max_new_tokens)
    with sweep_progress() as bar:
        task = bar.add_task(f"loading {model}", total=1 + units * len(layers))
        lm = load_model(model)
        bar.advance(task, 1)
        out_ = []
        for layer in layers:
            bar.update(task, description=f"layer {layer}: {len(alphas)} α x {n_prompts} prompts + unsteered")
            out_.append(run_sweep(lm, concept, alphas, layer=layer, controller=controller, n_prompts=n_prompts,
                                  decoding=Decoding(max_new_tokens=max_new_tokens), seed=seed,
                                  progress=lambda k: bar.advance(task, k)))
    return lm, out_


def print_sweep(s, concept, lm, show: str) -> None:
    rows = [[("unsteered" if r is s.baseline else f"{r.alpha:g}"), ("—" if r is s.baseline else f"{r.raw_alpha:.3g}"),
             _num(r.keyword_rate), _num(r.rep_3), _num(r.distinct_1), _num(r.fluency_proxy),
             f"{sum(x.broken is not None for x in r.samples)}/{len(r.samples)}"]
            for r in [s.baseline, *s.rows]]
    out.print(fit_table(["α", "raw α", "keyword rate", "rep-3", "distinct-1", "fluency", "broken"], rows,
                        title=f"{concept.name}: {s.controller} at layer {s.layer} on {lm.name}"))
    if show == "none":
        return
    from rich.table import Table
    from rich.text import Text  # model output and prompts are not rich markup

    prompts = s.prompts if show == "all" else s.prompts[:1]
    for j, prompt in enumerate(prompts):
        out.print(Text.assemble((f"prompt {j + 1}: ", "bold"), prompt))
        texts = Table.grid(padding=(0, 1))  # label | text, the text wrapped at spaces with a hanging indent
        texts.add_column(justify="right", style="cyan", no_wrap=True)
        texts.add_column(ratio=1)
        for r in [s.baseline, *s.rows]:
            x = r.samples[j]
            flag = f" ({x.broken})" if x.broken and not x.empty else ""
            texts.add_row("unsteered" if r is s.baseline else f"α={r.alpha:g}",
                          Text.assemble(_text(x.text), (flag, "red")))
        out.print(texts, highlight=False)


def _floats(text: str, option: str) -> list[float]:
    try:
        vals = [float(a) for a in text.split(",") if a.strip()]
    except ValueError:
        raise SteeroptError(f"{option} must be comma-separated numbers, got '{text}'") from None
    if not vals:
        raise SteeroptError(f"{option} is empty")
    return vals


@app.command()
def sweep(
    concept: str = typer.Option("wedding", help="concept name (./concepts, then built-in) or a concept YAML file"),
    alphas: str = typer.Option("0,0.1,0.2,0.3,0.4,0.6,0.8", help="comma-separated strengths (normalised units)"),
    layer: Optional[int] = typer.Option(None, help="layer (default: the concept's)"),
    controller: str = typer.Option("add", help="add | clamp | affine | ablate"),
    model: str = typer.Option("smollm2-135m-instruct", help="embedded name, .gguf file or HF model directory"),
    prompts: int = typer.Option(8, min=1, help="prompts per strength (at most the concept's prompts)"),
    max_new_tokens: int = typer.Option(40, min=1, help="new tokens per answer"),
    show: str = typer.Option("first", help="texts to print: first (the first prompt's) | all | none"),
    out_file: Optional[Path] = typer.Option(None, "--out", help="write every text with its metrics (.jsonl or .csv)"),
    seed: int = typer.Option(0, help="seed for the prompt order and sampling"),
):
    """A quick 1-D strength sweep of a concept: per α the keyword rate, rep-3, distinct-1, fluency, broken
    samples, and the texts. Use it to see where the concept starts and where the text breaks.

    \b
    Example:
      steeropt sweep --concept ocean --layer 10 --alphas 0,0.2,0.4,0.6
    """
    from steeropt.specs.concepts import load_concept

    if show not in ("first", "all", "none"):
        raise SteeroptError(f"--show must be first, all or none, got {show!r}")
    if out_file is not None and out_file.suffix not in (".jsonl", ".csv"):
        raise SteeroptError(f"--out {out_file}: the file must end in .jsonl or .csv")
    values = _floats(alphas, "--alphas")
    c = load_concept(concept)
    n = min(prompts, len(c.prompts))
    at = layer if layer is not None else (c.layer if c.layer is not None else 10)
    lm, (s,) = run_sweeps(model, c, [at], values,
                          controller=controller, n_prompts=n, max_new_tokens=max_new_tokens, seed=seed)
    short = f" (asked for {prompts}; the concept lists {len(c.prompts)})" if n < prompts else ""
    out.print(f"{n} prompts per α{short}, {max_new_tokens} new tokens; broken = empty, distinct-1 < 0.43 or "
              "fluency < 0.29 (the quickstart gates)", highlight=False)
    print_sweep(s, c, lm, show)
    if out_file is not None:
        write_sweep(out_file, s, c.name)
        out.print(f"wrote {len(s.prompts) * (len(s.rows) + 1)} texts to {out_file}", highlight=False)


# ---- run / worker ---------------------------------------------------------------------------------

def _progress_columns():
    from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    return (TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[info]}"),
            TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn())


def _clock(seconds: float) -> str:
    s = int(round(seconds))
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


class LogLines:
    """One plain line per finished batch (for logs): trials done/target, judge calls, front, HV, ETA."""

    def __init__(self, name: str, done: int, target: int):
        self.name, self.start_done, self.target, self.t0 = name, done, target, time.time()

    def line(self, p) -> str:
        elapsed = time.time() - self.t0
        if p.phase == "re-evaluation":  # after the trials: the front and the choices on fresh prompts
            return (f"{time.strftime('%H:%M:%S')} {self.name} re-evaluation {p.reeval_done}/{p.reeval_target} "
                    f"samples on fresh selection prompts | elapsed {_clock(elapsed)}")
        here = p.done - self.start_done  # trials finished by this process's run
        eta = _clock(elapsed / here * max(self.target - p.done, 0)) if here > 0 else "?"
        return (f"{time.strftime('%H:%M:%S')} {self.name} trials {min(p.done, self.target)}/{self.target} | "
                f"judge calls {p.judge_calls} | front {p.front_size} | HV {p.hypervolume:.3f} | "
                f"elapsed {_clock(elapsed)} | ETA {eta}")


def _log(text: str) -> None:
    console.print(text, highlight=False, markup=False, soft_wrap=True)


def _run_study(spec: str, trials: Optional[int], worker: bool, track: bool) -> None:
    from steeropt.runner.study import Study

    study = Study.from_spec(spec, track=track)
    quiet_optuna()
    tty = console.is_terminal
    if tty:
        with console.status(f"setting up study '{study.spec.name}' (model, vectors, judge, storage)"):
            study.setup()
    else:
        _log(f"{time.strftime('%H:%M:%S')} {study.spec.name}: setting up (model, vectors, judge, storage)")
        study.setup()
    target = study.spec.budget.trials
    status = "FAILED"
    try:
        if tty:
            from rich.progress import Progress

            with Progress(*_progress_columns(), console=console) as bar:
                # the budget's count (runner.ledger): a stale trial re-queued as another one is not counted twice
                task = bar.add_task(f"{study.spec.name} trials", total=target, completed=study.progress.done, info="")

                reeval = []

                def update(p):
                    bar.update(task, completed=min(p.done, target),
                               info=f"judge calls {p.judge_calls} | front {p.front_size} | HV {p.hypervolume:.3f}")
                    if p.phase == "re-evaluation":  # budget.reevaluation: a second bar, in samples
                        if not reeval:
                            reeval.append(bar.add_task("re-evaluation (fresh prompts)", total=max(p.reeval_target, 1),
                                                       info="front + each family's choice"))
                        # the target is known once the candidates are planned, after the first update
                        bar.update(reeval[0], total=max(p.reeval_target, 1), completed=min(p.reeval_done, p.reeval_target))

                df = study.run(n_trials=trials, callback=update, worker=worker)
        else:
            log = LogLines(study.spec.name, study.progress.done, target)
            _log(f"{time.strftime('%H:%M:%S')} {study.spec.name} trials {study.progress.done}/{target} done before this "
                 "run; one line per finished batch follows")
            df = study.run(n_trials=trials, callback=lambda p: _log(log.line(p)), worker=worker)
        status = "FINISHED"
    finally:
        study.close(status)
    print_front(study.spec.name, df, study.stack.objectives, study.progress.hypervolume, labels=study.space.labels())
    if study.tracker is not None:  # a link that opens on the runs table (MLflow 3.17 reads ?workflowType=)
        from steeropt.tracking import ui_url

        link, serve = ui_url(redact(study.tracker.tracking_uri or "sqlite:///mlflow.db"), study.tracker.experiment_id)
        out.print(f"MLflow runs: {link}" + (f"  (start the UI with: {serve})" if serve else ""), highlight=False)
    out.print(f"artifacts: {study.runs_dir}/ (trials.csv, front.csv/png/html, dose_fits.png, summary.json"
              + (", reevaluation.csv" if study.spec.budget.reevaluation else "") + ", timing.json); "
              f"MLflow: mlflow ui --backend-store-uri {redact(study.spec.tracking_uri or 'sqlite:///mlflow.db')}",
              highlight=False)


@app.command()
def run(spec: str = typer.Argument(..., help="study name or studies/<name>.yaml"),
        trials: Optional[int] = typer.Option(None, help="at most this many new trials from this process"),
        track: bool = typer.Option(True, help="log to MLflow")):
    """Run (or resume) a tuning study until its trial budget is spent, then re-evaluate the promising
    settings on fresh prompts and write the fits, plots and front to runs/<study>/.

    \b
    Example:
      steeropt run studies/quickstart.yaml
      steeropt run ocean --trials 4      # at most 4 more trials now
    """
    _run_study(spec, trials, worker=False, track=track)


@app.command()
def worker(spec: str = typer.Argument(..., help="the same study spec the other workers use"),
           trials: Optional[int] = typer.Option(None, help="at most this many trials from this worker"),
           track: bool = typer.Option(True, help="log to MLflow")):
    """Join a study on shared storage (e.g. PostgreSQL); several workers may run at once.

    \b
    Example:
      steeropt run studies/big.yaml --trials 0    # create the study once
      steeropt --threads 1 worker studies/big.yaml
    """
    _run_study(spec, trials, worker=True, track=track)


# ---- status / validate / list ---------------------------------------------------------------------

@app.command()
def status(spec: str = typer.Argument(..., help="study name or file")):
    """What a study has done so far, read from its storage (no model is loaded): the constraints, trials by
    state, how many were infeasible and why, whether the re-evaluation ran, the front with its hypervolume,
    and the next command.

    \b
    Example:
      steeropt status studies/quickstart.yaml
    """
    import optuna

    from steeropt.runner.checks import check_storage, register_secrets, sqlite_path
    from steeropt.runner.ledger import count
    from steeropt.specs import build

    st = build("study", spec)
    register_secrets(st)
    check_storage(st.storage, write=False)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    missing = SteeroptError(f"no study '{st.name}' in {redact(st.storage)} yet: start it with 'steeropt run {spec}'")
    if st.storage.startswith("sqlite:") and not (sqlite_path(st.storage) or Path("-")).exists():
        raise missing  # nothing to read, and nothing to create
    try:
        study = optuna.load_study(study_name=st.name, storage=st.storage)
    except KeyError:
        raise missing from None
    except Exception as exc:  # noqa: BLE001  (a database that is not a study storage, a broken schema)
        raise SteeroptError(f"storage {redact(st.storage)} cannot be read as an Optuna study storage: "
                            f"{type(exc).__name__}: {redact(str(exc).splitlines()[0] if str(exc) else '')[:200]}") from None
    trials = study.get_trials(deepcopy=False)
    counts: dict = {}
    for t in trials:
        counts[t.state.name] = counts.get(t.state.name, 0) + 1
    w = out.width
    out.print(elide(f"study '{st.name}'", w), highlight=False)
    out.print("  storage  " + elide(redact(st.storage), w - 11), highlight=False)
    out.print("  spec     " + elide(st.source, w - 11), highlight=False)
    c = count(trials)  # the budget's count: a stale trial re-queued as another one is not counted
    states = ", ".join(f"{k.lower()} {v}" for k, v in sorted(counts.items())) or "none yet"
    out.print(f"  budget   {st.budget.trials} trials: finished {c.done}, running {c.running}"
              + (f"; {c.requeued} stale trial(s) re-queued, not counted" if c.requeued else ""), highlight=False)
    out.print(f"  trials   {states}", highlight=False)
    print_status(st, study, spec, c.done)


@app.command()
def validate(spec: str = typer.Argument(..., help="study name or file")):
    """Check a study spec and everything it refers to (files, layers, heads, bounds, rubrics) without loading
    model weights; lists the held-out prompts.

    \b
    Example:
      steeropt validate ocean
    """
    from steeropt.specs import validate_study

    from rich.table import Table
    from rich.text import Text

    parts = validate_study(spec)
    from steeropt.runner.checks import check_storage, register_secrets

    register_secrets(parts[0].value)
    check_storage(parts[0].value.storage, write=False)  # the storage opens (nothing is created)
    study_file = parts[0].source
    w = out.width
    kw, nw = 14, min(24, max(len(p.name) for p in parts))
    for p in parts:
        # a part written inside the study file says what it is; one from another file says where
        where = p.note if p.source in (study_file, p.name) and p is not parts[0] else p.source
        if where is p.source and p.note:
            where += f"  ({p.note})"
        out.print(f"[green]ok[/] {p.kind:<{kw}} {elide(p.name, nw):<{nw}} {elide(where, max(12, w - 5 - kw - nw))}",
                  highlight=False)
    held = [p for p in parts if p.kind == "prompt_family"]
    if held:
        out.print("held-out prompts (no trial sees them; `steeropt pick` reports on them):", highlight=False)
        grid = Table.grid(padding=(0, 1))  # family | its prompts, wrapped at spaces
        grid.add_column(style="cyan", no_wrap=True)
        grid.add_column(ratio=1)
        for p in held:
            grid.add_row(p.name, Text(" · ".join(p.value.held_out)))
        out.print(grid)


@app.command("list")
def list_(kind: str = typer.Argument("study", help="study | search_space | objective | judge | concept")):
    """Specs found in the search paths (./<folder> first, then built-in presets).

    \b
    Example:
      steeropt list concept
    """
    if kind == "concept":
        from steeropt.specs.concepts import concept_files, load_concept

        rows = []
        for name, path in sorted(concept_files().items()):
            try:
                desc = load_concept(path).description
            except SteeroptError as e:  # an unfinished concept is listed with what is wrong
                desc = f"(not usable yet: {e})"
            rows.append([name, str(path), desc])
    else:
        from steeropt.specs import list_specs

        rows = [[e.name, str(e.path), " ".join((e.description or "").split())] for e in list_specs(kind)]
    if not rows:
        out.print(f"no {kind} specs found", highlight=False)
        return
    out.print(fit_table(["name", "file", "description"], rows, wrap=(2,)))
