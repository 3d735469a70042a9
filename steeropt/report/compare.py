"""Compare controllers: several studies' Pareto fronts on one plot, with hypervolume and uncertainty.

    >>> from steeropt import compare
    >>> cmp = compare(["studies/compare-add.yaml", "studies/compare-clamp.yaml"])   # doctest: +SKIP
    >>> cmp.table          # one row per study: hypervolume [band], best concept at coherency >= tau
    >>> cmp.files          # compare.png / compare.html / dose.png / table.csv / table.md / comparison.json

The rules (what may be compared, the shared reference, the bands) are report.comparison's; this module loads
the studies, computes the table and the paired differences (report.paired), writes the files (compare_plots,
compare_tables) and logs one MLflow run (tracking.log_run). Nothing here loads the model.
"""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from steeropt.errors import SteeroptError
from steeropt.evaluation.objectives.axes import concept_name
from steeropt.report.analysis import pareto_front
from steeropt.report.arms import versus_arms
from steeropt.report.compare_plots import plot_comparison, plot_dose
from steeropt.report.comparison import (DEFAULT_TAUS, Comparison, ComparisonError, StudyData,  # noqa: F401  (public)
                                        alpha_axis, best_at, differences, front_hypervolume, hypervolume_band,
                                        load_study_data, reference_for)
from steeropt.report.paired import paired_comparison
from steeropt.report.pareto import unit_scores
from steeropt.tracking import log_run


def compare(refs, *, force: bool = False, taus=DEFAULT_TAUS, out_dir: str | Path | None = None,
            track: bool = True, tracking_uri: str | None = None, experiment: str | None = None,
            n_boot: int = 400, name: str | None = None, kl_levels=(0.1, 0.5, 1.0, 2.0),
            concept_target: float = 0.5, n_boot_paired: int = 200) -> Comparison:
    """Compare the fronts of several studies (spec names or files). See the module docstring."""
    refs = list(refs)
    if len(refs) < 2:
        raise SteeroptError("compare needs at least two studies")
    studies = [load_study_data(r) for r in refs]
    names = [s.name for s in studies]
    if len(set(names)) != len(names):
        raise SteeroptError(f"the same study is given twice: {names}")
    hard, soft = differences(studies)
    if hard and not force:
        raise ComparisonError("these studies are not comparable (use --force to compare anyway):\n  - "
                              + "\n  - ".join(hard))
    objectives = studies[0].objectives
    if any([n for n, _ in s.objectives] != [n for n, _ in objectives] for s in studies):
        raise ComparisonError("the studies optimise different objectives: "
                              + "; ".join(f"{s.name}: {[n for n, _ in s.objectives]}" for s in studies))
    unit = unit_scores(studies[0].objective)
    ref_pt = reference_for(objectives, unit=unit, frames=[s.trials for s in studies])  # one for all studies
    rows = []
    for s in studies:
        df = s.trials
        done = df[df["state"] == "COMPLETE"] if not df.empty else df
        band = hypervolume_band(df, objectives, ref_pt, n=n_boot, unit=unit)
        row = {"study": s.name, "controller": "+".join(s.controllers), "trials": len(df), "complete": len(done),
               "front_size": len(pareto_front(df, objectives)) if len(done) else 0,
               "hypervolume": front_hypervolume(df, objectives, ref_pt),
               "hv_low": band[0] if band else None, "hv_high": band[1] if band else None}
        if "value.kl" in df and len(done):
            row["max_kl"] = float(pd.to_numeric(done["value.kl"], errors="coerce").max())
        for tau in taus:
            b = best_at(df, objectives, tau)
            bc = best_at(df, objectives, tau, conservative=True)
            row[f"best@{tau:g}"] = b["value"] if b else None
            row[f"best@{tau:g}.ci"] = b["ci"] if b else None
            row[f"best@{tau:g}.alpha"] = _alpha_of(b)
            row[f"best_lcb@{tau:g}"] = bc["value"] if bc else None
        rows.append(row)
    table = pd.DataFrame(rows)
    cmp = Comparison(studies, table, tuple(taus), hard, soft, force)
    cmp.paired = paired_comparison(studies, taus=tuple(taus), kl_levels=tuple(kl_levels), reference=ref_pt,
                                   concept_target=concept_target, n_boot=n_boot_paired)
    maximize = concept_name(objectives)
    axes = [maximize, *(n for n, _ in objectives if n != maximize), *(c[0] for c in studies[0].constraints)]
    cmp.prompted = {s.name: versus_arms(s.arms, s.frozen, maximize, s.constraints, list(dict.fromkeys(axes)))
                    for s in studies if s.arms}
    if cmp.paired is None:
        cmp.notes.append("no paired differences: a study's trials lack per-prompt scores (run before they were "
                         "stored); the bands above are unpaired")
    label = name or "compare-" + "-vs-".join(names)
    out = Path(out_dir) if out_dir is not None else Path("runs") / label[:120]
    out.mkdir(parents=True, exist_ok=True)
    cmp.files = write_comparison_artifacts(cmp, out, title=label)
    if track:
        cmp.run_id = log_comparison(cmp, label, tracking_uri or studies[0].spec.tracking_uri,
                                    experiment or studies[0].spec.experiment_name)
    return cmp


def _alpha_of(b) -> str | None:
    if not b:
        return None
    return ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in b["params"].items())


def write_comparison_artifacts(cmp: Comparison, out: Path, title: str) -> list[Path]:
    files = [out / "compare.png", out / "compare.html", out / "dose.png", out / "table.csv", out / "table.md",
             out / "comparison.json"]
    if cmp.paired:
        pd.DataFrame(cmp.paired["pairs"]).to_csv(out / "paired.csv", index=False)
        pd.DataFrame(cmp.paired["matched"]).to_csv(out / "matched.csv", index=False)
        files += [out / "paired.csv", out / "matched.csv"]
    plot_comparison(cmp, files[0], files[1], title=title)
    plot_dose(cmp, files[2])
    cmp.table.to_csv(files[3], index=False)
    md = cmp.markdown()
    if cmp.differences:
        md += "\n\nForced comparison; the studies differ:\n" + "\n".join(f"- {d}" for d in cmp.differences)
    if cmp.notes:
        md += "\n\nNotes:\n" + "\n".join(f"- {d}" for d in cmp.notes)
    files[4].write_text(md + "\n")
    files[5].write_text(json.dumps(cmp.to_dict(), indent=2))
    return files


def log_comparison(cmp: Comparison, label: str, tracking_uri: str | None, experiment: str) -> str:
    """One MLflow run (tag steeropt.kind=comparison) with the table as metrics and the files as artifacts."""
    params = {"studies": ",".join(s.ref for s in cmp.studies), "taus": ",".join(f"{t:g}" for t in cmp.taus),
              "forced": cmp.forced, "differences": " | ".join(cmp.differences) or "none",
              "notes": " | ".join(cmp.notes) or "none"}
    metrics = {}
    for _, r in cmp.table.iterrows():
        p = r["study"]
        metrics |= {f"{p}.hypervolume": r["hypervolume"], f"{p}.hv_low": r.get("hv_low"), f"{p}.hv_high": r.get("hv_high"),
                    f"{p}.front_size": r["front_size"]}
        for t in cmp.taus:
            metrics[f"{p}.best_at_{t:g}"] = r.get(f"best@{t:g}")
            metrics[f"{p}.best_lcb_at_{t:g}"] = r.get(f"best_lcb@{t:g}")
    for r in (cmp.paired or {}).get("pairs", []):
        if r["diff"] is not None and "@kl" not in r["figure"]:
            key = f"diff.{r['a']}-{r['b']}.{r['figure']}"
            metrics |= {key: r["diff"], f"{key}.ci_low": r["ci"][0], f"{key}.ci_high": r["ci"][1]}
    metrics = {k.replace("@", "_at_"): v for k, v in metrics.items() if v is not None}
    return log_run("comparison", label, params, metrics, cmp.files, tracking_uri=tracking_uri, experiment=experiment,
                   tags={"steeropt.studies": ",".join(s.name for s in cmp.studies), "steeropt.forced": str(cmp.forced)},
                   artifact_path="comparison")
