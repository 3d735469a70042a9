"""Terminal tables that fit the width, and the `status` report: cells never wrap mid-word; a value too long for
its column (a storage URL, a path) is elided in the middle."""
from __future__ import annotations

from steeropt.cli._app import fits_width, out

SEPARATORS = "/ :,"  # where an elided value is preferably cut (path, URL and word boundaries)


def elide(text: str, width: int) -> str:
    """`text` shortened to `width` by dropping its middle ("sqlite:////home/…/steeropt.db"), cut at separators
    when that keeps most of it."""
    text = str(text)
    if len(text) <= width:
        return text
    if width < 5:
        return text[:width]
    head, tail = width // 2, (width - 1) // 2  # one character for the "…"
    h = text[:head]
    cut = max(h.rfind(s) for s in SEPARATORS)
    if cut >= 0.6 * head:
        h = h[:cut + 1]
    t = text[len(text) - tail:]
    cut = min([i for i in (t.find(s) for s in SEPARATORS) if i >= 0], default=-1)
    if 0 <= cut <= 0.4 * tail:
        t = t[cut:]
    return f"{h}…{t}"


def fit_table(headers: list[str], rows: list[list[str]], *, width: int | None = None, title: str | None = None,
              wrap: tuple[int, ...] = ()):
    """A rich Table that fits `width` (default: the terminal). Cells never wrap mid-word: the widest columns
    are elided in the middle until it fits; columns in `wrap` (free text) wrap at spaces instead."""
    from rich.table import Table

    width = width or out.width
    lens = [max(len(str(x)) for x in col) for col in zip(headers, *rows)]
    free = [i for i in range(len(headers)) if i not in wrap]
    overhead = 3 * len(headers) + 1  # borders and padding
    budget = width - overhead - sum(min(lens[i], 24) for i in wrap)
    while sum(lens[i] for i in free) > budget and max((lens[i] for i in free), default=0) > 6:
        widest = max(free, key=lambda i: lens[i])
        lens[widest] -= 1
    table = Table(title=elide(title, width) if title else None, title_justify="left")
    for i, h in enumerate(headers):
        if i in wrap:
            table.add_column(h, overflow="ellipsis", ratio=1)  # wraps at spaces; a too-long word ends in …
        else:
            table.add_column(elide(h, lens[i]), no_wrap=True, min_width=min(lens[i], len(h)))
    for r in rows:
        table.add_row(*[str(c) if i in wrap else elide(c, lens[i]) for i, c in enumerate(r)])
    return table


def print_front(name: str, df, objectives, hv: float | None = None, labels: dict | None = None) -> None:
    """The front as a table; `labels` gives the parameters' display names (SearchSpaceSpec.labels)."""
    from steeropt.report.analysis import pareto_front

    front = pareto_front(df, objectives) if not df.empty else df
    pcols = [c for c in df.columns if c.startswith("params.")]
    rows = []
    for _, r in front.iterrows():
        cells = [str(r["number"]), *[f"{r[c]:.3g}" if isinstance(r[c], float) else str(r[c]) for c in pcols]]
        for n, _ in objectives:
            lo, hi = r.get(f"{n}.ci_low"), r.get(f"{n}.ci_high")
            cells.append(f"{r[n]:.3f}" + (f" [{lo:.2f}, {hi:.2f}]" if lo is not None and lo == lo else ""))
        rows.append(cells)
    title = (f"Pareto front of '{name}': {len(front)} of {len(df)} trials"
             + (f", hypervolume {hv:.3f}" if hv is not None else ""))
    if not rows:
        out.print(f"{title} (no complete feasible trial yet)", highlight=False)
        return
    heads = [(labels or {}).get(c[7:], c[7:]) for c in pcols]
    out.print(fit_table(["trial", *heads, *[n for n, _ in objectives]], rows, title=title))



def print_status(st, optuna_study, spec_ref: str, done: int) -> None:
    """What the trials mean (report.status): constraints, infeasible trials and why, the re-evaluation, the
    front with its hypervolume and what it is relative to, the next command."""
    from steeropt.report.status import study_status
    from steeropt.report.trials import trials_frame

    objectives = st.part("objective").directions
    df = trials_frame(optuna_study, objectives)
    s = study_status(st, optuna_study, df, spec_ref=spec_ref, done=done)
    rows = [("objective", s.objective_text()),
            ("constraints", s.constraint_text() + " (τ: a trial below any of them is infeasible)"),
            ("infeasible", s.infeasible_text())]
    if s.failed:
        rows.append(("failed", "; ".join(f"{w} ({k})" for w, k in s.failed.items())))
    rows += [("re-evaluation", s.reevaluation), ("hypervolume", s.hypervolume_text())]
    for label, text in rows:
        out.print(hanging(f"  {label:<13} ", text), highlight=False)
    print_front(st.name, df, objectives, s.hypervolume, labels=s.labels)
    if s.next_steps:
        out.print("next:", highlight=False)
        width = max(len(cmd) for cmd, _ in s.next_steps)
        for cmd, why in s.next_steps:
            out.print(hanging(f"  {cmd:<{width}}  ", why), highlight=False)


def hanging(label: str, text: str) -> str:
    """`label` + `text` wrapped at spaces to the terminal width with a hanging indent; one line off a terminal
    (a log keeps whole lines). A label too wide for the terminal puts the text on the next lines."""
    import textwrap

    if not fits_width():
        return label + text
    indent = len(label) if len(label) <= out.width // 2 else 4
    lines = textwrap.wrap(text, width=max(out.width - indent, 20), break_long_words=False,
                          break_on_hyphens=False) or [""]
    if indent < len(label):
        return label.rstrip() + "\n" + "\n".join(" " * indent + x for x in lines)
    return label + lines[0] + "".join("\n" + " " * indent + x for x in lines[1:])
