"""Drawing a comparison (report.compare): the fronts on one plot (PNG, and HTML for the browser) and the metrics
against strength. Only drawing: every number comes from the Comparison.

matplotlib and plotly are imported inside the functions: heavy optional dependencies, needed only to draw.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from steeropt.evaluation.objectives.axes import coherency_name, concept_name
from steeropt.report.analysis import pareto_front
from steeropt.report.comparison import Comparison, alpha_axis, usable


# ---- artifacts ------------------------------------------------------------------------------------
def _attainment(points: np.ndarray, xs: np.ndarray) -> np.ndarray:
    """For maximise-maximise points [n, 2]: the best y reachable with x >= each xs (NaN if none)."""
    out = np.full(len(xs), np.nan)
    for i, x in enumerate(xs):
        ok = points[:, 0] >= x
        if ok.any():
            out[i] = points[ok, 1].max()
    return out


def plot_comparison(cmp: Comparison, png: Path, html: Path | None = None, title: str = "") -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    objectives = cmp.studies[0].objectives
    (x, dx), (y, dy) = objectives[0], objectives[1]
    sx, sy = (1 if dx == "maximize" else -1), (1 if dy == "maximize" else -1)
    fig, ax = plt.subplots(figsize=(7.5, 5.2))
    grid = np.linspace(0, 1, 201)
    for i, s in enumerate(cmp.studies):
        color = f"C{i}"
        row = cmp.table.iloc[i]
        df = usable(s.trials, objectives)
        if df.empty:
            continue
        ax.scatter(df[x], df[y], s=14, color=color, alpha=0.3)
        # band: between the attainment curves of the trials' lower and upper interval ends (both maximised)
        cols = [f"{x}.ci_low", f"{x}.ci_high", f"{y}.ci_low", f"{y}.ci_high"]
        if sx > 0 and sy > 0 and all(c in df for c in cols):
            lo = df[[cols[0], cols[2]]].astype(float).dropna().to_numpy()
            hi = df[[cols[1], cols[3]]].astype(float).dropna().to_numpy()
            if len(lo) and len(hi):
                ylo, yhi = _attainment(lo, grid), _attainment(hi, grid)
                ok = ~np.isnan(yhi)
                ax.fill_between(grid[ok], np.nan_to_num(ylo[ok], nan=0.0), yhi[ok], step="post", color=color,
                                alpha=0.12, lw=0)
        front = pareto_front(s.trials, objectives)
        hv = f"HV {row['hypervolume']:.3f}"
        if row.get("hv_low") is not None and row["hv_low"] == row["hv_low"]:
            hv += f" [{row['hv_low']:.3f}, {row['hv_high']:.3f}]"
        ax.plot(front[x], front[y], "o-", color=color, ms=5, drawstyle="steps-pre" if len(front) > 1 else "default",
                label=f"{s.label}: {hv}")
    for t in cmp.taus:
        ax.axhline(t, color="grey", lw=0.5, ls=":")
    ax.set_xlim(-0.02, 1.02)
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel(f"{x} ({dx})")
    ax.set_ylabel(f"{y} ({dy})")
    ax.set_title(title or "controller comparison")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower left")
    fig.tight_layout()
    fig.savefig(png, dpi=110)
    plt.close(fig)
    if html is not None:
        import plotly.graph_objects as go

        figp = go.Figure()
        for i, s in enumerate(cmp.studies):
            df = usable(s.trials, objectives)
            front = pareto_front(s.trials, objectives)
            row = cmp.table.iloc[i]
            text = [_hover(r) for _, r in df.iterrows()]
            figp.add_trace(go.Scatter(x=df[x], y=df[y], mode="markers", opacity=0.35, name=f"{s.name} trials",
                                      text=text, legendgroup=s.name))
            err = {}
            if f"{x}.ci_low" in front:
                err = {"error_x": dict(type="data", symmetric=False, array=(front[f"{x}.ci_high"] - front[x]).tolist(),
                                       arrayminus=(front[x] - front[f"{x}.ci_low"]).tolist()),
                       "error_y": dict(type="data", symmetric=False, array=(front[f"{y}.ci_high"] - front[y]).tolist(),
                                       arrayminus=(front[y] - front[f"{y}.ci_low"]).tolist())}
            figp.add_trace(go.Scatter(x=front[x], y=front[y], mode="lines+markers", line_shape="vh", legendgroup=s.name,
                                      name=f"{s.label} front, HV {row['hypervolume']:.3f}",
                                      text=[_hover(r) for _, r in front.iterrows()], **err))
        figp.update_layout(title=title or "controller comparison", xaxis_title=x, yaxis_title=y)
        figp.write_html(html, include_plotlyjs=True)  # embedded: the page must render offline


def _hover(row) -> str:
    keep = [k for k in row.index if k.startswith(("params.", "raw.")) or k in ("number", "value.kl")]
    return "<br>".join(f"{k}={row[k]:.3g}" if isinstance(row[k], float) else f"{k}={row[k]}" for k in keep)


def plot_dose(cmp: Comparison, png: Path) -> None:
    """Concept and coherency against α (controller units) and against the measured KL dose."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    objectives = cmp.studies[0].objectives
    metrics = [concept_name(objectives), coherency_name(objectives)]
    fig, axes = plt.subplots(2, 2, figsize=(10, 7), squeeze=False)
    for i, s in enumerate(cmp.studies):
        df = s.trials[s.trials["state"] == "COMPLETE"] if not s.trials.empty else s.trials
        if df.empty:
            continue
        alpha = alpha_axis(df)
        kl = pd.to_numeric(df["value.kl"], errors="coerce") if "value.kl" in df else pd.Series(np.nan, index=df.index)
        for r, m in enumerate(metrics):
            for c, (xs, xl) in enumerate(((alpha, "α (normalised; meaning differs per controller)"),
                                          (kl, "dose: mean next-token KL vs unsteered (nats)"))):
                ax = axes[r][c]
                order = np.argsort(xs.to_numpy())
                xv, yv = xs.to_numpy()[order], pd.to_numeric(df[m], errors="coerce").to_numpy()[order]
                ax.plot(xv, yv, "o-", color=f"C{i}", ms=4, label=s.label)
                if f"{m}.ci_low" in df:
                    lo = pd.to_numeric(df[f"{m}.ci_low"], errors="coerce").to_numpy()[order]
                    hi = pd.to_numeric(df[f"{m}.ci_high"], errors="coerce").to_numpy()[order]
                    ax.fill_between(xv, lo, hi, color=f"C{i}", alpha=0.1, lw=0)
                ax.set_xlabel(xl)
                ax.set_ylabel(m)
                ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=7)
    fig.suptitle("metrics vs strength: α per controller (left) and a common measured dose (right)")
    fig.tight_layout()
    fig.savefig(png, dpi=110)
    plt.close(fig)
