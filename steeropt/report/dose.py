"""Dose–response curves per prompt family: one monotone logistic per axis, fitted to the trials, with a band.

    >>> curves = family_curves(points, axes=("concept", "coherency", "relevance"))     # doctest: +SKIP
    >>> spot = sweet_spot(curves, concept="concept", target=0.5, floors={"coherency": 0.6, "relevance": 0.6})
    >>> spot["interval"], spot["interval_ci"], spot["width"], spot["p_empty"]

Data: one point per complete trial — the trial's mean of an axis over one family's prompts, at the trial's
strength x (a 1-D space's α, or the measured KL dose), weighted by the samples behind it. The trials are the
curve's data, not the answer: a lucky draw at one α moves the curve a little instead of becoming the pick.

Model: y(x) = a + (b − a) · σ(s · (x − x0)) with s ≥ 0 and a, b in [0, 1] (a wider range for a value that
leaves it, such as a KL dose), so y is monotone in x (rising
when b > a). Theory says the concept probability is sigmoid in α; fluency and relevance are flat and then
fall as the model breaks. Fitted by weighted least squares (scipy.optimize.least_squares) from several starts.

Band: a parametric bootstrap over the trials' own uncertainty. Each draw replaces every trial's value by a
draw that matches its recorded 95% interval (normal, sd = width / 3.92; a value without an interval gets the
fit's residual spread), clipped to the value's range, and refits; the band is the 2.5–97.5 percentiles of the draws'
curves at each x. The draws are kept: the sweet spot's end points get their intervals from them too.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy.optimize import least_squares
from scipy.special import expit

from steeropt.records import FamilyValues, TrialRecord

GRID = 201  # points at which curves, bands and sweet spots are evaluated
Z95 = 3.919928  # width of a normal 95% interval in standard deviations


@dataclass
class DosePoint:
    """One trial's mean of one family's samples on every axis, at strength x."""

    trial: int
    x: float
    n: int  # samples behind the means (the weight)
    values: dict  # axis -> mean
    intervals: dict = field(default_factory=dict)  # axis -> (low, high) or None


@dataclass
class Curve:
    """A fitted monotone curve with its bootstrap band, on the grid `x`."""

    axis: str
    x: np.ndarray  # [G] grid over the observed strength range
    y: np.ndarray  # [G] fitted curve
    lo: np.ndarray  # [G] band, 2.5 percentile
    hi: np.ndarray  # [G] band, 97.5 percentile
    draws: np.ndarray  # [B, G] refitted curves of the bootstrap draws
    params: tuple  # (a, b, s, x0)
    points: list  # [(x, y, n)] the data

    def at(self, x: float) -> tuple[float, float, float]:
        """(fit, band low, band high) at x, interpolated on the grid."""
        return tuple(float(np.interp(x, self.x, v)) for v in (self.y, self.lo, self.hi))

    def summary(self) -> dict:
        a, b, s, x0 = self.params
        return {"axis": self.axis, "model": "a + (b - a) * sigmoid(s * (x - x0))",
                "params": {"a": a, "b": b, "s": s, "x0": x0}, "n_points": len(self.points),
                "x_range": [float(self.x[0]), float(self.x[-1])]}


def logistic(p, x):
    a, b, s, x0 = p
    return a + (b - a) * expit(s * (x - x0))


def _jac(p, x):
    """d model / d (a, b, s, x0): analytic, so each least-squares fit takes a few milliseconds."""
    a, b, s, x0 = p
    e = expit(s * (x - x0))
    d = (b - a) * e * (1 - e)
    return np.column_stack([1 - e, e, d * (x - x0), -d * s])


def fit_logistic(x, y, w, x_range: tuple[float, float], start=None) -> np.ndarray:
    """Weighted least-squares fit of the monotone 4-parameter logistic; returns (a, b, s, x0). Several starts
    (the cost has local minima), or one given `start` (bootstrap refits start from the point fit)."""
    x, y, w = (np.asarray(v, float) for v in (x, y, w))
    lo, hi = x_range
    span = max(hi - lo, 1e-9)
    sw = np.sqrt(w / w.mean())
    y_min, y_max = min(0.0, float(y.min())), max(1.0, float(y.max()))  # scores live in [0, 1]; a dose (KL) need not
    # s is bounded so the curve can jump between two neighbouring trials but not become a step of zero width
    s_max = 200.0 / span
    bounds = ([y_min, y_min, 0.0, lo - span], [y_max, y_max, s_max, hi + span])
    y_lo, y_hi = float(y[np.argmin(x)]), float(y[np.argmax(x)])
    starts = [start] if start is not None else [
        [y_lo, y_hi, s, x0] for x0 in (lo + 0.25 * span, lo + 0.5 * span, lo + 0.75 * span)
        for s in (4.0 / span, 16.0 / span)]
    best = None
    for st in starts:
        st = np.clip(st, bounds[0], bounds[1])
        r = least_squares(lambda p: sw * (logistic(p, x) - y), st, jac=lambda p: sw[:, None] * _jac(p, x),
                          bounds=bounds, method="trf")
        if best is None or r.cost < best.cost:
            best = r
    return best.x


def fit_curve(axis: str, pts: list[DosePoint], *, n_boot: int = 200, seed: int = 0,
              x_range: tuple[float, float] | None = None) -> Curve | None:
    """The curve of one axis through the points that have a value (None with fewer than 3 such points)."""
    use = [p for p in pts if p.values.get(axis) is not None and np.isfinite(p.values[axis])]
    if len(use) < 3:
        return None
    x = np.array([p.x for p in use], float)
    y = np.array([p.values[axis] for p in use], float)
    w = np.array([max(p.n, 1) for p in use], float)
    rng_x = x_range or (float(x.min()), float(x.max()))
    params = fit_logistic(x, y, w, rng_x)
    grid = np.linspace(rng_x[0], rng_x[1], GRID)
    resid_sd = float(np.sqrt(np.average((logistic(params, x) - y) ** 2, weights=w)))
    sd = np.full(len(use), max(resid_sd, 1e-3))
    for i, p in enumerate(use):
        iv = (p.intervals or {}).get(axis)
        if iv is not None and iv[0] is not None and iv[1] is not None:
            sd[i] = max((iv[1] - iv[0]) / Z95, 1e-3)
    rng = np.random.default_rng(seed)
    draws = np.empty((n_boot, GRID))
    for k in range(n_boot):
        yk = np.clip(y + rng.standard_normal(len(y)) * sd, min(0.0, y.min()), max(1.0, y.max()))
        draws[k] = logistic(fit_logistic(x, yk, w, rng_x, start=params), grid)
    lo, hi = np.percentile(draws, [2.5, 97.5], axis=0)
    return Curve(axis, grid, logistic(params, grid), lo, hi, draws, tuple(float(v) for v in params),
                 [(float(a), float(b), int(c)) for a, b, c in zip(x, y, w)])


def family_curves(pts: list[DosePoint], axes, *, n_boot: int = 200, seed: int = 0) -> dict[str, Curve]:
    """axis -> Curve for the axes with enough points (one shared x range, so the curves line up)."""
    xs = [p.x for p in pts]
    if not xs:
        return {}
    rng_x = (float(min(xs)), float(max(xs)))
    if rng_x[1] <= rng_x[0]:
        return {}
    out = {}
    for k, axis in enumerate(axes):
        c = fit_curve(axis, pts, n_boot=n_boot, seed=seed + k, x_range=rng_x)
        if c is not None:
            out[axis] = c
    return out


def region(mask: np.ndarray, x: np.ndarray) -> tuple[float, float] | None:
    """The longest run of True in mask, as (x first, x last); None if there is none."""
    best, start, run = None, None, 0
    for i, m in enumerate(list(mask) + [False]):
        if m and start is None:
            start = i
        if not m and start is not None:
            if i - start > run:
                best, run = (start, i - 1), i - start
            start = None
    return None if best is None else (float(x[best[0]]), float(x[best[1]]))


def sweet_spot(curves: dict[str, Curve], *, concept: str, target: float, floors: dict[str, float],
               level: float = 0.95) -> dict:
    """The strength interval where the fitted concept >= target and every floor axis >= its τ.

    Returns interval (from the fitted curves, None when empty), interval_ci (each end's interval over the
    bootstrap draws that have a sweet spot), width with its interval (an empty draw counts as width 0),
    p_empty (share of draws with no sweet spot), robust (the interval where the band's lower edge meets
    every condition) and which condition empties it when it is empty."""
    need = [concept, *floors]
    missing = [a for a in need if a not in curves]
    if missing:
        return {"interval": None, "reason": f"no fitted curve for {missing} (fewer than 3 trials with a value)",
                "target": target, "floors": floors}
    x = curves[concept].x

    def mask(get) -> np.ndarray:
        m = get(concept) >= target
        for a, tau in floors.items():
            m &= get(a) >= tau
        return m

    point = region(mask(lambda a: curves[a].y), x)
    robust = region(mask(lambda a: curves[a].lo), x)
    B = curves[concept].draws.shape[0]
    ends, widths = [], []
    for k in range(B):
        r = region(mask(lambda a: curves[a].draws[k]), x)
        widths.append(0.0 if r is None else r[1] - r[0])
        if r is not None:
            ends.append(r)
    q = ((1 - level) / 2 * 100, (1 + level) / 2 * 100)
    out = {"target": target, "floors": floors, "interval": point, "robust_interval": robust,
           "width": 0.0 if point is None else point[1] - point[0],
           "width_ci": tuple(float(v) for v in np.percentile(widths, q)),
           "p_empty": 1.0 - len(ends) / B, "interval_ci": None}
    if ends:
        e = np.array(ends)
        out["interval_ci"] = (tuple(float(v) for v in np.percentile(e[:, 0], q)),
                              tuple(float(v) for v in np.percentile(e[:, 1], q)))
    if point is None:
        out["reason"] = _why_empty(curves, concept, target, floors)
    return out


def _why_empty(curves, concept, target, floors) -> str:
    c = curves[concept]
    parts = []
    if c.y.max() < target:
        parts.append(f"the fitted {concept} never reaches {target:g} (max {c.y.max():.2f} at x={c.x[c.y.argmax()]:.3g})")
    ok = c.y >= target
    for a, tau in floors.items():
        if ok.any() and curves[a].y[ok].max() < tau:
            parts.append(f"where {concept} >= {target:g} (x >= {c.x[ok][0]:.3g}) the fitted {a} is at most "
                         f"{curves[a].y[ok].max():.2f} < {tau:g}")
    if not parts:
        parts.append("no strength meets every condition at once")
    return "; ".join(parts)


PLATEAU = 0.02  # strengths whose fitted concept is this close to the best tie (the fit is already smoothed)


def fitted_choice(curves: dict[str, Curve], *, concept: str, floors: dict[str, float], dose=None) -> dict | None:
    """The strength to deploy from the fitted curves: the best fitted concept among strengths whose floor
    axes meet τ with the band's lower edge (robust) — or, if there is none, with the fitted curve — then the
    smallest intervention on the best's plateau (fitted concept within PLATEAU of it): the lowest measured KL
    dose when `dose` = (trial x, trial mean KL) is given — clamp at α = 0 ablates, so the smallest α is not the
    smallest change for every controller — else the smallest strength. The band is not the tie rule: it is
    wide at few prompts and would always tie with the unsteered end."""
    if concept not in curves or any(a not in curves for a in floors):
        return None
    c = curves[concept]
    for robust, get in ((True, lambda a: curves[a].lo), (False, lambda a: curves[a].y)):
        ok = np.ones_like(c.x, bool)
        for a, tau in floors.items():
            ok &= get(a) >= tau
        if ok.any():
            i = int(np.flatnonzero(ok)[np.argmax(c.y[ok])])
            tie = np.flatnonzero(ok & (c.y >= c.y[i] - PLATEAU))
            j = int(tie[np.argmin(_dose_on_grid(dose, c.x)[tie])] if dose is not None else tie[0])
            return {"x": float(c.x[j]), "robust": robust, "best_x": float(c.x[i]),
                    "fitted": {a: curves[a].at(float(c.x[j])) for a in curves},
                    **choice_interval(curves, concept=concept, floors=floors, dose=dose)}
    return None


def _dose_on_grid(dose, grid: np.ndarray) -> np.ndarray:
    """The trials' measured KL at each grid strength, linearly interpolated between trials (ties broken to the
    smaller strength by a tiny slope)."""
    x, kl = (np.asarray(v, float) for v in dose)
    keep = np.isfinite(x) & np.isfinite(kl)
    if not keep.any():  # no KL measured (an objective without teacher-forced passes): the smallest strength
        return grid - grid[0]
    order = np.argsort(x[keep])
    return np.interp(grid, x[keep][order], kl[keep][order]) + 1e-9 * (grid - grid[0])


def choice_interval(curves: dict[str, Curve], *, concept: str, floors: dict[str, float], level: float = 0.95,
                    dose=None) -> dict:
    """How sure the chosen strength is: the same rule (best fitted concept where every floor curve meets τ, the
    smallest strength on its plateau) applied to each bootstrap draw's curves. x_ci: the percentile interval of
    the draws' choices; p_choice: the share of draws in which some strength meets every floor."""
    c = curves[concept]
    d = _dose_on_grid(dose, c.x) if dose is not None else None
    xs = []
    for k in range(c.draws.shape[0]):
        ok = np.ones_like(c.x, bool)
        for a, tau in floors.items():
            ok &= curves[a].draws[k] >= tau
        if ok.any():
            y = c.draws[k]
            i = int(np.flatnonzero(ok)[np.argmax(y[ok])])
            tie = np.flatnonzero(ok & (y >= y[i] - PLATEAU))
            xs.append(float(c.x[tie[np.argmin(d[tie])] if d is not None else tie[0]]))
    q = ((1 - level) / 2 * 100, (1 + level) / 2 * 100)
    return {"x_ci": tuple(float(v) for v in np.percentile(xs, q)) if xs else None,
            "p_choice": len(xs) / c.draws.shape[0]}


def plot_family_curves(curves_by_family: dict[str, dict[str, Curve]], path, *, xlabel: str, floors: dict,
                       target: float | None = None, spots: dict | None = None, chosen: dict | None = None,
                       title: str = "", concept: str = "concept") -> None:
    """One panel per family: each axis's trial points, fitted curve and band; τ and target lines; the sweet
    spot shaded (or "sweet spot: empty" written, with the condition that empties it); the chosen α. Draws
    only: the curves, spots and choices are computed by the callers (fits, `sweet_spot`, pick)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    fams = list(curves_by_family)
    fig, axes = plt.subplots(1, max(len(fams), 1), figsize=(4.6 * max(len(fams), 1), 4.4), squeeze=False)
    names: list[str] = []
    for ax, fam in zip(axes[0], fams):
        for k, (name, c) in enumerate(curves_by_family[fam].items()):
            color = f"C{k}"
            names += [name] if name not in names else []
            px = [p[0] for p in c.points]
            ax.scatter(px, [p[1] for p in c.points], s=[8 + 2 * p[2] for p in c.points], color=color, alpha=0.45)
            ax.plot(c.x, c.y, color=color)
            ax.fill_between(c.x, c.lo, c.hi, color=color, alpha=0.15, lw=0)
        for tau in sorted(set(floors.values())):
            ax.axhline(tau, color="firebrick", lw=0.8, ls=":")
        if target is not None:
            ax.axhline(target, color="C0", lw=0.8, ls="--")
        spot = (spots or {}).get(fam) or {}
        if spot.get("interval"):
            ax.axvspan(*spot["interval"], color="green", alpha=0.12, lw=0)
        elif spot:
            ax.text(0.5, 0.96, "sweet spot: empty", transform=ax.transAxes, ha="center", va="top", fontsize=8,
                    color="firebrick", bbox={"facecolor": "white", "alpha": 0.8, "lw": 0})
        if (chosen or {}).get(fam) is not None:
            ax.axvline(chosen[fam], color="k", lw=1.0, ls="-.")
            ax.annotate(f"chosen α {chosen[fam]:.3g}", (chosen[fam], 0.02), xycoords=("data", "axes fraction"),
                        fontsize=7, rotation=90, ha="right", va="bottom")
        ax.set_title(fam, fontsize=10)
        ax.set_xlabel(xlabel, fontsize=8)
        ax.set_ylim(-0.02, 1.02)
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("score in [0, 1] (curve: fit with 95% band; dots: trials)", fontsize=8)
    handles = [Line2D([], [], color=f"C{k}", marker="o", ms=4, label=f"{n} = fluency" if n == "coherency" else n)
               for k, n in enumerate(names)]
    floor_text = ", ".join(f"{n} ≥ {v:g}" for n, v in floors.items())
    if floors:
        handles.append(Line2D([], [], color="firebrick", lw=0.8, ls=":", label=f"τ: {floor_text} (constraints)"))
    if target is not None:
        handles.append(Line2D([], [], color="C0", lw=0.8, ls="--", label=f"target: {concept} ≥ {target:g}"))
    handles.append(Patch(color="green", alpha=0.25, label="sweet spot: target met, constraints kept"))
    if chosen:
        handles.append(Line2D([], [], color="k", lw=1.0, ls="-.", label="chosen α"))
    fig.legend(handles=handles, loc="lower center", ncol=min(len(handles), 4), fontsize=7, frameon=False)
    fig.suptitle(title or "dose-response per family")
    fig.tight_layout(rect=(0, 0.1, 1, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)


# ---- from a study's trials -------------------------------------------------------------------------
def strength_param(space) -> str | None:
    """The one numeric parameter of a 1-D space (its α): the x of the curves. None for larger spaces, whose
    curves use the measured KL dose instead (see `trial_points`)."""
    ps = space.parameters()
    return ps[0].name if len(ps) == 1 and ps[0].choices is None else None


def trial_points(trials, family: str | None, *, x_param: str | None) -> list[DosePoint]:
    """One DosePoint per complete trial (Optuna FrozenTrials written by the runner): the family's values
    (all prompts when family is None) at x = the trial's α parameter, or its mean KL dose when x_param is None."""
    out = []
    for t in trials:
        if t.state.name != "COMPLETE":
            continue
        rec = TrialRecord.from_trial(t)
        d = rec.family(family) if family else FamilyValues(rec.values or {}, rec.intervals or {})
        if not d or not d.values:
            continue
        x = t.params.get(x_param) if x_param else d.values.get("kl")
        if x is None or not np.isfinite(x):
            continue
        n = d.n or (rec.counts or {}).get("samples") or 1
        ivs = {k: tuple(v[:2]) for k, v in (d.intervals or {}).items() if v}
        out.append(DosePoint(t.number, float(x), int(n), dict(d.values), ivs))
    return out


def study_fits(trials, space, families, axes, *, n_boot: int = 200, seed: int = 0) -> tuple[str, dict, dict]:
    """(x label, family -> axis -> Curve, family -> (trial x, trial mean KL)) for a study's complete trials."""
    x_param = strength_param(space)
    shown = space.labels().get(x_param, x_param) if x_param else None
    label = f"{shown}, normalised units" if x_param else "dose: mean next-token KL vs unsteered (nats)"
    pts = {f: trial_points(trials, f, x_param=x_param) for f in families}
    doses = {f: ([p.x for p in ps], [p.values.get("kl", np.nan) if p.values.get("kl") is not None else np.nan
                                     for p in ps]) for f, ps in pts.items()}
    return label, {f: family_curves(pts[f], axes, n_boot=n_boot, seed=seed) for f in families}, doses
