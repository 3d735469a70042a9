"""Tier-1 metrics that need no model: n-gram repetition, distinct-n, keyword hits, degenerate outputs.

All functions are pure and work on one sample's generated token ids (EOS stripped, see `content_ids`)
or its text, so they are trivially batched by a loop and cost microseconds.

>>> rep_n([1, 2, 3, 1, 2, 3], 3)   # 4 trigrams, 3 unique
0.25
"""
from __future__ import annotations

import re
from collections.abc import Iterable, Sequence


def content_ids(token_ids: Sequence[int], stop_ids: Iterable[int]) -> list[int]:
    """Generated ids without the trailing EOS / pad tokens (metrics look at content only)."""
    stop = set(stop_ids)
    ids = list(token_ids)
    while ids and ids[-1] in stop:
        ids.pop()
    return ids


def _ngrams(ids: Sequence[int], n: int) -> list[tuple[int, ...]]:
    return [tuple(ids[i : i + n]) for i in range(len(ids) - n + 1)]


def rep_n(ids: Sequence[int], n: int) -> float | None:
    """1 - unique/total n-grams. None when there is no n-gram at all (fewer than n tokens)."""
    grams = _ngrams(ids, n)
    if not grams:
        return None
    return 1.0 - len(set(grams)) / len(grams)


def distinct_n(ids: Sequence[int], n: int) -> float | None:
    """unique/total n-grams (1.0 = no repeated n-gram). None when there is no n-gram."""
    grams = _ngrams(ids, n)
    if not grams:
        return None
    return len(set(grams)) / len(grams)


def tail_loop(ids: Sequence[int], max_period: int = 20, min_span: int = 12) -> int | None:
    """Period of a loop at the end of `ids`, or None.

    A loop of period p: the last `span` tokens satisfy ids[i] == ids[i - p], the pattern occurred at
    least twice (run >= p) and span = run + p >= min_span. The shortest such period is returned.
    """
    n = len(ids)
    for p in range(1, min(max_period, n // 2) + 1):
        run = 0
        i = n - 1
        while i - p >= 0 and ids[i] == ids[i - p]:
            run += 1
            i -= 1
        if run >= p and run + p >= min_span:
            return p
    return None


def degenerate_kind(
    token_ids: Sequence[int],
    text: str,
    finished: bool,
    stop_ids: Iterable[int],
    *,
    loop_max_period: int = 20,
    loop_min_span: int = 12,
) -> str | None:
    """"immediate_eos", "empty", "loop_at_limit" or None.

    `finished` is False when generation was cut at max_new_tokens; such a sample is degenerate only if it
    ends inside a loop (a long fluent answer cut at the limit is fine).
    """
    stop = set(stop_ids)
    if (token_ids and token_ids[0] in stop) or (not token_ids and finished):
        return "immediate_eos"
    if not text.strip():
        return "empty"
    if not finished and tail_loop(content_ids(token_ids, stop), loop_max_period, loop_min_span) is not None:
        return "loop_at_limit"
    return None


_REGEX_CHARS = set("?()[]{}|\\+^$")


def compile_keywords(keywords: Iterable[str]) -> list[re.Pattern]:
    """Case-insensitive patterns for the keyword-hit metric.

    - a plain keyword is a whole word or phrase: "star" matches "star" and "Star", not "start" or "stars"
      (list the forms you mean: "star", "stars"); spaces match any run of whitespace;
    - `*` is a wildcard for the rest of a word, for stems: "astronom*" matches astronomy, astronomers;
    - "re:<regex>" is used exactly as written (add \\b yourself), e.g. "re:\\bgalax(y|ies)\\b".
    A plain keyword with regex characters (?()[]{}|\\+^$) is refused: write it as "re:..." or with `*`.
    """
    out = []
    for raw in keywords:
        if raw.startswith("re:"):
            out.append(re.compile(raw[3:], re.IGNORECASE))
            continue
        kw = raw.strip()
        if not kw:
            continue
        if not re.search(r"\w", kw):
            raise ValueError(f"keyword {raw!r} has no letter or digit: it would match anything or nothing")
        bad = sorted(set(kw) & _REGEX_CHARS)
        if bad:
            raise ValueError(f"keyword {raw!r}: plain keywords are whole words; {''.join(bad)!r} would be a "
                             f"regular expression: write 're:{raw}', or a stem with * (e.g. 'astronom*')")
        words = [r"\w*".join(map(re.escape, w.split("*"))) for w in kw.split()]
        body = r"\s+".join(words)
        left = r"\b" if re.match(r"\w", kw[0]) else ""  # no \b before "*ology" or "-"
        right = r"\b" if re.match(r"\w", kw.rstrip("*")[-1:]) else ""
        out.append(re.compile(left + body + right, re.IGNORECASE))
    return out


def keyword_hits(text: str, patterns: Sequence[re.Pattern]) -> int:
    """Number of non-overlapping matches of all patterns in `text`."""
    return sum(len(p.findall(text)) for p in patterns)


def cheap_metrics(
    token_ids: Sequence[int],
    text: str,
    finished: bool,
    stop_ids: Iterable[int],
    patterns: Sequence[re.Pattern],
    *,
    loop_max_period: int = 20,
    loop_min_span: int = 12,
) -> dict:
    """All model-free tier-1 metrics of one sample (a missing metric is None, never 0)."""
    stop = set(stop_ids)
    ids = content_ids(token_ids, stop)
    kind = degenerate_kind(token_ids, text, finished, stop, loop_max_period=loop_max_period, loop_min_span=loop_min_span)
    hits = keyword_hits(text, patterns) if patterns else None
    return {
        "n_tokens": float(len(ids)),
        "rep_3": rep_n(ids, 3),
        "rep_4": rep_n(ids, 4),
        "distinct_1": distinct_n(ids, 1),
        "distinct_2": distinct_n(ids, 2),
        "keyword_hits": None if hits is None else float(hits),
        "keyword_hit": None if hits is None else float(hits > 0),
        "degenerate": float(kind is not None),
        "degenerate_kind": kind,
    }
