"""`steeropt new concept|study`: your own concept and a study of it, in your folder, runnable as is."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from steeropt.cli._app import app, out, sub_app
from steeropt.errors import SteeroptError

new_app = sub_app("Write a documented concept file, or a study of a concept.")
app.add_typer(new_app, name="new")


def _ref(path: Path, name: str, folder: Path) -> str:
    """How to name a written file in a next-step hint: by name when it resolves from here, else by path."""
    return name if folder.resolve() == Path.cwd().resolve() else str(path)


@new_app.command("concept")
def concept(name: str = typer.Argument(..., help="concept name, e.g. ocean (becomes concepts/<name>.yaml)"),
            folder: Path = typer.Option(Path("."), "--dir", help="project folder (concepts/ is created in it)"),
            force: bool = typer.Option(False, help="overwrite an existing concept file")):
    """Write concepts/NAME.yaml: every field commented, TODO placeholders to replace.

    \b
    Example:
      steeropt new concept ocean
    """
    from steeropt.specs.scaffold import PAIRS, write_concept

    path = write_concept(name, folder, force=force)
    ref = _ref(path, name, folder)
    out.print(f"wrote {path}", highlight=False)
    out.print(f"next: replace its TODO lines (a description, keywords, {PAIRS} matched contrast pairs), then\n"
              f"  steeropt sweep --concept {ref}\n"
              f"  steeropt new study {name} --concept {ref} --from-sweep", highlight=False)


def _sweep_layers(text: str | None, concept, layer: int | None, model: str) -> list[int]:
    if text:
        try:
            return sorted({int(x) for x in text.split(",") if x.strip()})
        except ValueError:
            raise SteeroptError(f"--sweep-layers must be comma-separated layer numbers, got {text!r}") from None
    if layer is not None:
        return [layer]
    from steeropt.engine.models import describe

    n = describe(model).n_layers  # config / GGUF metadata only
    picks = {round(n * 0.2), round(n / 3), round(n / 2)}
    if concept.layer is not None and concept.layer < n:
        picks.add(concept.layer)
    return sorted(picks)


@new_app.command("study")
def study(name: str = typer.Argument(..., help="study name (becomes studies/<name>.yaml)"),
          concept: str = typer.Option(..., help="concept name (./concepts, then built-in) or concept YAML file"),
          controller: str = typer.Option("add", help="add | clamp | affine | ablate"),
          layer: Optional[int] = typer.Option(None, help="layer to steer (default: the concept's, else 10)"),
          alpha: Optional[str] = typer.Option(None, help="strength range LOW,HIGH (default: per controller)"),
          from_sweep: bool = typer.Option(False, "--from-sweep",
                                          help="run a short sweep first and propose the layer and α range"),
          sweep_layers: Optional[str] = typer.Option(None, help="layers --from-sweep compares (default: 3 spread "
                                                     "over the model's depth, plus the concept's)"),
          sweep_prompts: int = typer.Option(4, min=1, help="prompts per α in --from-sweep"),
          model: str = typer.Option("smollm2-135m-instruct", help="embedded name, .gguf file or HF model directory"),
          objective: str = typer.Option("quickstart", help="objective name (quickstart: calibrated cheap tier, no judge)"),
          optimizer: str = typer.Option("tpe", help="grid | random | sobol | tpe | nsga2 | botorch"),
          trials: int = typer.Option(24, min=1, help="trial budget"),
          batch_size: int = typer.Option(4, min=1, help="candidates generated together"),
          prompts_per_trial: int = typer.Option(9, min=1, help="selection prompts each candidate is scored on"),
          max_new_tokens: int = typer.Option(40, min=1, help="new tokens per answer in each trial (and in "
                                             "--from-sweep)"),
          concept_prompts: bool = typer.Option(False, "--concept-prompts",
                                               help="also a prompt family of the concept file's own prompts"),
          storage: str = typer.Option("sqlite:///steeropt.db", help="Optuna storage URL"),
          tracking_uri: str = typer.Option("sqlite:///mlflow.db", help="MLflow tracking URI"),
          folder: Path = typer.Option(Path("."), "--dir", help="project folder (studies/, search_spaces/ in it)"),
          force: bool = typer.Option(False, help="overwrite an existing study / search space of this name")):
    """Write studies/NAME.yaml (+ search_spaces/NAME.yaml, prompt families) for a concept; it runs as is.

    \b
    Example:
      steeropt new study ocean --concept ocean --from-sweep
    """
    from steeropt.specs import validate_study
    from steeropt.specs.concepts import concept_path, load_concept
    from steeropt.specs.scaffold import SWEEP_ALPHAS, StudyPlan, check_name, write_study

    check_name(name, "study")
    c = load_concept(concept)
    rng = None
    if alpha is not None:
        try:
            low, high = (float(x) for x in alpha.split(","))
        except ValueError:
            raise SteeroptError(f"--alpha must be LOW,HIGH (two numbers), got {alpha!r}") from None
        rng = (low, high)
    plan = StudyPlan(name, c, str(concept_path(concept)), controller=controller, layer=layer, alpha=rng, model=model,
                     objective=objective, optimizer=optimizer, trials=trials, batch_size=batch_size,
                     prompts_per_trial=prompts_per_trial, max_new_tokens=max_new_tokens, storage=storage,
                     tracking_uri=tracking_uri, concept_prompts=concept_prompts)
    plan.resolved()  # a bad controller or range fails before any sweep
    root = Path(folder)
    for kind in ("studies", "search_spaces"):  # fail before a sweep, not after it
        if (root / kind / f"{name}.yaml").exists() and not force:
            raise SteeroptError(f"{root / kind / f'{name}.yaml'} exists; pass --force to overwrite it")
    if from_sweep:
        from steeropt.cli.commands import run_sweeps
        from steeropt.runner.sweep import describe, propose

        layers = _sweep_layers(sweep_layers, c, layer, model)
        n = min(sweep_prompts, len(c.prompts))
        alphas = SWEEP_ALPHAS[controller]
        # at the study's own answer length: text that breaks after 30 tokens looks fine at 24
        out.print(f"sweeping layers {', '.join(map(str, layers))} x α {', '.join(f'{a:g}' for a in alphas)} on "
                  f"{n} prompts, {max_new_tokens} tokens", highlight=False)
        _, sweeps = run_sweeps(model, c, layers, alphas, controller=controller, n_prompts=n,
                               max_new_tokens=max_new_tokens)
        prop = propose(sweeps)
        for line in prop.reasons:
            out.print(line, highlight=False)
        plan.layer = prop.layer if layer is None else layer
        if alpha is None:
            plan.alpha = (prop.low, prop.high)
        plan.notes = ["--from-sweep (keyword rate vs broken samples per α; docs/concepts.md, 'How to read a sweep'):",
                      *[describe(s) for s in sweeps], prop.reasons[-1]]
    files = write_study(plan, root, force=force)
    for f in files:
        out.print(f"wrote {f}", highlight=False)
    parts = validate_study(files[0])  # proof that it runs as is: every reference resolves, no weights loaded
    ref = _ref(files[0], name, root)
    out.print(f"ok: validated {len(parts)} parts. next:\n  steeropt validate {ref}\n  steeropt run {ref}\n"
              f"  steeropt pick {ref}", highlight=False)
