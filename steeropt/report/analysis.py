"""Pareto fronts, hypervolume curves and their plots, from a study's trials DataFrame."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from steeropt.report.pareto import TrialPoint, hypervolume_curve, non_dominated


def complete_rows(df: pd.DataFrame, objectives) -> pd.DataFrame:
    names = [n for n, _ in objectives]
    if df.empty:
        return df
    ok = (df["state"] == "COMPLETE") & df[names].notna().all(axis=1)
    return df[ok]


def pareto_front(df: pd.DataFrame, objectives) -> pd.DataFrame:
    """Complete, feasible, non-dominated trials (sorted by the first objective)."""
    done = complete_rows(df, objectives)
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
    ok = complete_rows(df, objectives).index
    feasible = df["feasible"].tolist() if "feasible" in df else [None] * len(df)
    pts = [TrialPoint(int(r["number"]), [float(r[n]) for n in names] if i in ok else None, f is not False)
           for (i, r), f in zip(df.iterrows(), feasible)]
    return hypervolume_curve(pts, ref_point=reference, directions=dirs)


MARKERS = ("x", "v", "s", "D", "^", "P")  # one per constraint that made a trial infeasible
REASON_COLORS = ("firebrick", "darkorange", "purple", "saddlebrown", "olive", "teal")


@dataclass
class FrontPlot:
    """What a front plot shows, as plain data (gathered once, drawn as PNG and HTML, read by tests).

    x, y: the two objective columns plotted; groups: one entry per study label with its front, its feasible
    trials off the front and its infeasible trials by the first constraint they fail; taus: the constraint
    thresholds on the plotted axes, as (axis "x" | "y", value, text)."""

    x: str
    y: str
    x_label: str
    y_label: str
    title: str
    groups: dict = field(default_factory=dict)  # label -> {"front": df, "dominated": df, "infeasible": {why: df}}
    taus: list = field(default_factory=list)


def constraint_value(row, name: str):
    """A trial's value of a constraint's name: an objective column or a `value.<name>` column."""
    v = row.get(name, row.get(f"value.{name}"))
    return None if v is None or v != v else float(v)


def first_violation(row, constraints) -> str | None:
    """The first constraint a trial fails, as "relevance < 0.6", or None when it meets them all."""
    for name, op, tau in constraints:
        v = constraint_value(row, name)
        if v is not None and not (v >= tau if op == ">=" else v <= tau):
            return f"{name} {'<' if op == '>=' else '>'} {tau:g}"
    return None


def axis_label(name: str, direction: str) -> str:
    """"coherency (= fluency; higher is better)": a score's axis name with what it means."""
    alias = " = fluency;" if name == "coherency" else ""
    return f"{name} ({alias.strip()} {'higher' if direction == 'maximize' else 'lower'} is better)".replace("( ", "(")


def is_false(v) -> bool:
    return v is not None and v == v and not bool(v)  # False (python or numpy), not None / NaN


def front_plot_data(points: dict[str, pd.DataFrame], objectives, constraints=(), title: str = "") -> FrontPlot:
    """Gather a front plot: per label, the Pareto front, the feasible trials behind it, and the infeasible
    trials grouped by the constraint that made them so. `points`: label -> trials DataFrame (trials_frame)."""
    (x, dx), (y, dy) = objectives[0], objectives[1] if len(objectives) > 1 else objectives[0]
    plot = FrontPlot(x, y, axis_label(x, dx), axis_label(y, dy), title or "Pareto front")
    for name, op, tau in constraints:
        for axis, col in (("x", x), ("y", y)):
            if name == col:
                plot.taus.append((axis, float(tau), f"τ: {name} {op.replace('>=', '≥').replace('<=', '≤')} {tau:g} "
                                                    "(constraint; trials below it are infeasible)"))
    for label, df in points.items():
        done = complete_rows(df, objectives)
        why = {i: first_violation(r, constraints) for i, r in done.iterrows()}
        if "feasible" in done:  # the runner's own verdict; the reason from the values when they show it
            why = {i: (w or "a constraint") if is_false(done.at[i, "feasible"]) else None for i, w in why.items()}
        bad = [i for i, w in why.items() if w]
        infeasible = {w: done.loc[[i for i in bad if why[i] == w]] for w in dict.fromkeys(why[i] for i in bad)}
        ok = done.drop(index=bad)
        front = pareto_front(ok, objectives) if not ok.empty else ok
        dominated = ok.drop(index=front.index)
        plot.groups[label] = {"front": front, "dominated": dominated, "infeasible": infeasible}
    return plot


def draw_front_png(plot: FrontPlot, path: Path) -> None:
    """The front plot as a PNG: fronts with interval whiskers, trials behind them, infeasible trials marked by
    the constraint that made them so, τ lines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.2, 6.0))
    several = len(plot.groups) > 1
    for i, (label, g) in enumerate(plot.groups.items()):
        color, name = f"C{i}", f"{label}: " if several else ""
        if not g["dominated"].empty:
            ax.scatter(g["dominated"][plot.x], g["dominated"][plot.y], s=16, color=color, alpha=0.35,
                       label=f"{name}feasible trial behind the front ({len(g['dominated'])})")
        for k, (why, pts) in enumerate(g["infeasible"].items()):
            ax.scatter(pts[plot.x], pts[plot.y], s=28, color=color if several else REASON_COLORS[k % len(REASON_COLORS)], alpha=0.8,
                       marker=MARKERS[k % len(MARKERS)], label=f"{name}infeasible: {why} ({len(pts)})")
        front = g["front"]
        if not front.empty:
            ax.errorbar(front[plot.x], front[plot.y], xerr=_err(front, plot.x), yerr=_err(front, plot.y), fmt="o-",
                        color=color, ms=5, capsize=2, drawstyle="steps-post" if len(front) > 1 else "default",
                        label=f"{name}Pareto front: feasible, not beaten on both ({len(front)}; 95% intervals)")
    for axis, tau, text in plot.taus:
        line = ax.axhline if axis == "y" else ax.axvline
        line(tau, color="firebrick", lw=0.9, ls="--", label=text)
    ax.set_xlabel(plot.x_label)
    ax.set_ylabel(plot.y_label)
    ax.set_title(plot.title)
    ax.grid(alpha=0.3)
    if not any(len(g["front"]) for g in plot.groups.values()):
        ax.text(0.5, 0.97, "no feasible trial yet: no front", transform=ax.transAxes, ha="center", va="top",
                fontsize=9, color="firebrick")
    if ax.get_legend_handles_labels()[0]:  # below the axes: it never hides a point
        ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.12), ncol=2, frameon=False)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def draw_front_html(plot: FrontPlot, path: Path) -> None:
    """The same plot as an interactive HTML page that works offline (plotly.js is embedded in the file)."""
    import plotly.graph_objects as go

    figp = go.Figure()
    several = len(plot.groups) > 1
    for label, g in plot.groups.items():
        name = f"{label}: " if several else ""
        if not g["dominated"].empty:
            figp.add_trace(go.Scatter(x=g["dominated"][plot.x], y=g["dominated"][plot.y], mode="markers", opacity=0.4,
                                      name=f"{name}feasible trial behind the front",
                                      text=[_hover(r) for _, r in g["dominated"].iterrows()]))
        for why, pts in g["infeasible"].items():
            figp.add_trace(go.Scatter(x=pts[plot.x], y=pts[plot.y], mode="markers", marker={"symbol": "x", "size": 9},
                                      name=f"{name}infeasible: {why}",
                                      text=[f"infeasible: {why}<br>" + _hover(r) for _, r in pts.iterrows()]))
        figp.add_trace(go.Scatter(x=g["front"][plot.x], y=g["front"][plot.y], mode="lines+markers",
                                  name=f"{name}Pareto front", text=[_hover(r) for _, r in g["front"].iterrows()]))
    for axis, tau, text in plot.taus:
        (figp.add_hline if axis == "y" else figp.add_vline)(tau, line_dash="dash", line_color="firebrick",
                                                            annotation_text=text)
    figp.update_layout(title=plot.title, xaxis_title=plot.x_label, yaxis_title=plot.y_label)
    figp.write_html(path, include_plotlyjs=True)  # embedded: the page must render offline


def plot_fronts(fronts: dict[str, pd.DataFrame], objectives, path_png: Path, path_html: Path | None = None,
                title: str = "", all_points: dict[str, pd.DataFrame] | None = None, constraints=()) -> FrontPlot:
    """One or several studies' fronts on one plot (first two objectives); PNG and, with `path_html`, HTML.
    `all_points` (label -> trials) adds the trials behind each front and the infeasible ones; without it only
    the fronts are drawn."""
    plot = front_plot_data(all_points if all_points else fronts, objectives, constraints, title)
    draw_front_png(plot, path_png)
    if path_html is not None:
        draw_front_html(plot, path_html)
    return plot


def _err(front: pd.DataFrame, name: str):
    lo, hi = f"{name}.ci_low", f"{name}.ci_high"
    if lo not in front or front[lo].isna().any():
        return None
    return [(front[name] - front[lo]).clip(lower=0).to_numpy(float), (front[hi] - front[name]).clip(lower=0).to_numpy(float)]


def _hover(row) -> str:
    return "<br>".join(f"{k}={row[k]:.3g}" if isinstance(row[k], float) else f"{k}={row[k]}"
                       for k in row.index if k.startswith(("params.", "raw.")) or k == "number")


def write_study_artifacts(df: pd.DataFrame, objectives, out_dir: Path, *, title: str, reference,
                          constraints=()) -> dict:
    """trials.csv, front.csv, front.png, front.html, hypervolume.png in out_dir. `constraints`:
    (name, op, τ) triples, drawn as τ lines and used to say why a trial is infeasible."""
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
                    all_points={title: df}, constraints=constraints)
        files += [out_dir / "front.png", out_dir / "front.html"]
    if curve:
        fig, ax = plt.subplots(figsize=(5.5, 3.5))
        ax.plot([c[0] for c in curve], [c[1] for c in curve], marker=".")
        ax.set_xlabel("trial")
        ax.set_ylabel("hypervolume (reference: worst end of each score)")
        ax.set_title(f"{title}: hypervolume of the front vs trials")
        ax.grid(alpha=0.3)
        fig.tight_layout()
        fig.savefig(out_dir / "hypervolume.png", dpi=110)
        plt.close(fig)
        files.append(out_dir / "hypervolume.png")
    return {"files": files, "front_size": len(front), "hypervolume": curve[-1][1] if curve else 0.0}
