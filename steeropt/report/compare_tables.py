"""A comparison (report.compare) as markdown tables: the table per study, the paired differences and the
matched doses, and the steered-against-baselines table."""
from __future__ import annotations

import pandas as pd


def _fmt(v, nd=3) -> str:
    return "—" if v is None or v != v else f"{v:.{nd}f}"


def paired_markdown(paired: dict) -> str:
    """The paired differences and the matched-dose table as markdown."""
    lines = [f"Paired differences (a − b; bootstrap over the {paired['prompts']} shared prompts, "
             f"{paired['n_boot']} draws, interval widened below 20 prompts; clear = the 95% interval excludes 0 by "
             f"more than {paired.get('margin', 0.0):g}; best@τ: concept with coherency and relevance ≥ τ):", "",
             "| a | b | figure | a | b | a − b [95%] | clear at 95% |", "|---|---|---|---|---|---|---|"]
    for r in paired["pairs"]:
        if "@kl" in r["figure"]:
            continue
        ci = f" [{r['ci'][0]:.3f}, {r['ci'][1]:.3f}]" if r["ci"] else ""
        clear = "—" if r["clear"] is None else ("**yes**" if r["clear"] else "no")
        lines.append(f"| {r['a']} | {r['b']} | {r['figure']} | {_fmt(r['a_value'])} | {_fmt(r['b_value'])} | "
                     f"{_fmt(r['diff'])}{ci} | {clear} |")
    axes = [k for k in paired["matched"][0] if k not in ("study", "kl") and not k.endswith(".ci")] if paired["matched"] else []
    lines += ["", "Matched dose (fitted curves against the mean next-token KL to the unsteered model; — = outside "
              "the study's measured KL range):", "",
              "| study | KL (nats) | " + " | ".join(axes) + " |", "|---|---|" + "---|" * len(axes)]
    for r in paired["matched"]:
        cells = []
        for a in axes:
            ci = r.get(f"{a}.ci")
            cells.append(_fmt(r[a], 2) + (f" [{ci[0]:.2f}, {ci[1]:.2f}]" if ci and r[a] is not None else ""))
        lines.append(f"| {r['study']} | {r['kl']:g} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def prompted_markdown(prompted: dict, maximize: str) -> str:
    """Per study and family: the best feasible trial against the prompted and unsteered arms (paired over the
    family's trial prompts)."""
    lines = [f"Steered against the baselines ({maximize}; the best feasible trial per family; paired over its prompts):",
             "", "| study | family | trial | prompted | unsteered | trial − prompted | trial − unsteered |",
             "|---|---|---|---|---|---|---|"]

    def arm(row, name):
        v = (row.get(name) or {}).get(maximize) or {}
        return _fmt(v.get("value"))

    def diff(row, name):
        d = (row.get(f"trial_vs_{name}") or {}).get(maximize)
        if not d:
            return "—"
        return f"{d['diff']:+.2f} [{d['ci'][0]:+.2f}, {d['ci'][1]:+.2f}]" + (" clear" if d["clear"] else "")

    for study, fams in prompted.items():
        for fam, row in fams.items():
            lines.append(f"| {study} | {fam} | {row.get('best_trial') if row.get('best_trial') is not None else 'none feasible'} "
                         f"| {arm(row, 'prompted')} | {arm(row, 'unsteered')} | {diff(row, 'prompted')} | {diff(row, 'unsteered')} |")
    return "\n".join(lines)


def table_markdown(table: pd.DataFrame, taus) -> str:
    head = ["study", "controller", "trials", "front", "hypervolume [95% band]", "max KL"] + [f"best concept @ coh≥{t:g}" for t in taus]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for _, r in table.iterrows():
        hv = f"{r['hypervolume']:.3f}" + (f" [{r['hv_low']:.3f}, {r['hv_high']:.3f}]" if r.get("hv_low") is not None
                                          and r["hv_low"] == r["hv_low"] else "")
        cells = [r["study"], r["controller"], f"{r['complete']}/{r['trials']}", str(r["front_size"]), hv,
                 f"{r['max_kl']:.2f}" if r.get("max_kl") is not None and r["max_kl"] == r["max_kl"] else "-"]
        for t in taus:
            v = r.get(f"best@{t:g}")
            if v is None or v != v:
                cells.append("—")
            else:
                ci = r.get(f"best@{t:g}.ci")
                a = r.get(f"best@{t:g}.alpha")
                s = f"{v:.2f}"
                if isinstance(ci, tuple) and ci[0] is not None:
                    s += f" [{ci[0]:.2f}, {ci[1]:.2f}]"
                if a:
                    s += f" (α={a.split('=', 1)[-1]})" if a.count("=") == 1 else f" ({a})"
                cells.append(s)
        lines.append("| " + " | ".join(map(str, cells)) + " |")
    return "\n".join(lines)
