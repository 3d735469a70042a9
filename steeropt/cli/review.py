"""`steeropt review SPEC [--n 30]`: tag the samples whose labels would teach the most, for labelling in MLflow."""
from __future__ import annotations

from typing import Optional

import typer

from steeropt.cli._app import app, console, out
from steeropt.errors import SteeroptError


@app.command()
def review(spec: str = typer.Argument(..., help="study name or file"),
           n: int = typer.Option(30, "--n", min=1, help="how many samples to tag for labelling"),
           profile: Optional[str] = typer.Option(None, help="steering profile with the chosen α (default: "
                                                 "profiles/<study> if it exists, else what `steeropt pick` chooses)"),
           runs_dir: str = typer.Option("runs", help="where the study's samples files are (runs/<study>/)")):
    """Tag the samples to label next (near the front, near the chosen α, where the scorers disagree) as MLflow
    traces, and say where and how to label them. Reads the study storage and samples; loads no model.

    \b
    Example:
      steeropt review studies/quickstart.yaml --n 30
    """
    from pathlib import Path

    import optuna
    from mlflow import MlflowClient
    from rich.table import Table

    from steeropt.runner.review import chosen_params, select
    from steeropt.tracking import (LABEL_SCALE, REVIEW_TAG, Tracker, flush_traces, log_traces, probe, review_queue,
                                   sample_traces, ui_url)
    from steeropt.specs import build

    st = build("study", spec)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        trials = optuna.load_study(study_name=st.name, storage=st.storage).get_trials(deepcopy=False)
    except KeyError:
        raise SteeroptError(f"no study '{st.name}' in {st.storage}: run it first with 'steeropt run {spec}'") from None
    probe(st.tracking_uri)  # a tracking server nobody answers at: say so now, not after MLflow's retries
    if MlflowClient(st.tracking_uri).get_experiment_by_name(st.experiment_name) is None:
        raise SteeroptError(f"no MLflow experiment '{st.experiment_name}' at {st.tracking_uri or 'sqlite:///mlflow.db'}: "
                            f"run the study with tracking on first")
    tracker = Tracker(st.tracking_uri, st.experiment_name, st.name, traces=1.0)
    tracker.attach()
    runs = Path(runs_dir) / st.name
    with console.status("choosing samples"):
        items = select(st, trials, runs, n=n, chosen=chosen_params(st, profile))
    if not items:
        raise SteeroptError(f"no samples of study '{st.name}' under {runs}/ (trial-*.jsonl): run it here or pass --runs-dir")
    logged = sample_traces(tracker)
    run_ids = tracker.trial_run_ids()
    by_number = {t.number: t for t in trials}
    ids = {}
    missing = [x for x in items if (x.trial, x.index) not in logged]
    for number in sorted({x.trial for x in missing}):  # samples outside the traced share: log them now
        todo = [x for x in missing if x.trial == number]
        for x, tid in zip(todo, log_traces(tracker, by_number[number], [x.record for x in todo], run_ids.get(number), runs)):
            ids[(x.trial, x.index)] = tid
    flush_traces()
    ids |= {k: v.trace_id for k, v in logged.items()}
    rounds = [int(v.tags[REVIEW_TAG]) for v in logged.values() if str(v.tags.get(REVIEW_TAG, "")).isdigit()]
    round_ = str(max(rounds, default=0) + 1)
    client = tracker.client
    for x in items:
        client.set_trace_tag(ids[(x.trial, x.index)], REVIEW_TAG, round_)
        client.set_trace_tag(ids[(x.trial, x.index)], "steeropt.review_reason", "; ".join(x.reasons)[:1000] or "-")

    queue = review_queue(tracker, f"steeropt review {round_}", [ids[(x.trial, x.index)] for x in items])

    table = Table(title=f"{len(items)} samples of '{st.name}' to label (review round {round_})")
    for col in ("trial", "family", "priority", "why", "steered answer"):
        table.add_column(col, overflow="fold")
    for x in items:
        table.add_row(str(x.trial), x.family, f"{x.priority:.2f}", "; ".join(x.reasons) or "-",
                      x.text.strip().replace("\n", " ")[:120])
    out.print(table)
    serve = ui_url(client.tracking_uri, tracker.experiment_id)[1]
    if serve:
        out.print(f"Start the MLflow UI:  {serve}", soft_wrap=True)
    if queue:
        url = ui_url(client.tracking_uri, tracker.experiment_id, "review-queue")[0] + f"&selectedQueueId={queue}&startReview=true"
        out.print(f"Open the review queue 'steeropt review {round_}':  {url}", soft_wrap=True)
        out.print(f"and answer its three questions (concept, coherency, relevance: {LABEL_SCALE}) for each sample, "
                  "from the prompt and the 'steered' answer ('unsteered' is there for comparison).", soft_wrap=True)
    url = ui_url(client.tracking_uri, tracker.experiment_id, "traces")[0]
    out.print(f"{'Or open' if queue else 'Open'} the traces:  {url}  filtered by  tags.`{REVIEW_TAG}` = '{round_}'",
              soft_wrap=True)
    out.print("and on each trace 'Add assessment' three times: feedback names concept, coherency (fluency) and "
              f"relevance, each {LABEL_SCALE}.", soft_wrap=True)
    objective = st.part("objective").name  # check the scorer this study used, on the model it steered
    out.print(f"Then:  steeropt judge check --from-mlflow {st.experiment_name}"
              + (f" --tracking-uri {st.tracking_uri}" if st.tracking_uri else "")
              + (f" --objective {objective}" if objective != "quickstart" else "")
              + (f" --model {st.model}" if st.model != "smollm2-135m-instruct" else ""), soft_wrap=True)
