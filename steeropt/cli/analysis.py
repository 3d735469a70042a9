"""CLI commands `compare`, `pick` and `generate`, registered on the steeropt app."""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from steeropt.cli._app import app, out
from steeropt.cli.tables import hanging
from steeropt.errors import SteeroptError


def _taus(text: str, option: str = "--taus") -> tuple[float, ...]:
    try:
        vals = tuple(float(t) for t in text.split(",") if t.strip())
    except ValueError:
        raise SteeroptError(f"{option} must be comma-separated numbers, got '{text}'") from None
    if not vals:
        raise SteeroptError(f"{option} is empty")
    return vals


@app.command()
def compare(studies: List[str] = typer.Argument(..., help="two or more study names or files"),
            force: bool = typer.Option(False, help="compare even if prompts / judge / objective differ"),
            taus: str = typer.Option("0.3,0.4,0.5,0.6,0.7", help="coherency (and relevance) thresholds for the best-concept figures"),
            kl: str = typer.Option("0.1,0.5,1,2", help="KL doses (nats) for the matched-dose rows"),
            out_dir: Optional[str] = typer.Option(None, "--out", help="artifact directory (default runs/compare-...)"),
            name: Optional[str] = typer.Option(None, help="name of the comparison run"),
            experiment: Optional[str] = typer.Option(None, help="MLflow experiment (default: the first study's)"),
            track: bool = typer.Option(True, help="log the comparison to MLflow"),
            as_json: bool = typer.Option(False, "--json", help="print the result as JSON (nothing else on stdout)")):
    """Fronts of several studies on one plot; hypervolume, best concept at coherency >= τ, paired differences
    on the shared prompts (clear at 95% or not) and matched-dose rows.

    \b
    Example:
      steeropt compare studies/compare-add.yaml studies/compare-clamp.yaml
    """
    import json

    from rich.table import Table

    from steeropt.report.compare import compare as run_compare

    cmp = run_compare(studies, force=force, taus=_taus(taus), out_dir=out_dir, track=track, experiment=experiment,
                      name=name, kl_levels=_taus(kl, "--kl"))
    if as_json:
        print(json.dumps(cmp.to_dict(), indent=1))
        return
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
    if cmp.paired:
        p = Table(title=f"paired differences a − b (bootstrap over the {cmp.paired['prompts']} shared prompts; "
                        "clear = 95% interval excludes 0)")
        for col in ("a", "b", "figure", "a − b [95%]", "clear"):
            p.add_column(col, overflow="fold")
        for r in cmp.paired["pairs"]:
            if "@kl" in r["figure"] or r["diff"] is None:
                continue
            p.add_row(r["a"], r["b"], r["figure"], f"{r['diff']:+.3f} [{r['ci'][0]:+.3f}, {r['ci'][1]:+.3f}]",
                      "[bold]yes[/]" if r["clear"] else "no")
        out.print(p)
    for d in cmp.differences:
        out.print(f"[yellow]forced:[/] {d}")
    for d in cmp.notes:
        out.print(f"note: {d}")
    out.print(f"artifacts: {cmp.files[0].parent}/ (compare.png, dose.png, table.md, paired.csv, matched.csv)"
              + (f"; MLflow run {cmp.run_id}" if cmp.run_id else ""))


@app.command()
def pick(study: str = typer.Argument(..., help="study name or file"),
         min_coherency: Optional[float] = typer.Option(None, help="τ: coherency the setting must keep (default: the objective's constraint)"),
         maximize: Optional[str] = typer.Option(None, help="value to maximise (default: the concept objective); e.g. hm, scalar"),
         concept_target: float = typer.Option(0.5, help="sweet spot: fitted concept at least this"),
         share: float = typer.Option(0.9, help="larger spaces (no fit): sweet spot = trials within this share of the best"),
         held_out: bool = typer.Option(True, help="re-evaluate the chosen settings on the held-out prompts"),
         repeats: int = typer.Option(1, min=1, help="samples per held-out prompt when decoding samples"),
         family: Optional[List[str]] = typer.Option(None, help="only these families (default: all)"),
         out_dir: Optional[str] = typer.Option(None, "--out", help="profile directory (default profiles/<study>)"),
         gguf: bool = typer.Option(True, help="also write llama.cpp control vectors for add settings"),
         as_json: bool = typer.Option(False, "--json", help="print the result as JSON (nothing else on stdout)")):
    """Choose a setting per prompt family from the dose-response fits (selection prompts), confirm it on held-out
    prompts against the unsteered model, export a profile.

    \b
    Example:
      steeropt pick studies/quickstart.yaml --out profiles/quickstart
    """
    import json

    from steeropt.deploy.pick import pick as run_pick
    from steeropt.specs import build

    target = out_dir or f"profiles/{build('study', study).name}"
    res = run_pick(study, min_coherency=min_coherency, maximize=maximize, share=share, held_out=held_out,
                   repeats=repeats, out=target, gguf=gguf, families=family or None, concept_target=concept_target)
    if as_json:
        print(json.dumps(res.to_dict(), indent=1))
        return
    _print_pick(res)
    print_next_steps(res, build("study", study), study)


def _print_pick(res) -> None:
    """One block per family (readable at 100 columns): status, setting, sweet spot, selection / held-out /
    unsteered values, and where the prompts and curves are."""
    from rich.table import Table

    cons = " and ".join(f"{n} {op} {v:g}" for n, op, v in res.constraints)
    out.print(f"[bold]{res.study}[/]: maximise {res.maximize} with {cons}; chosen on selection prompts, "
              f"reported on held-out prompts (deployable = held-out {res.maximize} beats unsteered with "
              "non-overlapping 95% intervals and meets every constraint)", highlight=False)
    shown = [res.maximize, *(n for n, _, _ in res.constraints)]
    for f, p in res.families.items():
        ok = p.status == "ok"
        head = ("[yellow]no deployable setting[/]" if not ok else "[green]deployable[/]" if p.held_out
                else "[cyan]candidate[/] (not checked on held-out prompts: --no-held-out)")
        c = p.chosen
        setting = ", ".join(f"{k} = {v:.3g}" if isinstance(v, float) else f"{k} = {v}" for k, v in c.params.items()) if c else "—"
        out.print(f"\n[bold]{f}[/]: {head} — {setting}  (from {p.source}{', robust' if p.robust else ''})", highlight=False)
        if p.reason:
            _say("  why: ", p.reason)
        spot = p.sweet_spot or {}
        if "interval" in spot:
            if spot["interval"]:
                (a, b), ci = spot["interval"], spot.get("interval_ci")
                ends = f"; ends [{ci[0][0]:.3g}, {ci[0][1]:.3g}] and [{ci[1][0]:.3g}, {ci[1][1]:.3g}]" if ci else ""
                _say("  sweet spot: ", f"({res.maximize} ≥ {spot['target']:g}, constraints met) [{a:.3g}, {b:.3g}], "
                     f"width {spot['width']:.3g} [{spot['width_ci'][0]:.3g}, {spot['width_ci'][1]:.3g}]{ends}; "
                     f"P(empty) {spot['p_empty']:.2f}")
            else:
                _say("  sweet spot: ", f"empty (P(empty) {spot.get('p_empty', 1.0):.2f}) — {spot.get('reason', '')}")
        note = outside_note(p)
        if note:
            _say("  note: ", note)
        t = Table(show_edge=False, pad_edge=False, box=None)
        t.add_column("", no_wrap=True)
        for n in shown:
            t.add_column(n, justify="right", no_wrap=True)
        if c is not None:
            src = "selection (fresh)" if p.reevaluated else ("selection (fit)" if p.source == "fit" else "selection")
            t.add_row(src, *[_vci(c.values.get(n), c.intervals.get(n)) for n in shown])
        if p.held_out:
            t.add_row(f"held-out ({len(p.held_out_prompts)})", *[_vci(*p.held_out.get(n, (None, None))) for n in shown])
            t.add_row("unsteered held-out", *[_vci(*p.unsteered_held_out.get(n, (None, None))) for n in shown])
            for arm, vals in p.arms_held_out.items():
                t.add_row(f"{arm.replace('_', ' + ')} held-out", *[_vci(*vals.get(n, (None, None))) for n in shown])
        out.print(t)
        if p.verdict.get("versus_prompt"):
            _say("  against the prompt: ", p.verdict["versus_prompt"])
        for step in p.next_steps:
            _say("  try next: ", step)
        if p.held_out_prompts:
            _say("  held-out prompts: ", "; ".join(p.held_out_prompts[:3])
                 + (f"; … ({len(p.held_out_prompts)} in all, see pick.json)" if len(p.held_out_prompts) > 3 else ""))
    if res.profile:
        out.print(f"\nprofile: {res.profile}/profile.yaml; curves: {res.profile}/dose_fits.png; every prompt and "
                  f"value: {res.profile}/pick.json", highlight=False)


def print_next_steps(res, st, study_ref: str) -> None:
    """After the per-family "try next" lines (report.pick.next_steps): the words the most strongly steered
    samples use but no concept keyword matches (report.advice), when some family has no deployable setting."""
    import optuna

    from steeropt.report.advice import missing_keywords, study_advice

    if all(p.status == "ok" for p in res.families.values()):
        return
    params = [q for q in st.part("search_space").parameters() if q.choices is None]
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    trials = optuna.load_study(study_name=st.name, storage=st.storage).get_trials(deepcopy=False)
    words = missing_keywords(Path("runs") / st.name, list(st.concept.keywords),
                             alpha_param=params[0].name if len(params) == 1 else None, trials=trials)
    for line in study_advice(concept_name=st.concept.name, layer=None, keywords_missing=words):
        out.print()
        _say("every family, try next: ", line)


def _say(label: str, text: str) -> None:
    """An indented line of the pick report, wrapped at the terminal width under its own text."""
    out.print(hanging(label, text), highlight=False, markup=False)


def outside_note(p) -> str | None:
    """Why a family's chosen α lies outside its printed sweet spot, or None when it lies inside (or there is
    no one-α choice or no interval to compare with)."""
    spot, c = p.sweet_spot or {}, p.chosen
    if c is None or len(c.params) != 1 or not spot.get("interval"):
        return None
    x = next(iter(c.params.values()))
    if not isinstance(x, (int, float)):
        return None
    a, b = spot["interval"]
    if a - 1e-9 <= x <= b + 1e-9:
        return None
    why = ("the re-evaluation on fresh prompts replaced the fitted choice" if p.reevaluated and "reeval" in (p.source or "")
           else "the choice is the smallest α within 0.02 of the best fitted concept where the constraints hold"
           + (" with their lower 95% band (robust)" if p.robust else "") + ", which need not reach the concept target")
    return f"the chosen α {x:.3g} lies outside the sweet spot [{a:.3g}, {b:.3g}]: {why}"


def _vci(v, ci) -> str:
    if v is None:
        return "n/a"
    return f"{v:.2f}" + (f" [{ci[0]:.2f}, {ci[1]:.2f}]" if ci and ci[0] is not None else "")


@app.command()
def generate(prompt: List[str] = typer.Argument(..., help="one or more prompts"),
             profile: str = typer.Option(..., help="profile directory (from steeropt pick)"),
             family: str = typer.Option(..., help="prompt family whose setting to apply, or 'auto' (the profile's router)"),
             model: Optional[str] = typer.Option(None, help="model ref (default: the profile's model)"),
             max_new_tokens: Optional[int] = typer.Option(None, min=1, metavar="N",
                                                          help="new tokens per answer",
                                                          show_default="the profile's, the length the study scored"),
             compare_unsteered: bool = typer.Option(False, "--unsteered", help="also print the unsteered answer")):
    """Generate with a steering profile applied (and optionally without, side by side).

    \b
    Example:
      steeropt generate --profile profiles/ocean --family advice --unsteered \\
          "How do I sleep better?"
    """
    from steeropt.engine.models import load_model
    from steeropt.deploy.profiles import generate as gen, load_profile, routes

    prof = load_profile(profile)
    if family != "auto":
        prof.family(family)
    lm = load_model(model or prof.model.get("name"))
    texts = gen(lm, prof, family, list(prompt), max_new_tokens=max_new_tokens)
    base = gen(lm, prof, family, list(prompt), max_new_tokens=max_new_tokens, steer=False) if compare_unsteered else None
    fams = routes(lm, prof, list(prompt)) if family == "auto" else [family] * len(prompt)
    for i, (p, t) in enumerate(zip(prompt, texts)):
        got = fams[i] or "unsteered: no family matched"
        out.print(f"[bold]prompt:[/] {p}")
        out.print(f"[bold green]steered ({got}):[/] {t.strip()}")
        if base is not None:
            out.print(f"[bold]unsteered:[/] {base[i].strip()}")


@app.command()
def plan(study: str = typer.Argument(..., help="study name or file"),
         effect: float = typer.Option(0.15, help="the smallest score difference the study must be able to tell apart"),
         source: Optional[List[str]] = typer.Option(None, "--from", help="earlier studies (same objective) to take the spread from"),
         pilot: bool = typer.Option(False, help="measure the spread with a short pilot on the model instead"),
         as_json: bool = typer.Option(False, "--json", help="print the result as JSON")):
    """Before running: the interval widths the budget buys per decision, and a warning where it cannot separate
    differences of --effect (spread from earlier trials or a pilot).

    \b
    Example:
      steeropt plan studies/quickstart.yaml --pilot
    """
    import json

    from rich.table import Table

    from steeropt.runner.power import power_plan

    res = power_plan(study, effect=effect, sources=tuple(source or ()), pilot=pilot)
    if as_json:
        print(json.dumps(res, indent=1))
        return
    t = Table(title=f"'{res['study']}': what the budget can tell apart (spread from {res['spread_source']})")
    for col in ("decision", "axis", "samples", "sd", "95% ± (mean)", "smallest clear difference", f"≤ {effect:g}?"):
        t.add_column(col, overflow="fold")
    for r in res["rows"]:
        t.add_row(r["decision"], r["axis"], str(r["n"]), f"{r['sd']:.2f}", f"{r['half_width']:.2f}", f"{r['mde']:.2f}",
                  "yes" if r["ok"] else f"[yellow]no[/] (needs ~{r['need_n']})")
    out.print(t)
    for w in res["warnings"]:
        out.print(f"[yellow]warning:[/] {w}", highlight=False)
