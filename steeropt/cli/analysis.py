"""CLI commands `compare`, `pick` and `generate`, registered on the steeropt app."""
from __future__ import annotations

from typing import List, Optional

import typer

from steeropt.cli._app import app, out
from steeropt.errors import SteeroptError


def _taus(text: str) -> tuple[float, ...]:
    try:
        vals = tuple(float(t) for t in text.split(",") if t.strip())
    except ValueError:
        raise SteeroptError(f"--taus must be comma-separated numbers, got '{text}'") from None
    if not vals:
        raise SteeroptError("--taus is empty")
    return vals


@app.command()
def compare(studies: List[str] = typer.Argument(..., help="two or more study names or files"),
            force: bool = typer.Option(False, help="compare even if prompts / judge / objective differ"),
            taus: str = typer.Option("0.3,0.4,0.5,0.6,0.7", help="coherency thresholds for the best-concept table"),
            out_dir: Optional[str] = typer.Option(None, "--out", help="artifact directory (default runs/compare-...)"),
            name: Optional[str] = typer.Option(None, help="name of the comparison run"),
            experiment: Optional[str] = typer.Option(None, help="MLflow experiment (default: the first study's)"),
            track: bool = typer.Option(True, help="log the comparison to MLflow")):
    """Fronts of several studies on one plot, hypervolume with a bootstrap band, best concept at coherency >= τ."""
    from rich.table import Table

    from steeropt.report.compare import compare as run_compare

    cmp = run_compare(studies, force=force, taus=_taus(taus), out_dir=out_dir, track=track, experiment=experiment,
                      name=name)
    t = Table(title="controller comparison (selection prompts; HV reference = worst end of each [0, 1] objective)")
    for col in ("study", "controller", "trials", "front", "hypervolume [95% band]", *[f"best @ coh≥{x:g}" for x in cmp.taus]):
        t.add_column(col, overflow="fold", min_width=6)
    for _, r in cmp.table.iterrows():
        hv = f"{r['hypervolume']:.3f}" + (f" [{r['hv_low']:.3f}, {r['hv_high']:.3f}]" if r["hv_low"] == r["hv_low"]
                                          and r["hv_low"] is not None else "")
        cells = []
        for x in cmp.taus:
            v = r.get(f"best@{x:g}")
            a = r.get(f"best@{x:g}.alpha") or ""
            a = f"α={a.split('=', 1)[-1]}" if a.count("=") == 1 else a
            cells.append("—" if v is None or v != v else f"{v:.2f} ({a})")
        t.add_row(r["study"], r["controller"], f"{r['complete']}/{r['trials']}", str(r["front_size"]), hv, *cells)
    out.print(t)
    for d in cmp.differences:
        out.print(f"[yellow]forced:[/] {d}")
    for d in cmp.notes:
        out.print(f"note: {d}")
    out.print(f"artifacts: {cmp.files[0].parent}/ (compare.png, compare.html, dose.png, table.md)"
              + (f"; MLflow run {cmp.run_id}" if cmp.run_id else ""))


@app.command()
def pick(study: str = typer.Argument(..., help="study name or file"),
         min_coherency: Optional[float] = typer.Option(None, help="τ: coherency the setting must keep (default: the objective's constraint)"),
         maximize: Optional[str] = typer.Option(None, help="value to maximise (default: the concept objective); e.g. hm, scalar"),
         share: float = typer.Option(0.9, help="sweet spot: settings within this share of the best"),
         held_out: bool = typer.Option(True, help="re-evaluate the chosen settings on the held-out prompts"),
         repeats: int = typer.Option(1, min=1, help="samples per held-out prompt when decoding samples"),
         family: Optional[List[str]] = typer.Option(None, help="only these families (default: all)"),
         out_dir: Optional[str] = typer.Option(None, "--out", help="profile directory (default profiles/<study>)"),
         gguf: bool = typer.Option(True, help="also write llama.cpp control vectors for add settings")):
    """Choose a setting per prompt family on the selection prompts, report it on held-out prompts, export a profile."""
    from rich.table import Table

    from steeropt.report.pick import pick as run_pick
    from steeropt.specs import build

    target = out_dir or f"profiles/{build('study', study).name}"
    res = run_pick(study, min_coherency=min_coherency, maximize=maximize, share=share, held_out=held_out,
                   repeats=repeats, out=target, gguf=gguf, families=family or None)
    t = Table(title=f"'{res.study}': maximise {res.maximize} with {res.coherency} ≥ {res.min_coherency:g} "
                    f"(chosen on selection prompts, reported on held-out prompts)")
    for col in ("family", "setting", "robust", "selection", "held-out", "unsteered held-out", f"sweet spot (≥{share:g}·best)"):
        t.add_column(col, overflow="fold")
    for r in res.table_rows():
        t.add_row(r["family"], r["setting"], "" if r["robust"] is None else ("yes" if r["robust"] else "point only"),
                  r["selection"], r["held_out"], r["unsteered"], r["sweet_spot"])
    out.print(t)
    for f, p in res.families.items():
        if p.status != "ok" and p.closest:
            out.print(f"[yellow]{f}: no deployable setting[/]; closest candidates: "
                      + "; ".join(f"trial {c['trial']} ({c['params']}) {res.maximize}={c['value']:.2f} "
                                  f"coherency={c['coherency']:.2f}" for c in p.closest))
    if res.profile:
        out.print(f"profile: {res.profile}/profile.yaml  (try: steeropt generate --profile {res.profile} "
                  f"--family {next(iter(res.families))} \"your prompt\")")


@app.command()
def generate(prompt: List[str] = typer.Argument(..., help="one or more prompts"),
             profile: str = typer.Option(..., help="profile directory (from steeropt pick)"),
             family: str = typer.Option(..., help="prompt family whose setting to apply"),
             model: Optional[str] = typer.Option(None, help="model ref (default: the profile's model)"),
             max_new_tokens: Optional[int] = typer.Option(None, min=1),
             compare_unsteered: bool = typer.Option(False, "--unsteered", help="also print the unsteered answer")):
    """Generate with a steering profile applied (and optionally without, side by side)."""
    from steeropt.engine.models import load_model
    from steeropt.report.profiles import generate as gen, load_profile

    prof = load_profile(profile)
    prof.family(family)
    lm = load_model(model or prof.model.get("name"))
    texts = gen(lm, prof, family, list(prompt), max_new_tokens=max_new_tokens)
    base = gen(lm, prof, family, list(prompt), max_new_tokens=max_new_tokens, steer=False) if compare_unsteered else None
    for i, (p, t) in enumerate(zip(prompt, texts)):
        out.print(f"[bold]prompt:[/] {p}")
        out.print(f"[bold green]steered ({family}):[/] {t.strip()}")
        if base is not None:
            out.print(f"[bold]unsteered:[/] {base[i].strip()}")
