"""Pareto fronts, hypervolume curves and their plots, from a study's trials DataFrame."""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from steeropt.report.pareto import TrialPoint, hypervolume_curve, non_dominated


def _complete(df: pd.DataFrame, objectives) -> pd.DataFrame:
    names = [n for n, _ in objectives]
    if df.empty:
        return df
    ok = (df["state"] == "COMPLETE") & df[names].notna().all(axis=1)
    return df[ok]


def pareto_front(df: pd.DataFrame, objectives) -> pd.DataFrame:
    """Complete, feasible, non-dominated trials (sorted by the first objective)."""
    done = _complete(df, objectives)
    if done.empty:
        return done
    names, dirs = [n for n, _ in objectives], [d for _, d in objectives]
    feasible = [f is not False for f in done["feasible"]] if "feasible" in done else None
    idx = non_dominated(done[names].to_numpy(float), dirs, feasible)
    return done.iloc[idx].sort_values(names[0])


def hypervolume_by_trial(df: pd.DataFrame, objectives, reference) -> list[tuple[int, float]]:
    """(trial number, hypervolume of the complete, feasible trials up to it): pareto.hypervolume_curve on a
    trials DataFrame."""
    if df.empty:
        return []
    names, dirs = [n for n, _ in objectives], [d for _, d in objectives]
    ok = _complete(df, objectives).index
    feasible = df["feasible"].tolist() if "feasible" in df else [None] * len(df)
    pts = [TrialPoint(int(r["number"]), [float(r[n]) for n in names] if i in ok else None, f is not False)
           for (i, r), f in zip(df.iterrows(), feasible)]
    return hypervolume_curve(pts, ref_point=reference, directions=dirs)


def plot_fronts(fronts: dict[str, pd.DataFrame], objectives, path_png: Path, path_html: Path | None = None,
                title: str = "", all_points: dict[str, pd.DataFrame] | None = None) -> None:
    """One or several fronts on one plot (first two objectives), with CI whiskers; PNG and HTML."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x, y = objectives[0][0], objectives[1][0] if len(objectives) > 1 else objectives[0][0]
    fig, ax = plt.subplots(figsize=(6.5, 4.8))
    for i, (label, front) in enumerate(fronts.items()):
        color = f"C{i}"
        if all_points and label in all_points and not all_points[label].empty:
            pts = all_points[label]
            ax.scatter(pts[x], pts[y], s=12, color=color, alpha=0.25)
        if front.empty:
            continue
        xerr = _err(front, x)
        yerr = _err(front, y)
        ax.errorbar(front[x], front[y], xerr=xerr, yerr=yerr, fmt="o-", color=color, ms=5, capsize=2,
                    drawstyle="steps-post" if len(front) > 1 else "default", label=f"{label} ({len(front)} on front)")
    ax.set_xlabel(f"{x} ({objectives[0][1]})")
    ax.set_ylabel(f"{y} ({objectives[1][1] if len(objectives) > 1 else ''})")
    ax.set_title(title or "Pareto front")
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path_png, dpi=110)
    plt.close(fig)
    if path_html is not None:
        import plotly.graph_objects as go

        figp = go.Figure()
        for label, front in fronts.items():
            if all_points and label in all_points:
                pts = all_points[label]
                figp.add_trace(go.Scatter(x=pts[x], y=pts[y], mode="markers", opacity=0.3, name=f"{label} trials",
                                          text=[_hover(r) for _, r in pts.iterrows()]))
            figp.add_trace(go.Scatter(x=front[x], y=front[y], mode="lines+markers", name=f"{label} front",
                                      text=[_hover(r) for _, r in front.iterrows()]))
        figp.update_layout(title=title or "Pareto front", xaxis_title=x, yaxis_title=y)
        figp.write_html(path_html, include_plotlyjs="cdn")


def _err(front: pd.DataFrame, name: str):
    lo, hi = f"{name}.ci_low", f"{name}.ci_high"
    if lo not in front or front[lo].isna().any():
        return None
    return [(front[name] - front[lo]).clip(lower=0).to_numpy(float), (front[hi] - front[name]).clip(lower=0).to_numpy(float)]


def _hover(row) -> str:
    return "<br>".join(f"{k}={row[k]:.3g}" if isinstance(row[k], float) else f"{k}={row[k]}"
                       for k in row.index if k.startswith(("params.", "raw.")) or k == "number")


def write_study_artifacts(df: pd.DataFrame, objectives, out_dir: Path, *, title: str, reference) -> dict:
    """trials.csv, front.csv, front.png, front.html, hypervolume.png in out_dir."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    files = [out_dir / "trials.csv", out_dir / "front.csv"]
    df.to_csv(files[0], index=False)
    front = pareto_front(df, objectives)
    front.to_csv(files[1], index=False)
    curve = hypervolume_by_trial(df, objectives, reference)
    if len(objectives) >= 2 and not df.empty:
        plot_fronts({title: front}, objectives, out_dir / "front.png", out_dir / "front.html", title=title,
                    all_points={title: _complete(df, objectives)})
        files += [out_dir / "front.png", out_dir / "front.html"]
    if curve:
        fig, ax = plt.subplots(figsize=(5.5, 3.5))
        ax.plot([c[0] for c in curve], [c[1] for c in curve], marker=".")
        ax.set_xlabel("trial")
        ax.set_ylabel("hypervolume")
        ax.set_title(f"{title}: hypervolume vs trials")
        ax.grid(alpha=0.3)
        fig.tight_layout()
        fig.savefig(out_dir / "hypervolume.png", dpi=110)
        plt.close(fig)
        files.append(out_dir / "hypervolume.png")
    return {"files": files, "front_size": len(front), "hypervolume": curve[-1][1] if curve else 0.0}
